"""fmops_nb.tracking against real offline W&B runs, read back from the run file."""
import os
import textwrap
from pathlib import Path

import pytest

from conftest import run_py

SCRIPT = textwrap.dedent("""
    import numpy as np
    from pathlib import Path
    from fmops_nb import tracking
    from fmops_nb.core import Workspace
    ws = Workspace.open()
    f = Path('report.html'); f.write_text('<h1>drift report</h1>')
    with tracking.run('report', name='nightly', config={'window': '2026-11-01', 'threshold': 0.1}, tags=['t1']) as r:
        for i, v in enumerate([0.3, 0.2, 0.1]):
            r.log(step=i, psi=v, rows=1000 * (i + 1))
        r.table('per_column', [{'column': 'age', 'psi': 0.02, 'drifted': False},
                               {'column': 'income', 'psi': 0.31, 'drifted': True}])
        r.artifact('drift-report', [f], type='report', aliases=['nightly'], metadata={'columns': 2})
        r.alert('Drift on income', 'PSI 0.31 > 0.2: review the income pipeline', level='ERROR')
        r.summary(dataset_drift=True, drifted_columns=np.int64(1))
    print('RUN', r.path)
""")


@pytest.mark.slow
def test_log_and_read_back_offline_without_touching_home(tmp_path, isolated_workspace):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR", "WANDB_MODE"):
        env[var] = ""  # unset: fmops must choose offline and put every directory inside the workspace
    proc = run_py(SCRIPT, env_extra=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(proc.stdout.split("RUN ")[1].split()[0])
    assert run_dir.parent == isolated_workspace / "wandb"
    assert f"upload it with: wandb sync {run_dir}" in proc.stdout

    from fmops_nb.tracking import read_run, find_runs
    rec = read_run(run_dir)
    assert rec.status == "finished" and rec.exit_code == 0
    assert (rec.job_type, rec.name, rec.tags) == ("report", "nightly", ["t1"])
    assert rec.config == {"window": "2026-11-01", "threshold": 0.1}
    assert [(h["_step"], h["psi"], h["rows"]) for h in rec.history if "psi" in h] == [(0, 0.3, 1000), (1, 0.2, 2000), (2, 0.1, 3000)]
    assert rec.tables["per_column"]["columns"] == ["column", "psi", "drifted"]
    assert rec.tables["per_column"]["data"] == [["age", 0.02, False], ["income", 0.31, True]]
    (art,) = rec.artifacts
    assert (art["name"], art["type"], sorted(art["aliases"]), art["metadata"]) == ("drift-report", "report", ["latest", "nightly"], {"columns": 2})
    assert [f["path"] for f in art["files"]] == ["report.html"]
    assert rec.alerts == [{"title": "Drift on income", "text": "PSI 0.31 > 0.2: review the income pipeline", "level": "ERROR"}]
    assert rec.summary["dataset_drift"] is True and rec.summary["drifted_columns"] == 1
    assert find_runs() == [run_dir]
    # nothing under $HOME
    assert list(home.rglob("*")) == []


@pytest.mark.slow
def test_killed_run_reads_back_as_unfinished(tmp_path):
    from fmops_nb import tracking
    with tracking.run("example", announce=False) as r:
        r.log(loss=1.0)
    f = next(r.path.glob("run-*.wandb"))
    full = tracking.read_run(f)
    assert full.status == "finished"
    # a writer killed mid-run leaves a file without the exit record, possibly with a torn last chunk
    data = f.read_bytes()
    cut = tmp_path / "torn" / f.name
    cut.parent.mkdir()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    torn = tracking.read_run(cut.parent)
    assert torn.status == "unfinished" and torn.exit_code is None
    assert torn.id == full.id and torn.config == full.config


def test_failed_block_marks_run_failed_and_reraises():
    from fmops_nb import tracking
    with pytest.raises(ZeroDivisionError):
        with tracking.run("example", announce=False) as r:
            1 / 0
    assert tracking.read_run(r.path).exit_code == 1


def test_bad_inputs_are_clear_errors(tmp_path):
    from fmops_nb import tracking
    from fmops_nb.errors import TrackingError, ValidationError
    with pytest.raises(TrackingError, match="No run-\\*.wandb file"):
        tracking.read_run(tmp_path)
    (tmp_path / "x.wandb").write_bytes(b"not a run")
    with pytest.raises(TrackingError, match="not a W&B run file"):
        tracking.read_run(tmp_path / "x.wandb")
    with tracking.run("example", announce=False) as r:
        with pytest.raises(ValidationError, match="does not exist"):
            r.artifact("missing", tmp_path / "nope.txt")
        with pytest.raises(ValidationError, match="use INFO, WARN or ERROR"):
            r.alert("t", "x", level="LOUD")
