"""Shared fixtures: every test gets its own workspace and W&B folders; nothing is written under $HOME."""
import json, os, sys, subprocess, tempfile
from dataclasses import dataclass
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Built models (the small generative model) go to one folder per test session, shared with the subprocesses the tests
# start; set FMOPS_CACHE yourself to reuse a build across sessions.
_OWN_CACHE = None if os.environ.get("FMOPS_CACHE") else tempfile.mkdtemp(prefix="fmops-test-cache-")
os.environ.setdefault("FMOPS_CACHE", _OWN_CACHE or "")


def pytest_unconfigure(config):
    """The session's model cache goes when the session ends (one set by the caller stays). Under pytest-xdist the
    workers inherit the controller's FMOPS_CACHE, share it (a build takes a lock) and leave it to the controller."""
    if _OWN_CACHE:
        import shutil
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_workspace(tmp_path, monkeypatch):
    "Point FMOPS_HOME and every WANDB_*_DIR at the test's temp folder."
    ws = tmp_path / ".fmops"
    monkeypatch.setenv("FMOPS_HOME", str(ws))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    for var, sub in [("WANDB_DIR", ""), ("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_CONFIG_DIR", "config"), ("WANDB_ARTIFACT_DIR", "artifacts")]:
        monkeypatch.setenv(var, str(tmp_path / "wandb-env" / sub))
    monkeypatch.chdir(tmp_path)
    return ws


@pytest.fixture(scope="session", autouse=True)
def _teardown_wandb():
    "wandb's helper process lives until teardown: end it once the session is done."
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


@dataclass
class DocsSite:
    out: Path  # the built site
    result: subprocess.CompletedProcess  # of `docs/build.py --out ... --check-links --keep-going --record ...`
    record: dict  # notebook file name -> {"seconds", "error"}: every notebook the build executed


@pytest.fixture(scope="session")
def docs_site(tmp_path_factory):
    """The docs site built as CI builds it, every notebook executed with its heavy cells: once per session, for the
    site's tests and for each notebook's own test (which used to run every notebook a second time)."""
    tmp = tmp_path_factory.mktemp("docs")
    env = {**os.environ, "FMOPS_HOME": str(tmp / ".fmops"), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_CONSOLE": "off"}
    for var, sub in [("WANDB_DIR", ""), ("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_CONFIG_DIR", "config"), ("WANDB_ARTIFACT_DIR", "artifacts")]:
        env[var] = str(tmp / "wandb-env" / sub)
    out, record = tmp / "site", tmp / "record.json"
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), "--out", str(out), "--check-links",
                        "--keep-going", "--record", str(record)],
                       capture_output=True, text=True, env=env, cwd=tmp, timeout=1800)
    ran = json.loads(record.read_text()) if record.exists() else {}
    return DocsSite(out, r, {v["notebook"]: v for v in ran.values()})


def run_py(code: str, env_extra: dict | None = None, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter of this environment; return the completed process."
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


HOSTILE_INPUTS = []  # (test id, what was tried): filled by `hostile()`, counted in the terminal summary


@pytest.fixture
def hostile(request):
    """Call `hostile('what is tried')` once per hostile input a test feeds; the run's summary counts them (kept with
    the test's report, so that an xdist worker's reach the controller)."""
    def note(what: str):
        request.node.user_properties.append(("hostile", what))
    return note


def pytest_runtest_logreport(report):
    if report.when == "teardown":
        HOSTILE_INPUTS.extend((report.nodeid, v) for k, v in report.user_properties if k == "hostile")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if HOSTILE_INPUTS:
        tests = {t for t, _ in HOSTILE_INPUTS}
        terminalreporter.write_sep("-", f"hostile inputs tried: {len(HOSTILE_INPUTS)} in {len(tests)} tests")


def recording_template(folder: Path, name: str, parameter: str, value) -> Path:
    """A report template `folder/templates/<name>.ipynb` whose `parameters` cell sets `parameter` (a float, default
    `value`) and whose next cell records it: the smallest report a policy can read a value from."""
    import nbformat
    (folder / "templates").mkdir(exist_ok=True)
    params = nbformat.v4.new_code_cell(f"{parameter}: float = {value}")
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(
        f"from fmops_nb.reports import record\nrecord('{parameter}', {parameter})")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "templates" / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path
