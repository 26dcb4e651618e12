"""Maintenance reports end to end: every template through real papermill, the W&B run of a report read back,
the automatic rollback, reruns, failures, timeouts, retries, schedules and the webhook sink."""
import json, os, signal, subprocess, sys, textwrap, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import nbformat
import pytest

from fmops_nb.core import Workspace
from fmops_nb.demo import prepare_demo, demo_params
from fmops_nb.registry import Registry
from fmops_nb.audit import audit_log
from fmops_nb.reports import run_report, get_report, report_runs, rerun, read_values
from fmops_nb.tracking import read_run, find_runs
from tiny import TRAIN_SCRIPT

pytestmark = pytest.mark.slow  # papermill kernels and subprocesses: the full tier only

ROOT = Path(__file__).resolve().parents[1]


def fmops(*args, cwd=None, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "fmops_nb.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def demo(tmp_path):
    "A demo workspace before its report: data, policies, tickets:v1, and the worse tickets:v2 promoted to production."
    ws, refp, prodp = prepare_demo(tmp_path / "demo", n=1500, log=False)
    return ws, refp, prodp


def template(path: Path, params: str, *cells: str) -> Path:
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[p, *[nbformat.v4.new_code_cell(c) for c in cells]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_promoting_a_worse_version_is_rolled_back_by_the_report_with_its_wandb_run(demo):
    ws, refp, prodp = demo
    reg = Registry(ws, log=False)
    assert reg.get("tickets:production").id == "tickets:v2"
    args = [a for k, v in demo_params(refp, prodp).items() for a in ("-p", k, str(v))]
    r = fmops("-w", str(ws.root), "report", "run", "maintenance_report", *args, cwd=ws.root.parent)
    assert r.returncode == 0, r.stderr
    # the alias is back on the previous version, and the audit log says which policy moved it
    assert reg.get("tickets:production").id == "tickets:v1"
    last = audit_log(ws, "tickets:production")[0]
    assert last["action"] == "rollback" and last["before"]["version"] == "tickets:v2" and last["after"]["version"] == "tickets:v1"
    assert last["after"]["reason"].startswith("policy rollback-on-drop: live.production.accuracy < 0.95 * live.previous.accuracy")
    run = get_report("maintenance_report", ws)
    v = run.values
    assert run.status == "finished" and v["dataset_drift"] and "channel" in v["drifted_columns"]
    assert v["live"]["production"]["version"] == "tickets:v2" and v["live"]["previous"]["version"] == "tickets:v1"
    assert v["live"]["production"]["accuracy"] < 0.95 * v["live"]["previous"]["accuracy"]
    fired = {f["policy"]: f for f in v["policy_firings"] if f["state"] == "fired"}
    assert fired["rollback-on-drop"]["outcome"] == "rolled tickets:production back from tickets:v2 to tickets:v1"
    # the report as one W&B run: job type = template, config = parameters, summary = recorded scalars, tables, artifact, alerts
    rec = read_run(run.wandb_run)
    assert rec.status == "finished" and rec.job_type == "maintenance_report"
    assert rec.config["model"] == "tickets" and rec.config["label_column"] == "label"
    assert rec.summary["dataset_drift"] is True and rec.summary["n_drifted"] == v["n_drifted"]
    assert rec.summary["live.production.accuracy"] == pytest.approx(v["live"]["production"]["accuracy"])
    assert {"drift", "versions", "policy_firings"} <= set(rec.tables)
    assert [r[0] for r in rec.tables["drift"]["data"]] == [c["column"] for c in v["drift"]]
    art = next(a for a in rec.artifacts if a["type"] == "report")
    assert art["name"] == "report-maintenance_report" and {"output.ipynb", "report.html", "values.json", "record.json"} <= {f["path"] for f in art["files"]}
    assert any(a["title"] == "policy rollback-on-drop" for a in rec.alerts)
    # the HTML is static: PNG charts and tables, no scripts, no external URLs
    page = run.html.read_text()
    assert "data:image/png;base64," in page and "<table" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_dry_run_shows_what_would_fire_and_changes_nothing(demo):
    ws, refp, prodp = demo
    r = run_report("maintenance_report", demo_params(refp, prodp), ws=ws, dry_run=True, log=False)
    assert r.status == "finished"
    states = {f["policy"]: f["state"] for f in r.values["policy_firings"]}
    assert states == {"dataset-drift": "would fire", "rollback-on-drop": "would fire"}
    assert Registry(ws, log=False).get("tickets:production").id == "tickets:v2"
    # and from the shell, against the recorded values of that run
    out = fmops("-w", str(ws.root), "monitor", "check", r.id, "--dry-run")
    assert out.returncode == 0 and "rollback-on-drop" in out.stdout and "would rollback tickets:production" in out.stdout
    assert Registry(ws, log=False).get("tickets:production").id == "tickets:v2"
    assert audit_log(ws, "tickets:production")[0]["action"] == "promote"


def test_rerun_reproduces_the_maintenance_and_drift_reports_and_names_a_changed_file(demo):
    ws, refp, prodp = demo
    first = run_report("maintenance_report", demo_params(refp, prodp), ws=ws, log=False)
    assert Registry(ws, log=False).get("tickets:production").id == "tickets:v1"  # the first run rolled back
    again = rerun(first.id, ws, log=False)  # pinned to tickets:v2 as the original read it, and dry: no second rollback
    assert again.same, again
    assert again.rerun.values["live"] == first.values["live"]
    drift_run = run_report("drift_report", {"reference": str(refp), "current": str(prodp), "chunk_size": 500}, ws=ws, log=False)
    assert rerun(drift_run.id, ws, log=False).same
    import pandas as pd
    df = pd.read_parquet(prodp)
    df.loc[:, "latency_ms"] = df["latency_ms"] * 1.5
    df.to_parquet(prodp)
    changed = rerun(drift_run.id, ws, log=False)
    assert not changed.same and any(d["value"] == "drift" for d in changed.differences)
    assert any(c.startswith(f"input 'current' ({prodp}) changed") for c in changed.causes), changed.causes
    out = fmops("-w", str(ws.root), "report", "rerun", drift_run.id, "--no-wandb")
    assert out.returncode == 1 and "input 'current'" in out.stderr


def test_every_template_runs_through_papermill(demo, tmp_path):
    ws, refp, prodp = demo
    d = run_report("drift_report", {"reference": str(refp), "current": str(prodp), "chunk_size": 500, "columns": ["channel", "latency_ms"]}, ws=ws, log=False)
    assert d.status == "finished", d.error
    assert sorted(d.values["drifted_columns"]) == ["channel", "latency_ms"] and len(d.values["timeline"]) == 3
    probe = tmp_path / "probe.parquet"
    import pandas as pd
    pd.read_parquet(prodp).head(300).to_parquet(probe)
    v = run_report("version_diff", {"a": "tickets:v1", "b": "tickets:v2", "task": "demo-tickets", "probe": str(probe), "label_column": "label"}, ws=ws, log=False)
    assert v.status == "finished", v.error
    assert v.values["n_changed_tensors"] == 4 and v.values["lineage"] == "tickets:v2 descends from tickets:v1"
    assert 0 < v.values["agreement"] < 1 and v.values["accuracy_delta"] < 0
    m = run_report("maintenance_report", {"reference": str(refp), "current": str(prodp)}, ws=ws, log=False)  # data only
    assert m.status == "finished" and m.values["dataset_drift"] and "live" not in m.values
    # a real (tiny) fine-tune through the user-script recipe, then its report
    from fmops_nb.finetune import FinetuneSpec, launch
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import torch
        from fmops_nb.finetune import report, save_model
        w = torch.zeros(4, requires_grad=True); opt = torch.optim.SGD([w], lr=0.1)
        for step in range(1, 7):
            loss = ((w - 1) ** 2).sum(); loss.backward(); opt.step(); opt.zero_grad()
            report(step=step, loss=loss.item())
        save_model({'w': w})
    """))
    run = launch(FinetuneSpec(base="", recipe="script", script=str(script), max_steps=6, model="scripted"), ws=ws)
    assert run.wait(120) == "finished", run.tail(30)
    f = run_report("finetune_report", {}, ws=ws, log=False)
    assert f.status == "finished", f.error
    assert (f.values["run_id"], f.values["status"], f.values["step"], f.values["version"]) == (run.id, "finished", 6, "scripted:v1")
    assert f.values["final_loss"] == pytest.approx(run.events("step")[-1]["loss"])


def test_templates_run_under_plain_papermill(demo, tmp_path):
    "No fmops report runner: papermill's own command line, as cron or Airflow's PapermillOperator would call it."
    ws, refp, prodp = demo
    out = tmp_path / "out.ipynb"
    r = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "templates" / "drift_report.ipynb"), str(out),
                        "-p", "reference", str(refp), "-p", "current", str(prodp), "-p", "chunk_size", "500", "-k", "python3"],
                       capture_output=True, text=True, env={**os.environ, "FMOPS_HOME": str(ws.root)}, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    values = read_values(out)
    assert values["dataset_drift"] is True and len(values["timeline"]) == 3


def test_a_failing_cell_fails_the_report_its_wandb_run_and_the_exit_status(tmp_path):
    tpl = template(tmp_path / "boom.ipynb", "n: int = 1", "from fmops_nb.reports import record\nrecord('before', n)", "raise RuntimeError('disk full')")
    r = fmops("report", "run", str(tpl), "-p", "n", "3", cwd=tmp_path)
    assert r.returncode == 1 and "RuntimeError: disk full" in r.stderr
    run = report_runs(template="boom")[-1]
    assert run.status == "failed" and run.values == {"before": 3}
    assert "RuntimeError" in run.html.read_text() and run.notebook.is_file()
    rec = read_run(run.wandb_run)
    assert rec.status == "failed" and rec.summary["report_status"] == "failed"
    assert rec.alerts and rec.alerts[0]["title"] == "report boom failed" and "disk full" in rec.alerts[0]["text"]


def test_a_hung_kernel_is_stopped_at_the_timeout_and_retries_back_off(tmp_path):
    tpl = template(tmp_path / "hang.ipynb", "", "import time\ntime.sleep(120)")
    t = time.time()
    r = run_report(tpl, timeout=3, log=False)
    assert r.status == "failed" and "timeout" in r.error and time.time() - t < 60
    marker = tmp_path / "attempts.txt"
    flaky = template(tmp_path / "flaky.ipynb", "", f"p = {str(marker)!r}\nimport os\nn = len(open(p).read()) if os.path.exists(p) else 0\n"
                     "open(p, 'a').write('x')\nassert n >= 2, f'attempt {n + 1} fails'")
    t = time.time()
    r = run_report(flaky, retries=2, backoff_s=1, log=False)
    took = time.time() - t
    assert r.status == "finished" and r.record["attempts"] == 3 and marker.read_text() == "xxx"
    assert took >= 3  # 1 s, then 2 s of backoff


def test_bad_input_is_refused_with_a_clear_error(tmp_path):
    tpl = template(tmp_path / "t.ipynb", "from datetime import date\nday: date = date(2026, 1, 1)\nn: int = 1", "print(day, n)")
    cases = [
        (["report", "run", "maintenance_reprot"], "Unknown template 'maintenance_reprot'. Did you mean 'maintenance_report'"),
        (["report", "run", str(tpl), "-p", "n", "many"], "Parameter 'n' must be an int, got 'many'"),
        (["report", "run", str(tpl), "-p", "days", "2026-03-01"], "Unknown parameter 'days'. Did you mean 'day'?"),
        (["schedule", "add", "daily", "--cron", "0 6 * *", "--template", str(tpl)], "has 4 fields; it needs 5"),
        (["schedule", "add", "daily", "--cron", "0 6 * * 8", "--template", str(tpl)], "day of week 8 is outside 0-7"),
    ]
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), str(tmp_path / "noparams.ipynb"))
    cases.append((["report", "run", str(tmp_path / "noparams.ipynb")], "has no cell tagged `parameters`"))
    for args, msg in cases:
        r = fmops(*args, "--no-wandb", cwd=tmp_path)
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert not any((tmp_path / ".fmops" / "reports").glob("*/*"))  # nothing ran
    (tmp_path / "empty.yaml").write_text("")
    r = fmops("report", "run", str(tpl), "-f", str(tmp_path / "empty.yaml"), "--no-wandb", cwd=tmp_path)
    assert r.returncode == 0 and get_report("t").params == {}  # an empty params file means no parameters


def test_a_killed_scheduled_run_reads_killed_and_is_not_run_twice(tmp_path):
    flag = tmp_path / "started"
    tpl = template(tmp_path / "slow.ipynb", "n: int = 1", f"open({str(flag)!r}, 'w').write('1')\nimport time\ntime.sleep(120)")
    assert fmops("schedule", "add", "slow", "--cron", "* * * * *", "--template", str(tpl), cwd=tmp_path).returncode == 0
    kernels = tmp_path / "k"  # TMPDIR of the runs: where their private kernel folders go
    kernels.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "fmops_nb.cli", "schedule", "run-due", "--no-wandb"], cwd=tmp_path, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "TMPDIR": str(kernels)})
    try:
        for _ in range(600):
            if flag.exists(): break
            time.sleep(0.1)
        assert flag.exists()
        # a second run-due while the first is going (cron firing again, a second host): the schedule's lock is held
        second = fmops("schedule", "run-due", "--no-wandb", cwd=tmp_path)
        assert second.returncode == 0 and "slow: skipped  a run of this schedule is still going" in second.stdout
        assert len(report_runs(template="slow")) == 1
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    time.sleep(0.5)
    run = report_runs(template="slow")[-1]
    assert run.status == "killed" and "ended before it finished" in run.error
    h = json.loads(fmops("schedule", "history", "--json", cwd=tmp_path).stdout)
    assert [x["status"] for x in h] == ["killed"]
    # a later run-due does not run the killed slot again (if the minute has turned meanwhile, the new slot may run:
    # the template is made quick first, so that is no wait, and only the killed slot is checked)
    template(tmp_path / "slow.ipynb", "n: int = 1", "print(n)")
    again = fmops("schedule", "run-due", "--no-wandb", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    h2 = json.loads(fmops("schedule", "history", "--json", cwd=tmp_path).stdout)
    assert [x["status"] for x in h2 if x["due_at"] == h[0]["due_at"]] == ["killed"]
    # the killed run could not remove its kernel folder; the next run does
    assert [d.name[:7] for d in kernels.iterdir()] == ["fmops-k"]
    quick = template(tmp_path / "quick.ipynb", "n: int = 1", "print(n)")
    assert fmops("report", "run", str(quick), "--no-wandb", cwd=tmp_path, env={"TMPDIR": str(kernels)}).returncode == 0
    assert list(kernels.iterdir()) == []


def test_serve_runs_a_due_schedule_and_stops_on_sigterm(tmp_path):
    tpl = template(tmp_path / "tick.ipynb", "n: int = 1", "from fmops_nb.reports import record\nrecord('twice', n * 2)")
    assert fmops("schedule", "add", "tick", "--cron", "* * * * *", "--template", str(tpl), "-p", "n", "21", cwd=tmp_path).returncode == 0
    cron = fmops("schedule", "crontab", cwd=tmp_path).stdout
    assert "* * * * * cd " in cron and "schedule run-due --only tick" in cron
    p = subprocess.Popen([sys.executable, "-m", "fmops_nb.cli", "schedule", "serve", "--interval", "1", "--no-wandb"], cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):
            runs = report_runs(template="tick")
            if runs and runs[-1].status == "finished": break
            time.sleep(0.1)
        assert runs and runs[-1].values == {"twice": 42}
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and "tick: finished" in out and out.rstrip().endswith("stopped."), (out, err)


class _Hook(BaseHTTPRequestHandler):
    got, delay = [], 0.0
    def do_POST(self):
        time.sleep(type(self).delay)
        type(self).got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204); self.end_headers()
    def log_message(self, *a): pass


def test_webhook_sink_posts_alerts_and_a_timeout_still_records_the_alert(tmp_path):
    from fmops_nb import monitor
    srv = HTTPServer(("127.0.0.1", 0), _Hook)
    th = threading.Thread(target=srv.serve_forever, daemon=True); th.start()
    try:
        ws = Workspace.open()
        ws.config_path.write_text(f'[monitor]\nsinks = ["webhook", "log"]\nwebhook_url = "http://127.0.0.1:{srv.server_port}/hook"\nwebhook_timeout_s = 1.0\n'
                                  '[[monitor.policies]]\nname = "drift"\nwhen = "dataset_drift"\n')
        ws.reload()
        res = monitor.check({"dataset_drift": True}, template="t", ws=ws, display=False)
        assert res.firings[0].state == "fired"
        assert _Hook.got[-1]["policy"] == "drift" and _Hook.got[-1]["message"].startswith("dataset_drift")
        assert monitor.alerts(ws)[0]["deliveries"]["webhook"] == "HTTP 204"
        _Hook.delay = 3.0  # now the hook hangs past the 1 s timeout
        t = time.time()
        monitor.check({"dataset_drift": False}, template="t", ws=ws, display=False)
        res = monitor.check({"dataset_drift": True}, template="t", ws=ws, display=False)
        assert time.time() - t < 3.0
        a = monitor.alerts(ws)[0]
        assert a["id"] == res.firings[0].alert_id and a["policy"] == "drift" and a["state"] == "open"
        assert a["deliveries"]["webhook"].startswith("failed:") and "timed out" in a["deliveries"]["webhook"]
        assert a["deliveries"]["log"].endswith("alerts.jsonl")  # the other sinks still got it
    finally:
        srv.shutdown(); srv.server_close()


def test_drift_on_two_consecutive_reports_launches_the_finetune_spec(tmp_path):
    "The issue's first policy: dataset drift on production for 2 consecutive runs -> alert and launch fine-tune spec X (audited)."
    (tmp_path / "train.py").write_text(TRAIN_SCRIPT)
    (tmp_path / "retrain.yaml").write_text("base: ''\nrecipe: script\nscript: train.py\nmax_steps: 3\nmodel: retrained\n")
    (tmp_path / "policies.yaml").write_text("policies:\n  - {name: drift-two-runs, when: dataset_drift, for: 2, action: finetune, spec: retrain.yaml}\n")
    ws = Workspace.open()
    ws.config_path.write_text(f'[monitor]\npolicy_file = "{tmp_path / "policies.yaml"}"\nsinks = ["log"]\n')
    tpl = template(tmp_path / "daily.ipynb", "drifted: bool = True", "from fmops_nb.reports import record\nrecord('dataset_drift', drifted)",
                   "from fmops_nb import monitor\nmonitor.check()")
    from fmops_nb.finetune import runs
    states = []
    for drifted in (True, False, True, True):
        r = run_report(tpl, {"drifted": drifted}, log=False)
        states.append(r.values["policy_firings"][0]["state"])
    assert states == ["holding", "quiet", "holding", "fired"]  # the streak restarts after a quiet day
    fired = r.values["policy_firings"][0]
    launched = runs(ws)
    assert len(launched) == 1 and fired["outcome"] == f"launched fine-tune {launched[0].id}"
    assert launched[0].wait(120) == "finished" and launched[0].version == "retrained:v1"
    row = next(a for a in audit_log(ws) if a["action"] == "policy-finetune")
    assert row["subject"] == "drift-two-runs" and row["after"]["run"] == launched[0].id
    lines = [json.loads(l) for l in (ws.root / "logs" / "alerts.jsonl").read_text().splitlines()]
    assert [(a["policy"], a["action"]) for a in lines] == [("drift-two-runs", "finetune")]
    # the schedule commands around it
    assert fmops("schedule", "add", "daily", "--cron", "0 6 * * *", "--template", str(tpl), "-p", "drifted", "false", cwd=tmp_path).returncode == 0
    ls = json.loads(fmops("schedule", "ls", "--json", cwd=tmp_path).stdout)
    assert [(s["name"], s["cron"], s["params"]) for s in ls] == [("daily", "0 6 * * *", {"drifted": False})]
    assert fmops("schedule", "rm", "daily", cwd=tmp_path).returncode == 0
    assert json.loads(fmops("schedule", "ls", "--json", cwd=tmp_path).stdout) == []


def test_report_magic_inside_a_running_kernel(tmp_path):
    "`%fmops report run` from a notebook cell: a kernel (with its event loop running) starting and driving a second kernel."
    inner = template(tmp_path / "inner.ipynb", "n: int = 1", "from fmops_nb.reports import record\nrecord('tripled', n * 3)")
    outer = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("%load_ext fmops_nb"), nbformat.v4.new_code_cell(
        f"r = %fmops report run {inner} -p n 14 --no-wandb\nprint(r.status, r.values)")])
    outer.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(outer, str(tmp_path / "outer.ipynb"))
    import papermill as pm
    pm.execute_notebook(str(tmp_path / "outer.ipynb"), str(tmp_path / "outer-out.ipynb"), kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    out = nbformat.read(str(tmp_path / "outer-out.ipynb"), as_version=4).cells[1].outputs
    assert [o["text"] for o in out if o.get("name") == "stdout"] == ["finished {'tripled': 42}\n"]
