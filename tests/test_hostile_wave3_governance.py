"""Holes in governance left by the last attack round: an author signing off their own version, the Python API's
rollback and delete skipping the role the magic and the CLI ask for, and `fmops monitor check` acting on a report's
values.json edited on disk after the run recorded it."""
import json

import pytest

from fmops_nb import monitor as M
from fmops_nb.audit import audit_log
from fmops_nb.cli import main
from fmops_nb.core import Workspace
from fmops_nb.errors import NotPermitted, PromotionBlocked, ValidationError
from fmops_nb.governance import approval_status, approvals, approve
from fmops_nb.registry import Registry, verify_audit
from fmops_nb.reports import run_report
from tiny import weights

from conftest import recording_template
from people import POLICY, ROLES, workspace


@pytest.fixture
def reg(tmp_path, monkeypatch):
    "tickets:v1 registered by erin, who holds both the maintainer and the approver role."
    ws = workspace(tmp_path, ROLES + POLICY)
    monkeypatch.setenv("FMOPS_USER", "erin")
    r = Registry(ws, log=False)
    r.register("tickets", weights(tmp_path / "w1.safetensors"), metrics={"accuracy": 0.9})
    return r


@pytest.mark.hostile
def test_the_author_of_a_version_cannot_sign_it_off_and_is_told_who_can(reg, monkeypatch, hostile):
    ws = reg.ws
    rows = len(audit_log(ws))
    hostile("erin registers tickets:v1, then approves it herself as an approver")
    with pytest.raises(NotPermitted, match=r"erin may not approve tickets:v1: erin registered it.*Ask bob or dana"):
        approve("tickets:v1", reason="my own work looks fine", ws=ws)
    assert approvals("tickets:v1", ws) == [] and len(audit_log(ws)) == rows  # the refusal wrote nothing
    monkeypatch.setenv("FMOPS_USER", "bob")
    approve("tickets:v1", reason="evaluated", ws=ws)
    monkeypatch.setenv("FMOPS_USER", "erin")  # one approval from someone else is not two
    with pytest.raises(PromotionBlocked, match=r"has 1 \(bob\)"):
        reg.promote("tickets:v1")
    monkeypatch.setenv("FMOPS_USER", "dana")
    approve("tickets:v1", reason="slices fine", ws=ws)
    monkeypatch.setenv("FMOPS_USER", "erin")  # two other approvers: erin may promote her version
    assert "production" in reg.promote("tickets:v1").aliases
    assert verify_audit(ws).ok


@pytest.mark.hostile
def test_an_authors_approval_counts_only_while_the_policy_says_self_approval(reg, monkeypatch, tmp_path, hostile):
    ws = reg.ws
    allow = POLICY.replace('role = "approver"}', 'role = "approver", self_approval = true}')
    (ws.root / "config.toml").write_text(ROLES + allow)
    ws = Workspace.open(ws.root)
    approve("tickets:v1", reason="small team: I sign off my own", ws=ws)  # explicitly allowed
    monkeypatch.setenv("FMOPS_USER", "bob")
    approve("tickets:v1", reason="evaluated", ws=ws)
    (s,) = approval_status("tickets:v1", "production", ws)
    assert (s["approvers"], s["met"]) == (["erin", "bob"], True)
    hostile("the self-approval policy is withdrawn: erin's own approval, given while allowed, stays on record")
    (ws.root / "config.toml").write_text(ROLES + POLICY)
    ws = Workspace.open(ws.root)
    (s,) = approval_status("tickets:v1", "production", ws)
    assert (s["approvers"], s["own_version"], s["met"]) == (["bob"], ["erin"], False)
    monkeypatch.setenv("FMOPS_USER", "alice")
    with pytest.raises(PromotionBlocked, match=r"has 1 \(bob\).*erin were not counted: they registered tickets:v1"):
        Registry(ws, log=False).promote("tickets:v1")
    assert Registry(ws, log=False).get("tickets:v1").aliases == []


