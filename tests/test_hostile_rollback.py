"""Moves that went around the gates: a rollback to a version the alias never had, the registry panel's Roll back, an
alert acknowledged from the magic without its role, and a stored card holding raw Markdown/HTML."""
import sqlite3
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from fmops_nb.audit import audit_log
from fmops_nb.cli import main
from fmops_nb.core import Workspace
from fmops_nb.errors import NotPermitted, PromotionBlocked, WorkspaceError
from fmops_nb.governance import approve, check_role
from fmops_nb.monitor import alerts, raise_alert
from fmops_nb.registry import Registry, verify_audit
from fmops_nb.widgets import RegistryPanel
from tiny import weights

CONFIG = """
[roles]
alice = ["maintainer"]
bob = ["approver"]
dana = ["approver"]
carol = ["viewer"]

[[monitor.policies]]
name = "two-approvers"
on = "promote"
when = "alias == 'production'"
require = {approvals = 2, role = "approver"}
"""


@pytest.fixture
def reg(tmp_path, monkeypatch):
    "tickets v1..v3; v1 signed off twice and in production; v2 and v3 never approved."
    root = tmp_path / ".fmops"
    root.mkdir(exist_ok=True)
    (root / "config.toml").write_text(CONFIG)
    ws = Workspace.open(root)
    monkeypatch.setenv("FMOPS_USER", "alice")
    r = Registry(ws, log=False)
    for i in range(3):
        r.register("tickets", weights(tmp_path / f"w{i}.safetensors", (float(i), 1.0)), metrics={"accuracy": 0.9})
    for who in ("bob", "dana"):
        monkeypatch.setenv("FMOPS_USER", who)
        approve("tickets:v1", reason="evaluated", ws=ws)
    monkeypatch.setenv("FMOPS_USER", "alice")
    r.promote("tickets:v1", reason="release 1")
    return r


def state(reg):
    "What a refused move must leave as it was: where production points, and its history."
    return reg.get("tickets:production").id, [(h["version"], h["action"]) for h in reg.history("tickets")]


@pytest.mark.hostile
def test_rollback_to_a_version_production_never_had_passes_the_promotion_gates(reg, hostile, capsys):
    before = state(reg)
    with pytest.raises(PromotionBlocked, match=r"never pointed at tickets:v3.*requires 2 approval\(s\)"):
        hostile("Registry.rollback(alias, to=) a never-approved version into production")
        reg.rollback("tickets:production", to="tickets:v3", reason="sneak it in")
    assert state(reg) == before
    assert audit_log(reg.ws, "tickets:production")[0]["action"] == "promote-blocked"  # refused as a promotion is
    hostile("`fmops registry rollback --to` a never-approved version")
    assert main(["registry", "rollback", "tickets:production", "--to", "tickets:v3"]) != 0
    assert "requires 2 approval(s)" in capsys.readouterr().err and state(reg) == before
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        hostile("`%fmops rollback --to` a never-approved version")
        with pytest.raises(UsageError, match=r"requires 2 approval\(s\)"):
            ip.run_line_magic("fmops", "rollback tickets:production --to tickets:v3")
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()
    assert state(reg) == before
    reg.promote("tickets:v3", to="staging")  # another alias's history is not production's
    before = state(reg)
    hostile("rollback --to a version only another alias (staging) pointed at")
    with pytest.raises(PromotionBlocked, match=r"never pointed at tickets:v3"):
        reg.rollback("tickets:production", to="tickets:v3")
    assert state(reg) == before
    assert verify_audit(reg.ws).ok


@pytest.mark.hostile
def test_a_forged_history_row_does_not_open_the_gateless_way_back(reg, hostile):
    hostile("an alias_history row inserted behind the registry's back: production 'once' pointed at tickets:v3")
    con = sqlite3.connect(reg.ws.db_path, isolation_level=None)
    try:
        con.execute("INSERT INTO alias_history (model, alias, version, previous, action, reason, at, by) VALUES "
                    "('tickets', 'production', 'tickets:v3', NULL, 'promote', '', '2026-01-01', 'mallory')")
    finally:
        con.close()
    with pytest.raises(WorkspaceError, match="rollback of tickets:production was refused"):
        reg.rollback("tickets:production", to="tickets:v3")
    assert reg.get("tickets:production").id == "tickets:v1"


