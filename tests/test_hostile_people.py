"""Hostile teammates and hostile files against the people-around-the-model features: model cards, slices, review
queues, feedback imports and approvals. Each test feeds what a careless or malicious person could, and checks what a
user would see: text stays text, no row is lost, a refusal stores nothing."""
import json
import yaml
import pytest
import pandas as pd
from fmops_nb import feedback, review
from fmops_nb.core import Workspace
from fmops_nb.errors import ValidationError
from fmops_nb.registry import Registry
from fmops_nb.governance import approve
from fmops_nb.cards import card_facts
from fmops_nb.html import card_html
from fmops_nb.slices import slice_metrics
from tiny import weights

RTL = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: 'exe.gnp' shown as 'png.exe'
HOSTILE = ("<script>alert(1)</script> <img src=x onerror=alert(2)> [click](javascript:alert(3)) "
           f"$\\frac{{1}}{{2}}$ {RTL}gnp.exe <javascript:alert(4)>")


@pytest.fixture
def reg(tmp_path, monkeypatch):
    monkeypatch.setenv("FMOPS_USER", "alice")
    return Registry(Workspace.open(tmp_path / ".fmops"), log=False)


@pytest.mark.hostile
def test_the_card_markdown_shows_hostile_text_as_text_in_any_markdown_renderer(reg, tmp_path, hostile):
    from markdown_it import MarkdownIt
    hostile("script, img onerror, javascript: links, $math$ and an RTL override in a card's free text")
    reg.register("m", weights(tmp_path / "a.safetensors"), description=HOSTILE, intended_use=HOSTILE,
                 tags=["nlp", HOSTILE, "a\n---\n<script>x</script>"],
                 metrics={"accuracy": 0.9, "slices": {HOSTILE: {HOSTILE: {"accuracy": 0.5, "n": 3}}}})
    approve("m:v1", reason=HOSTILE, ws=reg.ws)
    card = reg.card("m:v1")
    body = card.split("\n---\n", 1)[1]
    # a renderer that passes raw HTML through and links to any URL (like Python-Markdown in mkdocs) gets no live markup
    md = MarkdownIt("commonmark").enable("table")
    md.validateLink = lambda url: True
    html = md.render(body)
    assert "<script" not in html and "<img" not in html and "javascript:" not in html.replace(
        "[click](javascript:alert(3))", "").replace("&lt;javascript:alert(4)&gt;", "")
    assert "<a " not in html  # no link at all: the text only looked like one
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4  # description, use, slice name, reason
    assert "$\\frac" not in body and "\\$" in body  # no $...$ for math renderers (Jupyter, GitHub)
    assert RTL not in body and "\\u202egnp.exe" in body  # the override is shown, not obeyed (the YAML keeps the data as is)
    # the YAML front matter and the plain data keep the text exactly
    assert card.startswith("---\n")
    meta = yaml.safe_load(card[4:card.index("\n---\n")])  # where a Hub parser ends the metadata: a line of ---
    assert meta["tags"] == ["fmops", "nlp", HOSTILE, "a\n---\n<script>x</script>"]
    f = card_facts("m:v1", reg=reg)
    assert f["description"] == HOSTILE and f["approvals"][0]["reason"] == HOSTILE
    assert json.loads(json.dumps(f))["slices"] == {HOSTILE: {HOSTILE: {"accuracy": 0.5, "n": 3}}}
    # a link definition in one field and its use in another make no link either; a link to a web page stays one
    hostile("a Markdown link definition to javascript: in the description, used from the intended use")
    reg.register("m", weights(tmp_path / "b.safetensors", (2.0, 1.0)), description="[ref]: javascript:alert(5)",
                 intended_use="See [here][ref], [docs](https://example.com/docs) and [x](JavaScript:alert(6)).")
    two = md.render(reg.card("m:v2").split("\n---\n", 1)[1])
    assert "javascript" not in two.lower().replace("[ref]: javascript:alert(5)", "").replace(
        "[x](javascript:alert(6))", "") and two.count("<a ") == 1 and '<a href="https://example.com/docs">docs</a>' in two
    # and the panel's view still reads as the text that was given
    shown = card_html(card)
    assert "<script" not in shown and "<img" not in shown and "href=" not in shown
    assert "&lt;img src=x onerror=alert(2)&gt; [click](javascript:alert(3))" in shown


