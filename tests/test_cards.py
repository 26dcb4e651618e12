"""Model cards (issue 16, item 6): the Hugging Face layout, built from the registry when read — so approvals, alerts and
rollbacks appear as they happen — rendered as Markdown in the panel with hostile text kept as text, and exported with
the model."""
import yaml
import pytest
from fmops_nb.core import Workspace
from fmops_nb.registry import Registry
from fmops_nb.governance import approve
from fmops_nb.monitor import raise_alert
from fmops_nb.cards import card_facts, model_card
from fmops_nb.html import card_html
from tiny import weights

IMG = "<img src=x onerror=alert(1)>"




@pytest.fixture
def reg(tmp_path, monkeypatch):
    monkeypatch.setenv("FMOPS_USER", "alice")
    r = Registry(Workspace.open(tmp_path / ".fmops"), log=False)
    r.register("tickets", weights(tmp_path / "a.safetensors"), metrics={"accuracy": 0.91, "loss": 0.3},
               description="Routes support tickets.", intended_use="Internal routing only.", tags=["nlp", IMG],
               data={"train": {"fingerprint": "sha256:" + "ab" * 32, "rows": 1200}})
    r.register("tickets", weights(tmp_path / "b.safetensors", (1.0, 1.0)), parent="tickets:v1",
               metrics={"accuracy": 0.93})
    return r


def sections(card: str) -> list[str]:
    return [line[3:] for line in card.splitlines() if line.startswith("## ")]


def test_the_card_follows_the_hub_layout_with_metadata_fingerprints_and_metrics(reg):
    card = reg.card("tickets:v1")
    assert card == model_card(reg, reg.get("tickets:v1"))  # the registry's card is the live one
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "safetensors" and meta["tags"] == ["fmops", "nlp", IMG]
    assert meta["fmops"]["data"] == {"train": "sha256:" + "ab" * 32}
    (res,) = meta["model-index"][0]["results"]
    assert {m["type"]: m["value"] for m in res["metrics"]} == {"accuracy": 0.91, "loss": 0.3}
    assert body.lstrip().startswith("# tickets:v1")
    assert sections(card) == ["Model details", "Intended use", "Out-of-scope use", "Bias, risks and limitations",
                              "Training data", "Evaluation", "Lineage", "Approvals", "Known alerts and incidents",
                              "Files"]
    assert "| train | sha256:" + "ab" * 32 + " | 1200 |" in card and "Internal routing only." in card
    assert "Derived from it: tickets:v2" in card and "Ancestors: tickets:v1" in reg.card("tickets:v2")
    assert reg.card("tickets:v1", stored=True).startswith("# tickets:v1")  # the registration-time card stays


def test_the_card_is_kept_current_as_approvals_alerts_and_rollbacks_arrive(reg, monkeypatch):
    before = reg.card("tickets:v2")
    assert "_No approvals recorded._" in before and "_No alert names this version._" in before
    monkeypatch.setenv("FMOPS_USER", "bob")
    approve("tickets:v2", reason=f"fine on the March set {IMG}", ws=reg.ws)
    monkeypatch.setenv("FMOPS_USER", "alice")
    reg.promote("tickets:v1", reason="first release")
    reg.promote("tickets:v2", reason="second release")
    raise_alert(reg.ws, "accuracy-drop", f"accuracy of tickets:v2 fell to 0.7 {IMG}", "critical", "tickets:v2",
                sinks=[])
    raise_alert(reg.ws, "other", "tickets:v20 is unrelated", "info", "tickets:v20", sinks=[])
    reg.rollback("tickets:production", reason="incident 7")
    f = card_facts("tickets:v2", reg=reg)
    assert [a["reviewer"] for a in f["approvals"]] == ["bob"]
    assert [a["policy"] for a in f["alerts"]] == ["accuracy-drop"]  # not the alert about tickets:v20
    assert [(r["alias"], r["to"], r["reason"]) for r in f["rollbacks"]] == [("production", "tickets:v1", "incident 7")]
    card = reg.card("tickets:v2")
    assert "| bob |" in card and "Promoted to production" in card and "incident 7" in card
    assert yaml.safe_load(card.split("---\n")[1])["fmops"]["approvals"] == 1


