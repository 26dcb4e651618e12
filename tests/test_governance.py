"""Roles and approvals (issue 16, item 4): a policy that wants two approvers holds a promotion until two distinct
approvers signed the version off, every step is in the audit log, a force needs a reason, and a viewer cannot promote."""
import json
import pytest
from fmops_nb.core import Workspace
from fmops_nb.errors import ConfigError, NotPermitted, PolicyError, PromotionBlocked, ValidationError
from fmops_nb.registry import Registry, verify_audit
from fmops_nb.audit import audit_log
from fmops_nb.governance import approve, approvals, approval_status, check_role, roles
from fmops_nb.monitor import alerts, raise_alert
from fmops_nb.schedule import schedules
from fmops_nb.feedback import query
from tiny import weights

from people import POLICY, ROLES, workspace


def as_user(monkeypatch, name):
    monkeypatch.setenv("FMOPS_USER", name)


@pytest.fixture
def reg(tmp_path, monkeypatch):
    ws = workspace(tmp_path, ROLES + POLICY)
    as_user(monkeypatch, "alice")
    r = Registry(ws, log=False)
    r.register("tickets", weights(tmp_path / "w1.safetensors"), metrics={"accuracy": 0.9})
    return r


def test_production_waits_for_two_distinct_approvers_and_every_step_is_audited(reg, monkeypatch):
    ws = reg.ws
    reg.promote("tickets:v1", to="staging")  # the policy is about production only
    with pytest.raises(PromotionBlocked, match=r"requires 2 approval\(s\).*has 0"):
        reg.promote("tickets:v1")
    as_user(monkeypatch, "bob")
    approve("tickets:v1", reason="evaluated on the March set", ws=ws)
    with pytest.raises(ValidationError, match="once per reviewer"):  # the same approver twice does not count
        approve("tickets:v1", reason="really sure", ws=ws)
    as_user(monkeypatch, "alice")
    with pytest.raises(PromotionBlocked, match=r"has 1 \(bob\)"):
        reg.promote("tickets:v1")
    assert reg.get("tickets:v1").aliases == ["staging"]
    as_user(monkeypatch, "dana")
    approve("tickets:v1", reason="slices look fine", ws=ws)
    as_user(monkeypatch, "alice")
    assert "production" in reg.promote("tickets:v1", reason="release 3").aliases
    assert [a.reviewer for a in approvals("tickets:v1", ws)] == ["bob", "dana"]
    rows = [(r["action"], r["actor"], r["subject"]) for r in reversed(audit_log(ws))]
    assert rows[-6:] == [("promote", "alice", "tickets:staging"), ("promote-blocked", "alice", "tickets:production"),
                         ("approve", "bob", "tickets:v1"), ("promote-blocked", "alice", "tickets:production"),
                         ("approve", "dana", "tickets:v1"), ("promote", "alice", "tickets:production")]
    reasons = [r["after"]["reason"] for r in audit_log(ws) if r["action"] == "approve"]
    assert reasons == ["slices look fine", "evaluated on the March set"]
    assert verify_audit(ws).ok


def test_an_approver_whose_role_was_taken_away_no_longer_counts(reg, monkeypatch, tmp_path):
    for who in ("bob", "dana"):
        as_user(monkeypatch, who)
        approve("tickets:v1", reason="ok", ws=reg.ws)
    (reg.ws.root / "config.toml").write_text(ROLES.replace('dana = ["approver"]', 'dana = ["viewer"]') + POLICY)
    ws = Workspace.open(reg.ws.root)
    (s,) = approval_status("tickets:v1", "production", ws)
    assert (s["approvers"], s["met"]) == (["bob"], False)
    as_user(monkeypatch, "alice")
    with pytest.raises(PromotionBlocked, match=r"has 1 \(bob\)"):
        Registry(ws, log=False).promote("tickets:v1")


def test_force_needs_a_reason_and_the_override_is_in_the_audit_log(reg):
    with pytest.raises(PromotionBlocked, match="needs a --reason"):
        reg.promote("tickets:v1", force=True)
    assert reg.get("tickets:v1").aliases == []
    reg.promote("tickets:v1", force=True, reason="hotfix for incident 12")
    (row,) = [r for r in audit_log(reg.ws) if r["action"] == "promote"]
    assert "hotfix for incident 12" in row["after"]["reason"] and "approvals (two-approvers)" in row["after"]["reason"]


def test_a_viewer_cannot_promote_or_approve_not_even_with_force(reg, monkeypatch):
    as_user(monkeypatch, "carol")
    with pytest.raises(PromotionBlocked, match="carol may not promote a version: that needs the maintainer role"):
        reg.promote("tickets:v1", to="staging")
    with pytest.raises(PromotionBlocked, match="needs the maintainer role"):
        reg.promote("tickets:v1", to="staging", force=True, reason="I insist")
    with pytest.raises(NotPermitted, match="needs the approver role"):
        approve("tickets:v1", reason="lgtm", ws=reg.ws)
    as_user(monkeypatch, "mallory")  # not listed at all: no role
    with pytest.raises(PromotionBlocked, match="give mallory none"):
        reg.promote("tickets:v1", to="staging")
    assert reg.get("tickets:v1").aliases == []
    # a registration that would set an alias keeps the version and says which alias it could not set
    with pytest.raises(PromotionBlocked, match="Registered tickets:v2, but mallory may not promote"):
        reg.register("tickets", weights(reg.ws.root.parent / "w2.safetensors", (2.0, 3.0)), aliases=["staging"])
    assert reg.get("tickets:v2").aliases == []


