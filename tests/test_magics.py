"""%load_ext fmops_nb in a real IPython shell: help, errors without tracebacks, quoting, symmetric unload."""
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from conftest import run_py


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    yield ip
    ip.run_line_magic("unload_ext", "fmops_nb")
    InteractiveShell.clear_instance()


def snapshot(ip):
    mm = ip.magics_manager
    return ({k: dict(v) for k, v in mm.magics.items()}, set(mm.registry), list(ip.configurables))


def test_help_lists_commands(shell):
    shell.run_line_magic("load_ext", "fmops_nb")
    res = shell.run_cell("%fmops help")
    assert res.success
    bundle, _ = shell.display_formatter.format(res.result)  # what the frontend receives as Out[n]
    assert "<code>%fmops workspace</code>" in bundle["text/html"] and "<code>%fmops config</code>" in bundle["text/html"]
    assert "workspace  Show where the workspace keeps everything" in bundle["text/plain"]
    one = shell.run_line_magic("fmops", "help workspace")
    assert "usage: %fmops workspace [--init] [path]" in one.text


def test_unknown_command_is_a_usage_error_without_traceback(shell):
    shell.run_line_magic("load_ext", "fmops_nb")
    with pytest.raises(UsageError) as e:
        shell.run_line_magic("fmops", "nosuch")
    msg = str(e.value)
    assert "Unknown %fmops command 'nosuch'" in msg
    for name in ("config", "drift", "help", "workspace"):
        assert name in msg
    assert "\n" not in msg  # one paragraph
    with capture_output() as cap:
        res = shell.run_cell("%fmops nosuch")
    assert not res.success
    assert "UsageError: Unknown %fmops command 'nosuch'" in cap.stderr
    assert "Traceback" not in cap.stderr + cap.stdout


def test_bad_argument_and_missing_path(shell, tmp_path):
    shell.run_line_magic("load_ext", "fmops_nb")
    with capture_output() as cap:
        shell.run_cell("%fmops workspace --frobnicate")
        shell.run_cell(f'%fmops workspace "{tmp_path}/does not exist"')
    assert "unrecognized arguments: --frobnicate" in cap.stderr
    assert f"No fmops workspace at {tmp_path}/does not exist" in cap.stderr
    assert "Traceback" not in cap.stderr


def test_quoted_path_with_spaces_and_return_value(shell, tmp_path):
    shell.run_line_magic("load_ext", "fmops_nb")
    target = tmp_path / "my models" / ".fmops"
    shell.run_cell(f'ws = %fmops workspace "{target}" --init')
    ws = shell.user_ns["ws"]
    assert ws.root == target and (target / "fmops.db").is_file()
    # the session now uses that workspace
    assert shell.run_line_magic("fmops", "workspace").root == target


def test_cell_magic_body_is_yaml(shell):
    shell.run_line_magic("load_ext", "fmops_nb")
    with pytest.raises(UsageError, match="takes no cell body"):
        shell.run_cell_magic("fmops", "config", "a: 1\n")
    from fmops_nb.magics import _spec
    assert _spec("base: production\nlr: 1.0e-4\nsteps: [1, 2]\n") == {"base": "production", "lr": 1e-4, "steps": [1, 2]}
    with pytest.raises(UsageError, match="not valid YAML at line 2"):
        _spec("a: 1\nb: x: y\n")


def test_config_traitlet(shell, tmp_path):
    shell.run_line_magic("load_ext", "fmops_nb")
    shell.run_line_magic("config", f"FmopsMagics.workspace = '{tmp_path}/other/.fmops'")
    assert shell.run_line_magic("fmops", "workspace").root == tmp_path / "other" / ".fmops"


def test_unload_undoes_exactly_what_load_did(shell):
    # IPython 9 resolves its own lazy magics (%load_ext, %unload_ext) on first use: use them once before the snapshot
    shell.run_line_magic("load_ext", "fmops_nb")
    shell.run_line_magic("unload_ext", "fmops_nb")
    before = snapshot(shell)
    shell.run_line_magic("load_ext", "fmops_nb")
    assert "fmops" in shell.magics_manager.magics["line"] and "fmops" in shell.magics_manager.magics["cell"]
    shell.run_line_magic("unload_ext", "fmops_nb")
    assert snapshot(shell) == before
    shell.run_line_magic("load_ext", "fmops_nb")  # loads again cleanly
    assert shell.run_line_magic("fmops", "help").rows


def test_import_and_load_ext_stay_light():
    heavy = "{'torch', 'wandb', 'papermill', 'transformers', 'nbformat'}"
    r = run_py(f"import fmops_nb, sys; assert not {heavy} & set(sys.modules), {heavy} & set(sys.modules)")
    assert r.returncode == 0, r.stderr
    r = run_py("from IPython.core.interactiveshell import InteractiveShell\n"
               "import sys\n"
               "ip = InteractiveShell.instance()\n"
               "ip.run_line_magic('load_ext', 'fmops_nb')\n"
               "ip.run_line_magic('fmops', 'help')\n"
               f"bad = {heavy} & set(sys.modules)\n"
               "assert not bad, bad\n")
    assert r.returncode == 0, r.stderr