@pytest.mark.hostile
def test_the_python_api_rollback_and_delete_check_the_role_like_the_magic(reg, monkeypatch, tmp_path, hostile):
    ws = reg.ws
    reg.register("tickets", weights(tmp_path / "w2.safetensors", (2.0, 1.0)), metrics={"accuracy": 0.9})
    reg.register("tickets", weights(tmp_path / "w3.safetensors", (3.0, 1.0)), metrics={"accuracy": 0.9})
    reg.promote("tickets:v1", to="staging")
    reg.promote("tickets:v2", to="staging")
    rows, history = len(audit_log(ws)), reg.history("tickets")
    for who in ("carol", "mallory"):  # a viewer, and a user the workspace does not list
        monkeypatch.setenv("FMOPS_USER", who)
        hostile(f"{who} rolls tickets:staging back and deletes tickets:v3 through the Python API")
        with pytest.raises(NotPermitted, match=f"{who} may not roll an alias back: that needs the maintainer role"):
            Registry(ws, log=False).rollback("tickets:staging", reason="script")
        with pytest.raises(NotPermitted, match=f"{who} may not delete a version: that needs the maintainer role"):
            Registry(ws, log=False).delete("tickets:v3")
    assert reg.get("tickets:staging").id == "tickets:v2" and reg.get("tickets:v3").state == "ready"
    assert len(audit_log(ws)) == rows and reg.history("tickets") == history  # nothing written
    monkeypatch.setenv("FMOPS_USER", "alice")  # a maintainer may
    assert reg.rollback("tickets:staging", reason="back").id == "tickets:v1"
    assert reg.delete("tickets:v3").id == "tickets:v3"
    assert verify_audit(ws).ok


ROLLBACK = """
[monitor]
sinks = ["log"]
[[monitor.policies]]
name = "rollback-on-drop"
when = "accuracy < 0.8"
action = "rollback"
target = "tickets:production"
severity = "critical"
"""


@pytest.fixture
def finished_run(tmp_path, monkeypatch):
    "tickets v1 then v2 in production, and a finished report run that recorded accuracy 0.9 (no rollback due)."
    ws = workspace(tmp_path, ROLLBACK)
    monkeypatch.setenv("FMOPS_USER", "alice")
    reg = Registry(ws, log=False)
    for i in (1, 2):
        reg.register("tickets", weights(tmp_path / f"w{i}.safetensors", (float(i), 1.0)))
        reg.promote(f"tickets:v{i}", reason="release")
    recording_template(tmp_path, "acc", "accuracy", 0.9)
    r = run_report("acc", {"accuracy": 0.9}, ws=ws, log=False)
    assert r.status == "finished" and r.values == {"accuracy": 0.9}
    return ws, reg, r


def quiet(ws, reg):
    "What a refused check must leave as it was."
    return reg.get("tickets:production").id, M.alerts(ws), len(audit_log(ws))


@pytest.mark.hostile
def test_monitor_check_refuses_values_edited_on_disk_after_the_run(finished_run, capsys, hostile):
    ws, reg, r = finished_run
    before, record = quiet(ws, reg), (r.dir / "record.json").read_bytes()
    assert main(["-w", str(ws.root), "monitor", "check", r.id, "--dry-run"]) in (0, None)  # untouched: it reads them
    assert "rollback-on-drop" in capsys.readouterr().out
    hostile("values.json rewritten by hand so that accuracy reads 0.1: a rollback nothing called for")
    (r.dir / "values.json").write_text(json.dumps({"accuracy": 0.1}, indent=1))
    assert main(["-w", str(ws.root), "monitor", "check", r.id]) not in (0, None)
    err = capsys.readouterr().err
    assert "cannot be trusted: its values.json was changed after the run recorded it" in err
    assert quiet(ws, reg) == before  # no rollback, no alert, nothing in the audit log
    hostile("the same edit, with record.json's hash of values.json rewritten to match")
    rec = json.loads((r.dir / "record.json").read_text())
    from fmops_nb.core import file_sha256
    rec["files"]["values.json"] = file_sha256(r.dir / "values.json")
    (r.dir / "record.json").write_text(json.dumps(rec))
    with pytest.raises(ValidationError, match="its record.json was changed after the run"):  # the audit row says
        M.check(json.loads((r.dir / "values.json").read_text()), template="acc", ws=ws, subject=str(r.dir))
    hostile("values handed to check for that run that are not the ones it recorded")
    (r.dir / "values.json").write_text(json.dumps({"accuracy": 0.9}, indent=1))
    (r.dir / "record.json").write_bytes(record)
    with pytest.raises(ValidationError, match="are not the ones the report run"):
        M.check({"accuracy": 0.1}, template="acc", ws=ws, subject=str(r.dir))
    assert quiet(ws, reg) == before
    assert M.recorded_values(r.dir, ws) == {"accuracy": 0.9}  # restored: trusted again


