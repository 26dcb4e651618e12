import pytest
"""The `fmops` console command, run as a user runs it."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

FMOPS = [shutil.which("fmops") or "fmops"]  # the console script `pip install` puts on PATH


def fmops(*args, cwd=None):
    return subprocess.run([*FMOPS, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_help_and_version():
    r = fmops("--help")
    assert r.returncode == 0 and "workspace" in r.stdout and "demo" in r.stdout
    import fmops_nb
    r = fmops("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"fmops_nb {fmops_nb.__version__}"


@pytest.mark.slow
def test_workspace_prints_where_everything_lives(tmp_path, isolated_workspace):
    r = fmops("workspace", "--json", cwd=tmp_path)
    d = json.loads(r.stdout)
    assert d["workspace"] == str(isolated_workspace) and d["chosen_by"] == "FMOPS_HOME" and d["exists"] is False
    r = fmops("-w", str(tmp_path / "explicit"), "workspace", "--init")
    assert r.returncode == 0
    assert f"database   {tmp_path / 'explicit' / 'fmops.db'}" in r.stdout
    assert (tmp_path / "explicit" / "fmops.db").is_file()


@pytest.mark.slow
def test_user_error_is_one_line_and_exit_1(tmp_path):
    ws = tmp_path / "ws"
    assert fmops("-w", str(ws), "workspace", "--init").returncode == 0
    (ws / "config.toml").write_text("[wandb]\nmdoe = 'online'\n")
    r = fmops("-w", str(ws), "config")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("fmops: error: Unknown setting 'wandb.mdoe'")
    r = fmops("nosuch")
    assert r.returncode == 2 and "invalid choice: 'nosuch'" in r.stderr


@pytest.mark.slow
def test_demo_runs_the_maintenance_report_on_the_foundation_model_and_rolls_back_the_worse_release(tmp_path):
    "The README's first command: all-MiniLM-L6-v2 under a ticket classifier, its text drifting, v2 rolled back."
    r = fmops("demo", "--dir", str(tmp_path / "demo"), "--rows", "1000")
    assert r.returncode == 0, r.stderr
    assert "all-MiniLM-L6-v2 under a ticket classifier" in r.stdout
    assert "maintenance report  finished" in r.stdout and "tickets:production  is tickets:v1" in r.stdout
    assert "policy fired        rollback-on-drop: rolled tickets:production back from tickets:v2 to tickets:v1" in r.stdout
    again = fmops("demo", "--dir", str(tmp_path / "demo"))
    assert again.returncode == 1 and "already holds an fmops demo" in again.stderr
    res = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert res["kind"] == "text"
    from fmops_nb.tracking import read_run
    rec = read_run(res["wandb_run"])
    assert rec.status == "finished" and rec.job_type == "maintenance_report" and rec.summary["dataset_drift"] is True
    assert [a["name"] for a in rec.artifacts if a["type"] == "report"] == ["report-maintenance_report"]
    t = rec.tables["drift"]
    rows = {row[t["columns"].index("column")]: dict(zip(t["columns"], row)) for row in t["data"]}
    assert rows["text"]["kind"] == "text" and rows["text"]["status"] == "drift" # the new release's phrases
    assert rows["channel"]["kind"] == "categorical" and rows["channel"]["status"] == "drift"
    # the version diff the report shows: a head-only fine-tune, the six encoder layers untouched
    values = json.loads(next((tmp_path / "demo" / ".fmops" / "reports").rglob("values.json")).read_text())
    changed = {m["module"] for m in values["diff_modules"] if m["changed"]}
    assert changed == {"head"} and any(m["module"].startswith("encoder.encoder.layer.5") for m in values["diff_modules"])
    live = values["live"]
    assert live["previous"]["accuracy"] > live["production"]["accuracy"] + 0.1 # v1 beats v2 on today's tickets
    worst = max((r for r in values["slices_worse"] if r["metric"] == "accuracy"), key=lambda r: r["drop"])
    assert worst["segment"] == "mobile" and worst["drop"] > 0.3 # the old taxonomy's mark, by channel
    assert Path(res["wandb_run"]).is_dir() and f"W&B run             {res['wandb_run']}" in r.stdout


@pytest.mark.slow
def test_the_tabular_demo_and_the_two_flags_together(tmp_path):
    "`fmops demo --tabular` still runs the small tabular classifier; --tabular with --llm is refused before anything is written."
    r = fmops("demo", "--tabular", "--llm", "--dir", str(tmp_path / "both"))
    assert r.returncode == 1 and "Pass --llm or --tabular, not both" in r.stderr and not (tmp_path / "both").exists()
    r = fmops("demo", "--tabular", "--dir", str(tmp_path / "demo"), "--rows", "2000", "--no-wandb")
    assert r.returncode == 0, r.stderr
    assert "small tabular ticket classifier" in r.stdout and "tickets:production  is tickets:v1" in r.stdout
    assert "W&B run             not logged (--no-wandb)" in r.stdout and "upload it with" not in r.stdout
