"""What `tracking._quick_start` sets aside in wandb (its launch package and pandas, ~1.4 s of every run's start) changes
nothing a run records, and wandb's own code still runs where launch or pandas is in use. Real offline runs, each in a
fresh interpreter (what is imported is the point), read back from the run file."""
import json
import textwrap
from pathlib import Path

import pytest

from conftest import run_py

RUN = textwrap.dedent("""
    import json, sys
    from fmops_nb import tracking
    with tracking.run('report', name='quick', config={{'window': 'w1'}}, packages={packages}, announce=False) as r:
        r.table('per_column', [{{'column': 'age', 'psi': 0.02}}, {{'column': 'income', 'psi': 0.31}}])
        r.summary(drifted=1)
    print(json.dumps({{'run': str(r.path), 'pandas': 'pandas' in sys.modules,
                      'launch': any(m.startswith('wandb.sdk.launch') for m in sys.modules)}}))
""")


def _last_json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_run_imports_neither_launch_nor_pandas_and_records_the_same(tmp_path):
    from fmops_nb.tracking import read_run
    out = _last_json(run_py(RUN.format(packages=False), cwd=tmp_path))
    assert out["pandas"] is False and out["launch"] is False
    rec = read_run(Path(out["run"]))
    assert rec.status == "finished" and rec.config == {"window": "w1"} and rec.summary["drifted"] == 1
    assert rec.tables["per_column"]["columns"] == ["column", "psi"]
    assert rec.tables["per_column"]["data"] == [["age", 0.02], ["income", 0.31]]
    assert not (Path(out["run"]) / "files" / "requirements.txt").exists()  # packages=False: no list of packages
    # the default still lists every installed package, as W&B does
    out = _last_json(run_py(RUN.format(packages=True), cwd=tmp_path))
    reqs = (Path(out["run"]) / "files" / "requirements.txt").read_text()
    assert any(line.startswith("numpy==") for line in reqs.splitlines()), reqs[:500]


@pytest.mark.slow
def test_inputs_a_launch_job_staged_are_still_applied(tmp_path):
    "Code that imported wandb's launch inputs (and so could stage some) gets wandb's own step at `wandb.init`."
    code = textwrap.dedent("""
        import json
        from wandb.sdk.launch.inputs.internal import StagedLaunchInputs
        applied = []
        StagedLaunchInputs.apply = lambda self, run: applied.append(run.id)  # what wandb calls to apply them
        from fmops_nb import tracking
        with tracking.run('report', name='launched', announce=False) as r: pass
        print(json.dumps({'applied': applied, 'id': r.run.id}))
    """)
    out = _last_json(run_py(code, cwd=tmp_path))
    assert out["applied"] == [out["id"]]


def test_a_data_frame_is_still_one_to_wandb(tmp_path):
    code = textwrap.dedent("""
        import json, sys
        from fmops_nb.tracking import _wandb
        wandb = _wandb()
        is_df = wandb.util.is_pandas_data_frame
        before = [is_df([1, 2]), is_df({'a': 1}), 'pandas' in sys.modules]
        import pandas as pd
        class Frame(pd.DataFrame): pass
        after = [is_df(pd.DataFrame({'a': [1]})), is_df(Frame()), is_df([1, 2]), is_df(pd.Series([1]))]
        print(json.dumps({'before': before, 'after': after, 'once': _wandb() is wandb and wandb.util.is_pandas_data_frame is is_df}))
    """)
    out = _last_json(run_py(code, cwd=tmp_path))
    assert out == {"before": [False, False, False], "after": [True, True, False, False], "once": True}


def test_the_service_port_is_looked_for_every_10_ms_and_the_run_still_starts(tmp_path):
    "wandb's poll for wandb-core's port file waits at most 10 ms between looks (0.2 s by wandb), and the run is whole."
    code = textwrap.dedent("""
        import json, time
        from wandb.sdk.lib.service import service_port_file
        waits = []
        service_port_file._SLEEP = lambda s: (waits.append(s), time.sleep(s))  # wandb's own sleep, recorded
        from fmops_nb import tracking
        with tracking.run('report', name='polled', config={'k': 1}, announce=False) as r: r.summary(done=1)
        print(json.dumps({'waits': waits, 'run': str(r.path)}))
    """)
    out = _last_json(run_py(code, cwd=tmp_path))
    from fmops_nb.tracking import read_run
    rec = read_run(Path(out["run"]))
    assert rec.status == "finished" and rec.config == {"k": 1} and rec.summary["done"] == 1
    assert all(0 <= w <= 0.01 for w in out["waits"]), out["waits"]  # each look at most 10 ms after the last