@pytest.mark.hostile
def test_a_report_run_rewritten_whole_is_refused_by_its_audit_row(tmp_path, monkeypatch, hostile):
    """values.json, the output notebook and record.json rewritten together, consistently, pass every check of the
    folder itself; the run's `report-run` audit row (keyed, chained) still holds the old record.json's sha256. A
    forged row appended to the log without the key is refused too, and one made without any audit row at all."""
    import sqlite3

    from fmops_nb.audit import _row_hash
    from fmops_nb.core import file_sha256
    from fmops_nb.reports import run_subject
    monkeypatch.setenv("FMOPS_AUDIT_KEY", "k" * 32)
    ws = workspace(tmp_path, ROLLBACK)
    recording_template(tmp_path, "acc", "accuracy", 0.9)
    r = run_report("acc", {"accuracy": 0.9}, ws=ws, log=False)
    assert M.recorded_values(r.dir, ws) == {"accuracy": 0.9}
    hostile("a report run whose output notebook, values.json and record.json are rewritten to say accuracy 0.1")
    out = (r.dir / "output.ipynb").read_text()
    (r.dir / "output.ipynb").write_text(out.replace("0.9", "0.1"))
    (r.dir / "values.json").write_text(json.dumps({"accuracy": 0.1}, indent=1))
    rec = json.loads((r.dir / "record.json").read_text())
    rec["files"] |= {n: file_sha256(r.dir / n) for n in ("values.json", "output.ipynb")}
    (r.dir / "record.json").write_text(json.dumps(rec, indent=1))
    with pytest.raises(ValidationError, match="record.json was changed after the run"):
        M.recorded_values(r.dir, ws)
    hostile("the same, with a report-run row appended to the audit log by hand, its HMAC not the workspace key's")
    con = sqlite3.connect(ws.root / "fmops.db")
    last = con.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
    after = json.dumps({"files": rec["files"], "record": file_sha256(r.dir / "record.json"), "status": "finished"},
                       sort_keys=True)
    row = ("2026-12-03T00:00:00", "mallory", "report-run", run_subject(ws, r.dir), None, after, last[1])
    h = _row_hash(last[1], last[0] + 1, *row[:6])
    con.execute("INSERT INTO audit (seq, at, actor, action, subject, before, after, prev_hash, hash, mac) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)", (last[0] + 1, *row, h, "0" * 64))
    con.commit()
    con.close()
    with pytest.raises(ValidationError, match="does not carry the audit key's HMAC"):
        M.recorded_values(r.dir, ws)
    hostile("a run folder copied in by hand: no report run made it, so the audit log has no row for it")
    fake = r.dir.parent / "20260101-000000-fake"
    fake.mkdir()
    for n in ("output.ipynb", "values.json", "record.json"):
        (fake / n).write_bytes((r.dir / n).read_bytes())
    with pytest.raises(ValidationError, match="the audit log has no entry for it"):
        M.recorded_values(fake, ws)


@pytest.mark.hostile
def test_a_run_folder_named_with_a_newline_is_shown_on_one_line(tmp_path, hostile):
    "A folder path with a newline and markup, handed to monitor check, is quoted in the refusal, never split."
    hostile("recorded_values('/nonexistent\\n<b>x</b>')")
    ws = workspace(tmp_path, "")
    with pytest.raises(ValidationError) as e:
        M.recorded_values("/nonexistent\n<b>x</b>", ws)
    assert "\n" not in str(e.value) and "'/nonexistent\\n<b>x</b>'" in str(e.value)