def test_slices_are_in_the_evaluation_with_their_sizes(reg):
    v = reg.get("tickets:v2")
    v.meta["metrics"]["slices"] = {"channel": {"email": {"accuracy": 0.95, "n": 900},
                                               "chat | sms": {"accuracy": 0.81, "n": 37}}}
    card = model_card(reg, v)
    ev = card[card.index("## Evaluation"):card.index("## Lineage")]
    assert "### Slices by channel" in ev and "| segment | n | accuracy |" in ev
    assert "| email | 900 | 0.95 |" in ev and "| chat \\| sms | 37 | 0.81 |" in ev  # a | in a name stays in its cell
    assert "slices" not in yaml.safe_load(card.split("---\n")[1])["model-index"][0]["results"][0]["metrics"]


def test_the_panel_renders_the_card_as_markdown_and_hostile_text_stays_text(reg, monkeypatch):
    monkeypatch.setenv("FMOPS_USER", "bob")
    approve("tickets:v1", reason=f"ok {IMG}", ws=reg.ws)
    html = card_html(reg.card("tickets:v1"))
    assert "<h1>tickets:v1</h1>" in html and "<h2>Approvals</h2>" in html and "<table>" in html
    assert "<details class='fmops-card-meta'><summary>metadata</summary><pre>library_name: safetensors" in html
    assert "<img" not in html and html.count("&lt;img src=x onerror=alert(1)&gt;") >= 2  # a tag and a reason
    from fmops_nb.widgets import RegistryPanel
    detail = RegistryPanel(reg, "tickets")._detail("tickets:v1")  # the registry panel's view of the picked version
    assert "<h2>Approvals</h2>" in detail and "<td>bob</td>" in detail and "<img" not in detail


def test_the_card_is_exported_with_the_model(reg, tmp_path):
    out = reg.export("tickets:v1", tmp_path / "out")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "model.safetensors"]
    assert (out / "README.md").read_text() == reg.card("tickets:v1")


def test_the_rows_a_slice_metric_was_measured_on_show_as_counts_not_as_metrics(reg, tmp_path):
    import pandas as pd
    from fmops_nb.slices import slice_metrics
    # real slices of real predictions: two e-mail tickets have no label yet, so accuracy saw 4 of the 6
    df = pd.DataFrame({"channel": ["email"] * 6 + ["chat"] * 4, "label": [1, 0, 1, None, None, 1, 0, 1, 0, 1],
                       "prediction": [1, 0, 0, 1, 0, 1, 0, 1, 1, 1]})
    rep = slice_metrics(df, by="channel", min_n=1)
    assert rep.to_metrics()["channel"]["email"]["n_accuracy"] == 4  # what the card used to show as a metric column
    hostile = {IMG: {"accuracy": 0.5, "n": 12345, "n_accuracy": 2000, IMG: 0.25, f"n_{IMG}": 7}}
    v = reg.register("tickets", weights(tmp_path / "c.safetensors", (2.0, 1.0)), parent="tickets:v2",
                     metrics={"accuracy": 0.75, "slices": {**rep.to_metrics(), "region": hostile}})
    card = reg.card(v.id)
    ev = card[card.index("## Evaluation"):card.index("## Lineage")]
    assert "n_accuracy" not in ev and "n_error_rate" not in ev and "n_<img" not in ev
    assert "| segment | n | accuracy | error_rate | selection_rate |" in ev
    assert "| email | 6 | 0.75 (n=4) | 0.25 (n=4) | 0.5 |" in ev and "| chat | 4 | 0.75 | 0.25 | 0.75 |" in ev
    md = "&lt;img src=x onerror=alert(1)&gt;"  # in the Markdown as text, for renderers that pass HTML through
    assert f"| segment | n | {md} | accuracy |" in ev and IMG not in card.split("---\n", 2)[2]
    assert f"| {md} | 12345 | 0.25 (n=7) | 0.5 (n=2000) |" in ev  # a count is written whole, never 1.234e+04
    assert ev.count("0.82 (n=540) is 0.82 on 540 rows") == 2  # what the counts mean, under each table with them
    html = card_html(card)
    assert "<img" not in html and "<td>0.75 (n=4)</td>" in html and "<th>n_accuracy</th>" not in html
    shown = "&lt;img src=x onerror=alert(1)&gt;"  # a hostile segment and metric name, as text
    assert f"<td>{shown}</td>" in html and f"<th>{shown}</th>" in html
