"""The registry panel's table and actions on a real registry: sortable metric columns, a click that selects a version,
Diff, and Promote / Roll back that ask first and go through the audited registry calls the magic makes."""
import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from fmops_nb.audit import audit_log
from fmops_nb.core import Workspace
from fmops_nb.registry import Registry
from fmops_nb.widgets import RegistryPanel


def st_file(path, tensors: dict):
    "A real safetensors file from numpy arrays."
    from safetensors.numpy import save_file
    save_file({k: np.asarray(v, np.float32) for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture
def reg(tmp_path):
    r = Registry(log=False)
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    r.register("clf", st_file(tmp_path / "a.safetensors", {"enc.w": w, "head.w": np.ones((2, 3))}),
               metrics={"accuracy": 0.80, "latency_ms": (41.0, "lower")}, aliases=["production"])
    r.register("clf", st_file(tmp_path / "b.safetensors", {"enc.w": w, "head.w": np.full((2, 3), 1.5)}),
               parent="clf:v1", metrics={"accuracy": 0.86, "latency_ms": (44.0, "lower")}, aliases=["candidate"])
    r.register("clf", st_file(tmp_path / "c.safetensors", {"enc.w": w + 1, "head.w": np.ones((2, 3))}),
               parent="clf:v2", metrics={"accuracy": 0.83})
    return r


def names(panel):
    return [row[0].description for row in panel.table.slots[:len(panel.table._shown)]]


def head(panel, title):
    return next(b for b in panel.table.heads if b.description.split(" ")[0] == title)


def test_versions_sort_by_each_metric_best_first_and_a_click_selects(reg):
    p = RegistryPanel(reg, "clf")
    assert names(p) == ["clf:v1", "clf:v2", "clf:v3"] and p.table.selected == "clf:v3"  # newest selected
    assert [h.description for h in p.table.heads] == ["version ▲", "aliases", "format", "from", "created", "by",
                                                     "accuracy", "latency_ms"]
    head(p, "accuracy").click()
    assert names(p) == ["clf:v2", "clf:v3", "clf:v1"] and p.table.caption.value.startswith("Sorted by accuracy, best first.")
    head(p, "accuracy").click()
    assert names(p) == ["clf:v1", "clf:v3", "clf:v2"] and "worst first" in p.table.caption.value
    head(p, "latency_ms").click()  # lower is better: best first is lowest first; v3 has none: last
    assert names(p) == ["clf:v1", "clf:v2", "clf:v3"] and "best first" in p.table.caption.value
    assert "fmops-selected" in p.table.slots[2][0]._dom_classes  # v3 is still the selected one
    p.table.button("clf:v1").click()
    assert p.table.selected == "clf:v1" and p.version.value == "clf:v1"
    assert "derived: clf:v2" in p.detail.value and "production → v1 (promote" in p.detail.value  # alias history
    cells = [w.value for w in p.table.slots[0][1:]]
    assert "<code>production</code>" in cells[0] and "0.8" in cells[5]


def test_diff_compares_the_alias_version_with_the_selected_one(reg):
    p = RegistryPanel(reg, "clf")
    p.table.button("clf:v2").click()
    assert p.diff_button.description == "Diff with production"
    p.diff_button.click()
    d = p.diff_view.children[0].diff
    assert d.headline().startswith("clf:v1 → clf:v2") and [t.name for t in d.changed_tensors] == ["head.w"]
    p.table.button("clf:v1").click()  # production itself: compared with its parent, and it has none
    assert p.diff_button.description == "Diff with its parent"
    assert p.show_diff() is None and "clf:v1 has no parent" in p.message.value


def test_promote_asks_first_then_moves_the_alias_audited_as_the_magic_does(reg):
    p = RegistryPanel(reg, "clf")
    p.table.button("clf:v2").click()
    assert p.promote_button.description == "Promote to production…" and not p.promote_button.disabled
    p.promote_button.click()
    assert p.confirm.layout.display is None  # the question is shown ...
    assert "Promote clf:v2 to clf:production (now clf:v1)?" in p.confirm.question.value
    assert reg.get("clf:production").id == "clf:v1"  # ... and nothing moved yet
    p.confirm.cancel.click()
    assert p.confirm.layout.display == "none" and reg.get("clf:production").id == "clf:v1"
    p.promote_button.click()
    p.confirm.reason.value = "better on the March holdout"
    p.confirm.go.click()
    assert reg.get("clf:production").id == "clf:v2"
    assert "clf:production → v2 (was v1)" in p.message.value and "fmops-ok" in p.message.value
    h = reg.history("clf", "production")[-1]
    assert (h["action"], h["previous"], h["version"], h["reason"]) == ("promote", "clf:v1", "clf:v2",
                                                                       "better on the March holdout")
    row = audit_log(reg.ws, "clf:production")[0]
    assert row["action"] == "promote" and row["after"] == {"version": "clf:v2", "reason": "better on the March holdout"}
    assert "production" in p.table.items["clf:v2"]["aliases"]  # the table shows where the alias points now
    assert p.promote_button.disabled  # v2 is production: nothing to promote


def test_rollback_back_to_the_previous_or_to_the_selected_version(reg):
    p = RegistryPanel(reg, "clf")
    reg.promote("clf:v2", reason="first move")
    reg.promote("clf:v3", reason="second move")
    p.reload()
    p.table.button("clf:v3").click()  # production's own version: back to where it pointed before
    assert "Roll clf:production back from clf:v3 to the version it pointed at before?" in p.ask("rollback")
    p.confirm.reason.value = "latency regression"
    p.confirm.go.click()
    assert reg.get("clf:production").id == "clf:v2" and "clf:production → v2 (was v3)" in p.message.value
    p.table.button("clf:v1").click()  # an older version: production rolled back to it
    assert "Roll clf:production back to clf:v1 (now clf:v2)?" in p.ask("rollback")
    p.confirm.go.click()
    assert reg.get("clf:production").id == "clf:v1"
    acts = [(r["action"], r["after"]["version"]) for r in audit_log(reg.ws, "clf:production")[:2]]
    assert acts == [("rollback-to", "clf:v1"), ("rollback", "clf:v2")]
    p.alias.value = "staging"  # an alias the model does not have: nothing to roll back
    assert p.rollback_button.disabled and p.rollback_button.description == "Roll back staging…"


def test_a_blocking_gate_is_said_and_forcing_needs_a_reason(reg, isolated_workspace):
    ws = Workspace.open()
    ws.config_path.write_text(ws.config_path.read_text() + '\n[[monitor.policies]]\nname = "no-worse-candidate"\n'
                              'on = "promote"\nwhen = "candidate.accuracy < current.accuracy"\naction = "block"\n')
    reg = Registry(Workspace.open(), log=False)
    reg.promote("clf:v2", reason="better")
    p = RegistryPanel(reg, "clf")
    p.table.button("clf:v3").click()  # accuracy 0.83 < 0.86: the gate blocks
    p.ask("promote")
    p.confirm.go.click()
    assert reg.get("clf:production").id == "clf:v2"
    assert "no-worse-candidate" in p.message.value and "fmops-error" in p.message.value
    assert "tick &#x27;force&#x27; and give a reason" in p.message.value
    assert audit_log(reg.ws, "clf:production")[0]["action"] == "promote-blocked"
    p.ask("promote")
    p.confirm.force.value = True
    p.confirm.go.click()  # forced without a reason: refused before the registry is asked
    assert "Give a reason to force past a gate" in p.message.value and reg.get("clf:production").id == "clf:v2"
    p.ask("promote")
    p.confirm.force.value, p.confirm.reason.value = True, "latency matters more this week"
    p.confirm.go.click()
    assert reg.get("clf:production").id == "clf:v3" and "clf:production → v3 (was v2)" in p.message.value
    assert "forced past no-worse-candidate" in reg.history("clf", "production")[-1]["reason"]


def test_the_magic_words_a_move_as_the_panel_does(reg):
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        with capture_output() as out:
            ip.run_line_magic("fmops", "promote clf:v2 --reason magic")
        assert out.stdout.strip() == "production → v2"
        with capture_output() as out:
            ip.run_line_magic("fmops", "rollback clf:production")
        assert out.stdout.strip() == "clf:production → v1"
        with capture_output() as shown:
            res = ip.run_cell("%fmops versions clf", store_history=True)
        assert res.success and len(shown.outputs) == 1  # the panel, once
        p = RegistryPanel(Registry(log=False), "clf")
        assert "production → v1 (was v2) (rollback)" in p.detail.value  # the panel's history: the same words
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()