def test_a_workspace_without_roles_or_sign_off_policies_keeps_todays_behaviour(tmp_path, monkeypatch):
    ws = workspace(tmp_path, "")
    as_user(monkeypatch, "anyone")
    reg = Registry(ws, log=False)
    reg.register("m", weights(tmp_path / "w.safetensors"))
    assert roles(ws) == {} and check_role("promote", ws) == []
    assert reg.promote("m:v1").aliases == ["production"]
    assert approve("m:v1", reason="fine", ws=ws).reviewer == "anyone"
    assert ws.schema_version("governance") == 1


def test_bad_roles_and_bad_sign_off_policies_are_refused_with_the_fix(tmp_path, monkeypatch):
    as_user(monkeypatch, "alice")
    ws = workspace(tmp_path, '[roles]\nalice = ["aprover"]\n')
    with pytest.raises(ConfigError, match="Did you mean 'approver'"):
        check_role("promote", ws)
    bad = POLICY.replace("approvals = 2", "approvals = 0")
    reg = Registry(workspace(tmp_path, bad), log=False)
    reg.register("m", weights(tmp_path / "w.safetensors"))
    with pytest.raises(PolicyError, match=r"`require` must be \{approvals: N, role: ROLE\}"):
        reg.promote("m:v1")
    assert reg.get("m:v1").aliases == []
    ws = workspace(tmp_path, "")
    with pytest.raises(ValidationError, match="needs a reason"):
        approve("m:v1", reason="  ", ws=ws)


def test_fmops_approve_and_the_role_checks_of_the_command_line(reg, monkeypatch, capsys):
    from fmops_nb.cli import main
    w = ["-w", str(reg.ws.root)]
    as_user(monkeypatch, "bob")
    assert main([*w, "approve", "tickets:v1", "--reason", "evaluated", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["reviewer"] == "bob"
    assert main([*w, "approve", "tickets:v1"]) == 1 and "needs a reason" in capsys.readouterr().err
    alert = raise_alert(reg.ws, "accuracy-drop", "accuracy fell", sinks=[])["id"]
    fb = reg.ws.root.parent / "fb.jsonl"
    fb.write_text(json.dumps({"input": "hi", "kind": "label", "value": "spam", "queue": "q"}) + "\n")
    as_user(monkeypatch, "carol")
    assert main([*w, "approve", "tickets:v1", "--reason", "lgtm"]) == 1
    assert "carol may not approve a version: that needs the approver role" in capsys.readouterr().err
    for cmd in (["registry", "promote", "tickets:v1", "--to", "staging"], ["registry", "rollback", "tickets:staging"],
                ["registry", "register", "tickets", str(reg.ws.root.parent / "w1.safetensors")],
                ["report", "run", "compliance_report", "-p", "model", "tickets"],
                ["schedule", "add", "daily", "--cron", "0 6 * * *", "--template", "maintenance_report"],
                ["schedule", "run-due"], ["alerts", "ack", str(alert)], ["audit", "reanchor", "--reason", "x"],
                ["registry", "gc"], ["feedback", "import", str(fb)],
                ["workspace", "migrate", "--to", "postgresql://u@127.0.0.1:9/x"]):
        assert main([*w, *cmd]) == 1, cmd
        assert "carol may not" in capsys.readouterr().err, cmd
    assert [v.id for v in reg.versions("tickets")] == ["tickets:v1"] and reg.get("tickets:v1").aliases == []
    assert not reg.ws.reports_dir.exists() or not any(reg.ws.reports_dir.iterdir())
    assert [a["state"] for a in alerts(reg.ws, state=None)] == ["open"] and schedules(reg.ws) == []
    assert len(query(ws=reg.ws)) == 0 and reg.ws.db_path.exists()


def test_percent_fmops_approve_and_a_viewer_refused_in_the_notebook(reg, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.core.error import UsageError
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        monkeypatch.setenv("FMOPS_HOME", str(reg.ws.root))
        as_user(monkeypatch, "dana")
        a = ip.run_line_magic("fmops", "approve tickets:v1 --reason 'looked at the slices'")
        assert (a.reviewer, a.reason) == ("dana", "looked at the slices")
        as_user(monkeypatch, "carol")
        for line in ("promote tickets:v1 --to staging", "rollback tickets:staging", "approve tickets:v1 --reason x"):
            with pytest.raises(UsageError, match="carol may not"):
                ip.run_line_magic("fmops", line)
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()


def test_a_sign_off_policy_naming_an_unknown_role_is_refused_not_waited_on(tmp_path, monkeypatch):
    as_user(monkeypatch, "alice")
    reg = Registry(workspace(tmp_path, ROLES + POLICY.replace('role = "approver"', 'role = "aprover"')), log=False)
    reg.register("m", weights(tmp_path / "w.safetensors"))
    with pytest.raises(PolicyError, match="Unknown role 'aprover'.*Did you mean 'approver'"):
        reg.promote("m:v1")


def test_an_approval_written_into_the_database_by_hand_does_not_count(reg, monkeypatch):
    import sqlite3
    as_user(monkeypatch, "bob")
    a = approve("tickets:v1", reason="ok", ws=reg.ws)
    with sqlite3.connect(reg.ws.db_path) as con:  # dana never approved; someone writes her approval in
        con.execute("INSERT INTO approvals VALUES ('tickets:v1', 'dana', 'approver', 'forged', ?, ?)",
                    (a.at, a.audit_seq))
    assert [(x.reviewer, x.recorded) for x in approvals("tickets:v1", reg.ws)] == [("bob", True), ("dana", False)]
    as_user(monkeypatch, "alice")
    with pytest.raises(PromotionBlocked, match=r"has 1 \(bob\); the approval\(s\) of dana are not in the audit log"):
        reg.promote("tickets:v1")