@pytest.mark.hostile
def test_segments_whose_redacted_names_collide_keep_their_own_rows(hostile):
    hostile("two segments (e-mail addresses) that redact to the same name")
    df = pd.DataFrame({"user": ["alice@example.com"] * 3 + ["bob@example.org"] * 5 + [None] * 2,
                       "label": [1] * 10, "prediction": [1, 1, 1, 0, 0, 0, 0, 0, 1, 1]})
    segs = slice_metrics(df, by="user", min_n=1).to_metrics()["user"]
    assert sum(s["n"] for s in segs.values()) == 10  # no segment overwrote another
    assert sorted((s["n"], s["accuracy"]) for s in segs.values()) == [(2, 1.0), (3, 1.0), (5, 0.0)]
    assert not any("alice" in k or "bob" in k for k in segs)  # still redacted
    assert len(segs) == 3


@pytest.mark.hostile
def test_a_review_refuses_a_judgement_kind_its_queue_does_not_offer(tmp_path, monkeypatch, hostile):
    monkeypatch.setenv("FMOPS_USER", "rita")
    ws = Workspace.open(tmp_path / ".fmops")
    items = [{"input": "refund please", "output": "billing"}, {"input": "hi", "output": "other"}]
    thumbs = review.Review(review.create("thumbs-q", items, task="thumbs", ws=ws), ws=ws)
    labels = review.Review(review.create("label-q", items, labels=["billing", "other"], ws=ws), ws=ws)
    for r, value, kind in ((thumbs, "made-up", "label"), (thumbs, 5, "rating"), (labels, 1, "rating"),
                           (labels, "up", "thumbs")):
        hostile(f"a {kind} {value!r} in a {r.queue.task} queue")
        with pytest.raises(ValidationError, match="judged by"):
            r.judge(value, kind=kind)
        assert r.pos == 0
    assert len(feedback.query(ws=ws)) == 0  # nothing stored
    thumbs.judge("up"); labels.judge("a note", kind="note"); labels.judge("billing")
    labels.judge("typo fixed", kind="correction")
    assert sorted(feedback.query(ws=ws)["kind"]) == ["correction", "label", "note", "thumbs"]


@pytest.mark.hostile
@pytest.mark.parametrize("line, says", [
    ({"at": "0001-01-01T00:00:00+14:00"}, "outside the times"),  # before year 1 in UTC
    ({"at": "9999-12-31T23:59:59-14:00"}, "outside the times"),  # after year 9999 in UTC
    ({"meta": "deep"}, "nested too deeply"),  # {"a": [[[...]]]} 5,000 deep
    ("[" * 100_000, "nested too deeply"),  # json.loads itself runs out of stack
])
def test_a_feedback_file_with_an_impossible_time_or_deep_nesting_is_refused_by_line(tmp_path, monkeypatch, hostile,
                                                                                   line, says):
    monkeypatch.setenv("FMOPS_USER", "alice")
    ws = Workspace.open(tmp_path / ".fmops")
    hostile(f"a feedback line with {str(line)[:40]}")
    good = json.dumps({"input": "x", "kind": "label", "value": "a"})
    bad = line if isinstance(line, str) else json.dumps({"input": "y", "kind": "label", "value": "b"} | line)
    if line == {"meta": "deep"}:
        bad = bad.replace('"deep"', '{"a": ' + "[" * 5000 + "]" * 5000 + "}")
        deep = []
        for _ in range(5000): deep = [deep]
        line = {"meta": {"a": deep}}
    p = tmp_path / "f.jsonl"
    p.write_text(good + "\n" + bad + "\n")
    with pytest.raises(ValidationError, match=f"Line 2 of .*{says}.*Nothing from the file was written"):
        feedback.import_file(p, ws=ws)
    assert len(feedback.query(ws=ws)) == 0 and feedback.verify(ws) == []
    if not isinstance(line, str):  # the Python API says the same
        with pytest.raises(ValidationError, match=says):
            feedback.log("y", kind="label", value="b", ws=ws, **line)