def test_rollback_to_an_earlier_target_needs_no_gate_and_a_signed_off_one_passes(reg, monkeypatch):
    reg.promote("tickets:v2", reason="hotfix", force=True)  # forced past the approvals: it has been production
    reg.promote("tickets:v1", reason="back to the approved one")
    assert reg.rollback("tickets:production", to="tickets:v2", reason="the hotfix again").id == "tickets:v2"
    assert reg.rollback("tickets:production").id == "tickets:v1"  # the previous target: no gate either
    for who in ("bob", "dana"):
        monkeypatch.setenv("FMOPS_USER", who)
        approve("tickets:v3", reason="evaluated", ws=reg.ws)
    monkeypatch.setenv("FMOPS_USER", "alice")
    assert reg.rollback("tickets:production", to="tickets:v3", reason="signed off").id == "tickets:v3"
    assert reg.history("tickets", "production")[-1]["action"] == "rollback-to"
    assert verify_audit(reg.ws).ok


@pytest.mark.hostile
def test_the_panels_roll_back_checks_the_role_and_the_gates(reg, monkeypatch, hostile):
    reg.promote("tickets:v2", reason="hotfix", force=True)  # production: v1 -> v2, so a rollback has a target
    before = state(reg)
    monkeypatch.setenv("FMOPS_USER", "carol")  # a viewer
    p = RegistryPanel(Registry(reg.ws, log=False), "tickets")
    p.table.button("tickets:v2").click()
    p.ask("rollback")
    hostile("a viewer presses the registry panel's Roll back")
    p.confirm.go.click()
    assert "carol may not roll an alias back" in p.message.value and "fmops-error" in p.message.value
    assert state(reg) == before
    monkeypatch.setenv("FMOPS_USER", "alice")
    p.table.button("tickets:v3").click()  # never approved, never production: rolling back "to the selected"
    p.ask("rollback")
    hostile("the registry panel rolls production back to a never-approved selected version")
    p.confirm.go.click()
    assert "requires 2 approval(s)" in p.message.value and "fmops-error" in p.message.value
    assert state(reg) == before
    p.table.button("tickets:v2").click()
    p.ask("rollback")
    p.confirm.go.click()  # a maintainer, back to the previous target: allowed
    assert reg.get("tickets:production").id == "tickets:v1" and "fmops-ok" in p.message.value


@pytest.mark.hostile
def test_the_magic_acknowledges_an_alert_only_with_the_alert_role(reg, monkeypatch, hostile):
    a = raise_alert(reg.ws, "drift-watch", "drift on channel", subject="tickets:v1")
    monkeypatch.setenv("FMOPS_USER", "carol")  # a viewer
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        hostile("a viewer runs `%fmops alerts --ack ID`")
        with pytest.raises(UsageError, match="carol may not acknowledge an alert"):
            ip.run_line_magic("fmops", f"alerts --ack {a['id']}")
        assert [x["id"] for x in alerts(reg.ws)] == [a["id"]]  # still open
        monkeypatch.setenv("FMOPS_USER", "alice")
        ip.run_line_magic("fmops", f"alerts --ack {a['id']}")
        assert alerts(reg.ws) == []
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()
    monkeypatch.setenv("FMOPS_USER", "carol")
    with pytest.raises(NotPermitted, match="carol may not acknowledge an alert"):  # the CLI's check: the same words
        check_role("alert", reg.ws)


@pytest.mark.hostile
def test_the_stored_card_shows_hostile_text_as_text(tmp_path, monkeypatch, hostile):
    monkeypatch.setenv("FMOPS_USER", "<b>mallory</b>")
    reg = Registry(log=False)
    hostile("HTML, a javascript: link, math and table characters in description, intended use, tags and user name")
    v = reg.register("m", weights(tmp_path / "w.safetensors"),
                     description="<img src=x onerror=alert(1)> see [docs](javascript:alert(1))",
                     intended_use="$\\frac{1}{0}$ | <script>x()</script>",
                     tags=["a|b", "<i>t</i>"], metrics={"acc": 0.5})
    card = reg.card(v, stored=True)
    for raw in ("<img", "<script", "<b>", "<i>", "](javascript:", "$\\frac"):
        assert raw not in card, raw
    assert "&lt;img src=x onerror=alert(1)&gt;" in card and "&lt;b&gt;mallory&lt;/b&gt;" in card
    assert "a\\|b" in card
    assert "| metric | value | better |" in card  # the card's own tables stay tables
