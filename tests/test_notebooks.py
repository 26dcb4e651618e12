"""Each module notebook in nbs/ runs as one test, so the examples beside the code count in pytest's summary."""
import atexit
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from nbdev.test import test_nb as run_nb

NBS = sorted((Path(__file__).resolve().parents[1] / "nbs").glob("*.ipynb"))


def _drop_shell():
    """nbdev runs each notebook in a fresh CaptureShell, which registers IPython's exit hook: a full `gc.collect` per
    shell when the interpreter exits (a quarter of a second each beside torch). The shell is done with: drop it."""
    sh = InteractiveShell._instance
    if type(sh).__name__ == "CaptureShell":
        atexit.unregister(sh.atexit_operations)
        sh.close()


@pytest.fixture(autouse=True)
def _notebook_temp_folders(tmp_path, monkeypatch):
    "The notebook's own temporary folders (an example workspace can take 350 MB) go under the test's: pruned."
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook_without_its_heavy_cells(nb):
    "The fast tier runs every notebook with the cells tagged `#| heavy` left out (training, kernels, subprocesses)."
    ok, secs = run_nb(nb, skip_flags=["notest", "slow", "heavy"])
    _drop_shell()
    assert ok, f"{nb.name} failed without its heavy cells; run `nbdev-test {nb}` to see the failing cell"


def test_there_are_notebooks():
    names = {p.stem for p in NBS}
    assert {"00_errors", "01_core", "02_tracking", "90_magics", "95_cli", "index"} <= names


TEMPLATES = sorted((Path(__file__).resolve().parents[1] / "templates").glob("*.ipynb"))


def test_templates_are_clean_and_declare_typed_parameters():
    "Templates ship without outputs and each declares its parameters (validated before papermill runs it)."
    import nbformat
    from fmops_nb.reports import schema
    assert {p.stem for p in TEMPLATES} == {"maintenance_report", "drift_report", "version_diff", "finetune_report",
                                              "compliance_report", "llm_report"}
    for p in TEMPLATES:
        nb = nbformat.read(str(p), as_version=4)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), p.name
        assert nb.metadata["kernelspec"]["name"] == "python3"
        assert schema(p), f"{p.name} declares no parameters"