def _signoff_workspace(tmp_path, roles: str = ""):
    "A workspace whose production promotions need two approvals; one model with a version."
    ws = Workspace.open(tmp_path / ".fmops")
    (tmp_path / ".fmops" / "config.toml").write_text(roles + """
[[monitor.policies]]
name = "two-approvers"
on = "promote"
when = "alias == 'production'"
require = {approvals = 2, role = "approver"}
""")
    ws = Workspace.open(tmp_path / ".fmops")
    reg = Registry(ws, log=False)
    reg.register("m", weights(tmp_path / "a.safetensors"))
    return ws, reg


@pytest.mark.hostile
@pytest.mark.parametrize("twin", ["bob ", " bob", "bob\u200b", "b\u202eob", "bob\u00a0"])
def test_one_person_cannot_count_twice_under_a_name_that_only_looks_different(tmp_path, monkeypatch, hostile, twin):
    from fmops_nb.audit import audit_log
    from fmops_nb.governance import approvals
    from fmops_nb.errors import PromotionBlocked
    monkeypatch.setenv("FMOPS_USER", "bob")
    ws, reg = _signoff_workspace(tmp_path)  # no roles declared: every reviewer counts
    approve("m:v1", reason="looked at it", ws=ws)
    rows = len(audit_log(ws))
    hostile(f"a second approval by {twin!r}, which prints like 'bob'")
    monkeypatch.setenv("FMOPS_USER", twin)
    with pytest.raises(ValidationError, match="FMOPS_USER"):
        approve("m:v1", reason="looked again", ws=ws)
    assert [a.reviewer for a in approvals("m:v1", ws)] == ["bob"] and len(audit_log(ws)) == rows
    monkeypatch.setenv("FMOPS_USER", "alice")
    with pytest.raises(PromotionBlocked, match=r"has 1 \(bob\)"):
        reg.promote("m:v1")


@pytest.mark.hostile
def test_a_refusal_for_want_of_a_role_changes_nothing_and_writes_nothing(tmp_path, monkeypatch, hostile):
    from fmops_nb.audit import audit_log
    from fmops_nb.governance import approvals
    from fmops_nb.errors import NotPermitted, PromotionBlocked
    monkeypatch.setenv("FMOPS_USER", "alice")
    ws, reg = _signoff_workspace(tmp_path, '[roles]\nalice = ["maintainer"]\ncarol = ["viewer"]\n')
    rows = len(audit_log(ws))
    monkeypatch.setenv("FMOPS_USER", "carol")
    hostile("a viewer approves, then promotes to staging and to production with --force")
    with pytest.raises(NotPermitted, match="needs the approver role"):
        approve("m:v1", reason="lgtm", ws=ws)
    for to, force in (("staging", False), ("production", True)):
        with pytest.raises(PromotionBlocked, match="needs the maintainer role"):
            reg.promote("m:v1", to=to, force=force, reason="because")
    assert approvals("m:v1", ws) == [] and reg.get("m:v1").aliases == [] and len(audit_log(ws)) == rows


@pytest.mark.hostile
def test_a_review_item_for_a_version_that_is_not_or_no_longer_registered(reg, tmp_path, hostile):
    from fmops_nb.errors import NotFoundError
    reg.register("m", weights(tmp_path / "a.safetensors"))
    reg.register("m", weights(tmp_path / "b.safetensors", (2.0, 1.0)))
    hostile("a queue whose item names a version the registry never had")
    with pytest.raises(NotFoundError, match=r"Item 2: .*'m:v99' is not registered.*Nothing was stored"):
        review.create("q", [{"input": "a", "version": "m:v1"}, {"input": "b", "version": "m:v99"}], task="thumbs",
                      ws=reg.ws)
    assert review.queues(reg.ws) == []  # nothing stored
    q = review.create("q", [{"input": "a", "output": "x", "version": "m:v1"}, {"input": "b", "version": "m:v2"}],
                      task="thumbs", ws=reg.ws)
    hostile("the version of a queued item is deleted before it is judged")
    reg.delete("m:v1")
    r = review.Review(q, ws=reg.ws)
    with pytest.raises(NotFoundError, match=r"Item 1 of the queue q .*m:v1.*deleted.*skip it"):
        r.judge("up")
    assert r.pos == 0 and len(feedback.query(ws=reg.ws)) == 0
    r.skip(); r.judge("down")  # the rest of the queue goes on
    assert list(feedback.query(ws=reg.ws)["version"]) == ["m:v2"]


