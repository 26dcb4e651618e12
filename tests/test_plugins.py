"""Third-party plug-ins found through entry points: a distribution installed on `sys.path` registers a PII recogniser,
and fmops_nb finds it by reading only the distributions that declare the group (as `importlib.metadata` would)."""
import re
import zipfile
from importlib.metadata import distributions, entry_points

import pytest

import fmops_nb.core as core
from fmops_nb.core import PluginRegistry, declaring_distributions, group_entry_points
from fmops_nb.errors import FmopsWarning, PluginError


def install_plugin(folder, module="acme_pii", group="fmops_nb.pii", value=None, broken=False):
    "A distribution as pip leaves it in site-packages: the module and a `.dist-info` with its entry points."
    (folder / f"{module}.py").write_text(
        "raise RuntimeError('half-installed')\n" if broken else
        "import re\nfrom fmops_nb.pii import Recognizer\n"
        "BADGE = Recognizer('badge', re.compile(r'\\bBADGE-\\d{6}\\b'), priority=5)\n")
    info = folder / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[console_scripts]\nacme = {module}:main\n\n"
                                           f"[{group}]\nbadge = {value or module + ':BADGE'}\n")
    return info


@pytest.fixture
def fresh_discovery(monkeypatch):
    "The process-wide scan forgotten before and after the test (the test changes `sys.path`)."
    declaring_distributions.cache_clear()
    yield
    declaring_distributions.cache_clear()


def test_a_plugin_on_sys_path_is_found_loaded_and_used(tmp_path, monkeypatch, fresh_discovery):
    install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    recognizers = PluginRegistry("PII recognizer", "fmops_nb.pii") # as fmops_nb.pii makes it, before its first use
    assert "badge" in recognizers.names() and "badge" in recognizers
    badge = recognizers.get("badge")
    assert badge.kind == "badge" and badge.pattern.search("my BADGE-123456 please")
    # the real registry finds it too, and a scan reports it
    from fmops_nb import pii
    monkeypatch.setattr(pii.RECOGNIZERS, "_eps", None)
    assert [f.kind for f in pii.scan("my BADGE-123456 please")] == ["badge"]
    assert pii.redact("call BADGE-654321") == "call [BADGE]"


def test_the_quick_scan_finds_what_importlib_metadata_finds(tmp_path, monkeypatch, fresh_discovery):
    install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    where = declaring_distributions()
    assert where is not None and str(tmp_path / "acme_pii-1.0.dist-info") in where["fmops_nb.pii"]
    groups = {ep.group for d in distributions() for ep in d.entry_points}
    assert groups <= set(where) # every group any installed distribution declares
    for group in ["fmops_nb.pii", "fmops_nb.tasks", "console_scripts", "pytest11"]:
        want = {ep.name: ep.value for ep in entry_points(group=group)}
        assert {k: ep.value for k, ep in group_entry_points(group).items()} == want, group
    assert group_entry_points("no.such.group") == {}


def test_an_archive_on_sys_path_falls_back_to_importlib(tmp_path, monkeypatch, fresh_discovery):
    "A zip on `sys.path` can hold distributions only `importlib.metadata` looks into: then every group is read in full."
    z = tmp_path / "plugins.zip"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("zipped_pii.py", "import re\nfrom fmops_nb.pii import Recognizer\n"
                                    "BADGE = Recognizer('zbadge', re.compile(r'Z-\\d{4}'))\n")
        f.writestr("zipped_pii-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped_pii\nVersion: 1.0\n")
        f.writestr("zipped_pii-1.0.dist-info/entry_points.txt", "[fmops_nb.pii]\nzbadge = zipped_pii:BADGE\n")
    monkeypatch.syspath_prepend(str(z))
    assert declaring_distributions() is None
    recognizers = PluginRegistry("PII recognizer", "fmops_nb.pii")
    assert recognizers.get("zbadge").pattern.search("Z-1234")


def test_a_plugin_that_fails_to_load_is_named_with_the_fix(tmp_path, monkeypatch, fresh_discovery):
    install_plugin(tmp_path, module="broken_pii", broken=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    recognizers = PluginRegistry("PII recognizer", "fmops_nb.pii")
    with pytest.raises(PluginError, match=re.escape("broken_pii:BADGE") + ".*Reinstall the package"):
        recognizers.get("badge")


def test_version_is_the_running_codes_without_reading_the_metadata(monkeypatch):
    "Every drift report records the version: reading it must not walk sys.path (8 ms on a first check)."
    import importlib.metadata
    import fmops_nb
    def walk(name): raise AssertionError("version() read the installed metadata")
    monkeypatch.setattr(importlib.metadata, "version", walk)
    assert core.version() == fmops_nb.__version__


def test_a_broken_distribution_is_skipped_with_a_warning_naming_it(tmp_path, monkeypatch, fresh_discovery):
    "An entry_points.txt that is not UTF-8 (a damaged install) must not stop every drift check that scans for PII."
    info = install_plugin(tmp_path)
    (info / "entry_points.txt").write_bytes(b"# \xff\xfe damaged\n[fmops_nb.pii]\nbadge = acme_pii:BADGE\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recognizers = PluginRegistry("PII recognizer", "fmops_nb.pii")
    with pytest.warns(FmopsWarning, match=re.escape(str(info)) + ".*Reinstall that package"):
        names = recognizers.names()
    assert "badge" not in names
