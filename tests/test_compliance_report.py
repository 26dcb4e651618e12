"""The compliance report (issue 16, item 6): for a model and a period, every release with who approved it, the gates
and their evidence, the incidents, and the audit verification — run by papermill through `fmops report run`."""
import os, sqlite3, subprocess, sys
from datetime import date, timedelta
import pytest
from fmops_nb.core import Workspace
from fmops_nb.registry import Registry, verify_audit
from fmops_nb.governance import approve
from fmops_nb.monitor import raise_alert
from fmops_nb.errors import PromotionBlocked
from fmops_nb.reports import report_runs
from tiny import weights

IMG = "<img src=x onerror=alert(1)>"
CONFIG = """
[roles]
alice = ["maintainer"]
bob = ["approver"]
dana = ["approver"]

[[monitor.policies]]
name = "two-approvers"
on = "promote"
when = "alias == 'production'"
require = {approvals = 2, role = "approver"}
"""




def history(tmp_path, monkeypatch) -> Workspace:
    "Two releases of `tickets`: v1 approved by two, v2 forced past the sign-off, alerted on and rolled back."
    root = tmp_path / ".fmops"
    root.mkdir()
    (root / "config.toml").write_text(CONFIG)
    ws = Workspace.open(root)
    me = lambda who: monkeypatch.setenv("FMOPS_USER", who)
    me("alice")
    reg = Registry(ws, log=False)
    reg.register("tickets", weights(tmp_path / "a.safetensors"), metrics={"accuracy": 0.91})
    reg.register("tickets", weights(tmp_path / "b.safetensors", (1.0, 2.0)), metrics={"accuracy": 0.88})
    reg.register("other", weights(tmp_path / "c.safetensors"))
    for who, why in (("bob", "evaluated on the March set"), ("dana", f"slices fine {IMG}")):
        me(who); approve("tickets:v1", reason=why, ws=ws)
    me("alice")
    reg.promote("tickets:v1", reason="release 1")
    with pytest.raises(PromotionBlocked):
        reg.promote("tickets:v2")
    reg.promote("tickets:v2", force=True, reason="hotfix for incident 6")
    raise_alert(ws, "accuracy-drop", f"accuracy of tickets:v2 fell to 0.7 {IMG}", "critical", "tickets:v2", sinks=[])
    raise_alert(ws, "unrelated", "other:v1 is slow", "info", "other:v1", sinks=[])
    reg.rollback("tickets:production", reason="incident 7")
    assert verify_audit(ws).ok
    return ws


@pytest.mark.slow
def test_the_compliance_report_names_releases_approvers_gates_incidents_and_the_audit_result(tmp_path, monkeypatch):
    ws = history(tmp_path, monkeypatch)
    # someone points an alias behind the registry's back: the report must say the records do not verify
    with sqlite3.connect(ws.db_path) as con:
        con.execute("INSERT INTO aliases VALUES ('other', 'staging', 'other:v1', '2026-01-01')")
    today = date.today()
    r = subprocess.run([sys.executable, "-m", "fmops_nb.cli", "report", "run", "compliance_report", "--no-wandb",
                        "-p", "model", "tickets", "-p", "since", str(today - timedelta(days=1)),
                        "-p", "until", str(today + timedelta(days=1))],
                       capture_output=True, text=True, env={**os.environ, "FMOPS_USER": "alice"}, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = report_runs(ws, "compliance_report")
    v = run.values
    moves = [(m["action"], m["version"], m["approved by"], m["forced"]) for m in v["releases"]]
    assert moves == [("promote", "tickets:v1", ["bob", "dana"], False), ("promote", "tickets:v2", [], True),
                     ("rollback", "tickets:v1", ["bob", "dana"], False)]
    assert (v["n_promotions"], v["n_forced"], v["n_rollbacks"], v["n_alerts"]) == (2, 1, 1, 1)
    assert [(g["policy"], g["requires"]) for g in v["gates"]] == [("two-approvers", "2 approval(s) by approvers")]
    assert [(x["version"], x["policy"]) for x in v["refused"]] == [("tickets:v2", "two-approvers")]
    assert v["audit_ok"] is False and any("other:staging" in p for p in v["audit_problems"])
    html = (run.dir / "report.html").read_text()
    for text in ("hotfix for incident 6", "incident 7", "evaluated on the March set", "two-approvers",
                 "does NOT verify", "other:staging", "accuracy of tickets:v2 fell to 0.7"):
        assert text in html, text
    assert "other:v1 is slow" not in html  # another model's alert
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_the_model_is_a_required_parameter_checked_before_anything_runs():
    from fmops_nb.reports import find_template, schema
    sc = schema(find_template("compliance_report"))
    assert sc["model"].required and (sc["since"].type, sc["until"].type) == ("date", "date")