def _make_queue(home, which, barrier, out):
    "In a process of its own: wait for the other, then store queue 'q' with its own items, and judge its first item."
    import os
    os.environ["FMOPS_USER"] = f"user{which}"
    from fmops_nb import review as R
    from fmops_nb.core import Workspace
    ws = Workspace.open(home)
    items = [{"input": f"from process {which}, item {i}"} for i in range(50)]
    barrier.wait()
    try:
        q = R.create("q", items, task="thumbs", ws=ws)
        R.Review(q, ws=ws).judge("up")
        out.put((which, "created", [it["input"] for it in q.items]))
    except Exception as e:
        out.put((which, type(e).__name__, str(e)))


def test_two_processes_storing_one_queue_name_at_once_never_mix_their_items(tmp_path):
    import multiprocessing as mp
    home = tmp_path / ".fmops"
    Workspace.open(home)
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_make_queue, args=(home, w, barrier, out)) for w in (1, 2)]
    for p in procs: p.start()
    got = sorted(out.get(timeout=120) for _ in procs)
    for p in procs: p.join(timeout=60)
    assert sorted(r[1] for r in got) == ["ValidationError", "created"], got
    (won,) = [r for r in got if r[1] == "created"]
    (lost,) = [r for r in got if r[1] != "created"]
    assert "already holds other items" in lost[2]
    q = review.load("q", Workspace.open(home))
    assert [it["input"] for it in q.items] == won[2] == [f"from process {won[0]}, item {i}" for i in range(50)]
    assert list(feedback.query(ws=Workspace.open(home))["reviewer"]) == [f"user{won[0]}"]
    assert feedback.verify(Workspace.open(home)) == []


@pytest.mark.hostile
def test_a_feedback_row_without_its_input_is_named_not_a_type_error(tmp_path, monkeypatch, hostile):
    import pyarrow as pa
    import pyarrow.parquet as pq
    monkeypatch.setenv("FMOPS_USER", "alice")
    ws = Workspace.open(tmp_path / ".fmops")
    good = {"input": "x", "kind": "label", "value": "a"}
    hostile("a JSON Lines row with no input field")
    p = tmp_path / "f.jsonl"
    p.write_text(json.dumps(good) + "\n" + json.dumps({"kind": "label", "value": "b"}) + "\n")
    with pytest.raises(ValidationError, match=r"Line 2 of .*input is missing.*Nothing from the file was written"):
        feedback.import_file(p, ws=ws)
    hostile("a Parquet file whose input cell is null")
    pq.write_table(pa.table({"input": pa.array(["x", None], pa.string()), "kind": ["label"] * 2,
                             "value": ["a", "b"]}), tmp_path / "f.parquet")
    with pytest.raises(ValidationError, match=r"Row 2 of .*input is missing.*Nothing from the file was written"):
        feedback.import_file(tmp_path / "f.parquet", ws=ws)
    hostile("a DataFrame whose input is NaN")
    with pytest.raises(ValidationError, match=r"Record 2: .*input is missing"):
        feedback.log_many(pd.DataFrame({"input": ["x", float("nan")], "kind": "label", "value": ["a", "b"]}), ws=ws)
    assert len(feedback.query(ws=ws)) == 0


