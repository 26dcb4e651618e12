"""Each module notebook in nbs/ runs as one test, so the examples beside the code count in pytest's summary."""
from pathlib import Path
import pytest
from nbdev.test import test_nb as run_nb

NBS = sorted((Path(__file__).resolve().parents[1] / "nbs").glob("*.ipynb"))


@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb):
    ok, secs = run_nb(nb, skip_flags=["notest", "slow"])
    assert ok, f"{nb.name} failed; run `nbdev-test {nb}` to see the failing cell"


def test_there_are_notebooks():
    names = {p.stem for p in NBS}
    assert {"00_errors", "01_core", "02_tracking", "90_magics", "95_cli", "index"} <= names