@pytest.mark.hostile
def test_a_rating_queue_takes_only_the_whole_numbers_of_its_scale(tmp_path, monkeypatch, hostile):
    monkeypatch.setenv("FMOPS_USER", "rita")
    ws = Workspace.open(tmp_path / ".fmops")
    q = review.create("r", [{"input": "a"}, {"input": "b"}], task="rating", scale=(1, 5), ws=ws)
    r = review.Review(q, ws=ws)
    for bad in (3.5, 0, 6, "4", float("nan")):
        hostile(f"a rating of {bad!r} on a queue rated 1..5 by keys")
        with pytest.raises(ValidationError, match="whole number from 1 to 5"):
            r.judge(bad)
    assert r.pos == 0 and len(feedback.query(ws=ws)) == 0
    r.judge(4.0)  # a whole number given as a float is that number
    other = review.Review(q, reviewer="sam", ws=ws)
    other.judge(4)
    got = feedback.query(ws=ws)
    assert [json.dumps(v) for v in got["value"]] == ["4", "4"]  # stored alike: the same rating, not a disagreement
    assert review.agreement("r", ws)[0]["agreed"] == 1


@pytest.mark.hostile
def test_one_giant_line_in_a_feedback_file_is_refused_without_reading_it_into_memory(tmp_path, monkeypatch, hostile):
    import tracemalloc
    monkeypatch.setenv("FMOPS_USER", "alice")
    ws = Workspace.open(tmp_path / ".fmops")
    hostile("a JSON Lines file whose second line is one 40 MB record")
    p = tmp_path / "f.jsonl"
    with open(p, "w") as f:
        f.write(json.dumps({"input": "x", "kind": "label", "value": "a"}) + "\n")
        f.write('{"input": "' + "y" * 40_000_000 + '", "kind": "label", "value": "b"}\n')
    tracemalloc.start()
    try:
        with pytest.raises(ValidationError, match=r"Line 2 of .* longer than .*Nothing from the file was written"):
            feedback.import_file(p, ws=ws)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak  # the line was not read whole (it is 40 MB)
    assert len(feedback.query(ws=ws)) == 0


@pytest.mark.hostile
def test_a_value_that_reads_missing_is_not_folded_into_the_rows_with_no_value(hostile):
    hostile("a segment value that is literally '(missing)', beside rows with no value")
    df = pd.DataFrame({"region": ["(missing)"] * 4 + [None] * 2 + ["north"] * 3,
                       "label": [1] * 9, "prediction": [0] * 4 + [1] * 5})
    segs = slice_metrics(df, by="region", min_n=1).to_metrics()["region"]
    assert {k: (s["n"], s["accuracy"]) for k, s in segs.items()} == {
        "(missing)": (2, 1.0), "(missing) #2": (4, 0.0), "north": (3, 1.0)}


@pytest.mark.hostile
def test_stored_slices_with_a_metric_measured_on_no_rows_are_refused(hostile):
    "A segment {'accuracy': 0.5, 'n': 0} would count as a regression with min_n=0: a metric needs rows."
    from fmops_nb.slices import check_slices
    for bad in ({"region": {"south": {"accuracy": 0.5, "n": 0}}},
                {"region": {"south": {"accuracy": 0.5, "n": 40, "n_accuracy": 0}}}):
        hostile(f"stored slices {bad}")
        with pytest.raises(ValidationError, match="is given for 0 rows"):
            check_slices(bad)
    check_slices({"region": {"south": {"n": 0}, "north": {"accuracy": 0.5, "n": 40, "n_accuracy": 3}}})  # still fine


@pytest.mark.hostile
def test_slices_by_columns_whose_names_collide_or_a_negative_min_n_are_refused(hostile):
    "by=[1, '1'] kept one column's segments under the other's name; min_n=-1 was taken."
    from fmops_nb.slices import slice_metrics
    df = pd.DataFrame({1: ["a", "b"] * 20, "1": ["x", "y"] * 20, "label": [0, 1] * 20, "prediction": [0, 1] * 20})
    hostile("slice_metrics(by=[1, '1'])")
    with pytest.raises(ValidationError, match="must have different names"):
        slice_metrics(df, by=[1, "1"])
    hostile("slice_metrics(min_n=-1)")
    with pytest.raises(ValidationError, match="min_n is the fewest rows"):
        slice_metrics(df, by="1", min_n=-1)
    assert set(slice_metrics(df, by=[1, "1"][1:], min_n=0).slices["1"]) == {"x", "y"}
