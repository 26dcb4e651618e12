"""Review queues (issue 16, item 2): queues from what fmops finds (a real drift report, a real version diff, low
confidence, a sample), judgements stored as they are made and resumed after a crash, two reviewers' kappa, the panel
driven by buttons and keys, and hostile text kept as text."""
import json
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from fmops_nb import feedback, review
from fmops_nb.core import Workspace
from fmops_nb.errors import FmopsError, NotFoundError, ValidationError


@pytest.fixture
def ws(isolated_workspace):
    return Workspace.open(isolated_workspace)


PREDS = pd.DataFrame({"id": [f"req-{i}" for i in range(8)],
                      "input": ["free money!!!", "lunch?", "WIN NOW", "minutes attached", "prize inside",
                                "see you", "act fast!!", "thanks"],
                      "prediction": ["spam", "ham", "ham", "ham", "spam", "ham", "ham", "ham"],
                      "confidence": [0.99, 0.97, 0.52, 0.9, 0.61, 0.95, 0.55, 0.98]})


# ------------------------------------------------------------------------------------------ sources
def test_a_queue_of_low_confidence_predictions_starts_with_the_least_confident(ws):
    q = review.open_review(PREDS, name="triage", labels=["spam", "ham"], n=3, id_column="id", ws=ws).queue
    assert [i["item"] for i in q.items] == ["req-2", "req-6", "req-4"]
    assert [i["output"] for i in q.items] == ["ham", "ham", "spam"]
    assert q.items[0]["meta"] == {"confidence": 0.52} and q.source == "low-confidence"
    # a random sample: the same seed, the same rows; every row of the table is a possible draw
    s1 = review.sample(PREDS, n=4, seed=3, id_column="id")
    assert s1 == review.sample(PREDS, n=4, seed=3, id_column="id") and len({i["item"] for i in s1}) == 4
    assert review.open_review(PREDS, random_sample=True, n=4, ws=ws).queue.source == "sample"


@pytest.mark.slow  # a real drift check of a text column (hashing embedder): a few seconds
def test_a_queue_from_a_real_drift_reports_least_like_reference_rows(ws):
    from fmops_nb.drift import drift
    g = np.random.default_rng(0)
    words = ["invoice", "refund", "delivery", "password", "order", "late", "broken", "thanks"]
    ref = pd.DataFrame({"msg": [" ".join(g.choice(words, 6)) for _ in range(150)]})
    odd = ["<img src=x onerror=alert(1)> bonjour ou est ma commande", "wo ist meine bestellung bitte",
           "dónde está mi pedido por favor"]
    cur = pd.DataFrame({"msg": [" ".join(g.choice(words, 6)) for _ in range(100)] + odd * 5})
    rep = drift(ref, cur, kinds={"msg": "text"}, embedder="hashing", cache=False, n_permutations=20)
    least = rep.columns["msg"].stats["least_like_reference"]
    rv = review.open_review(rep, labels=["in scope", "out of scope"], ws=ws)
    assert rv.queue.source == "drift" and len(rv) == len(least)
    assert [i["input"] for i in rv.queue.items] == [x["row"] for x in least]
    assert set(odd) <= {i["input"] for i in rv.queue.items}  # the foreign-language rows are what it asks about
    panel = review.ReviewPanel(rv)
    panel.review.pos = [i["input"] for i in rv.queue.items].index(odd[0])
    panel.show()
    assert "<img" not in panel.item.value and "&lt;img src=x onerror=alert(1)&gt;" in panel.item.value


def registered_pair(ws):
    "Two real versions (safetensors weights) whose predictions differ on some inputs."
    from safetensors.numpy import save_file
    from fmops_nb.registry import Registry
    reg = Registry(ws, log=False)
    for w in ([1.0, 0.0], [0.2, 3.0]):
        p = ws.root.parent / "w.safetensors"
        save_file({"w": np.array(w, dtype=np.float32)}, str(p))
        reg.register("spamclf", p)
    return reg


def predict(reg):
    "The classifier the weights define: spam when w0 * words + w1 * exclamation marks passes 3."
    from safetensors.numpy import load_file
    def run(version, inputs):
        w = next(load_file(str(p))["w"] for r, p in reg.files(version.id).items() if r.endswith(".safetensors"))
        return ["spam" if w[0] * len(x.split()) + w[1] * x.count("!") > 3 else "ham" for x in inputs]
    return run


def test_a_queue_from_a_real_version_diffs_flips_shows_both_outputs(ws):
    from fmops_nb.diff import Probe, diff
    reg = registered_pair(ws)
    texts = ["hi!", "this is a long but harmless note", "win!!", "ok", "four words here now!"]
    d = diff("spamclf:v1", "spamclf:v2", registry=reg, probe=Probe(texts, predict(reg)))
    flips = d.behaviour["flipped"]
    assert flips, "the two versions must disagree somewhere for this test"
    rv = review.open_review(d, ws=ws)
    q = rv.queue
    assert q.source == "diff" and q.labels == ["ham", "spam"] and len(q) == len(flips)
    it = q.items[0]
    assert (it["version"], it["other_version"]) == ("spamclf:v1", "spamclf:v2")
    assert (it["output"], it["other"]) == (flips[0]["a"], flips[0]["b"])
    html = review.item_html(it)
    assert "A: spamclf:v1" in html and "B: spamclf:v2" in html
    # a label on a flip judges both versions: the feedback metrics count it for each
    rv.judge(flips[0]["b"])
    m = feedback.metrics(queue=q.name, by="version", ws=ws)
    assert m["spamclf:v2"]["accuracy"] == 1.0 and m["spamclf:v1"]["accuracy"] == 0.0
    stored = feedback.query(queue=q.name, ws=ws)
    assert stored["meta"][0]["other_version"] == "spamclf:v2" and stored["version"][0] == "spamclf:v1"


def test_personal_data_in_a_queues_items_never_reaches_the_store_or_the_panel(ws, isolated_workspace):
    email, card = "jane.doe@example.com", "4111 1111 1111 1111"
    traffic = PREDS.assign(input=[f"{t} (from {email}, card {card})" for t in PREDS["input"]])
    rv = review.open_review(traffic, labels=["spam", "ham"], n=3, id_column="id", ws=ws)
    p = review.ReviewPanel(rv)
    assert "[EMAIL]" in p.item.value and "[CARD]" in p.item.value
    p.keybox.value = "1"
    p.note.value = "looks fine"
    p.note_button.click()
    for f in isolated_workspace.rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert email.encode() not in data and card.encode() not in data, f
    assert feedback.query(queue=rv.queue.name, ws=ws)["input"][0].endswith("(from [EMAIL], card [CARD])")


# ------------------------------------------------------------------------------------------ judging and resuming
def test_each_judgement_is_stored_as_it_is_made_and_a_killed_process_loses_nothing(ws, tmp_path):
    review.open_review(PREDS, name="q1", labels=["spam", "ham"], n=5, id_column="id", ws=ws)
    code = textwrap.dedent(f"""
        import os, signal
        from fmops_nb.review import Review
        r = Review('q1', reviewer='dana')
        r.judge('spam'); r.skip(); r.judge('ham', kind='label'); r.judge('this is spam, obviously', kind='correction')
        print(r.pos, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # a kernel dying mid-queue: no cleanup, no flush, no goodbye
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL and p.stdout.strip() == "4", p.stderr
    r = review.Review("q1", reviewer="dana", ws=ws)
    assert r.pos == 1  # the first item dana did not judge: the skipped one
    q = r.queue
    assert r.judged == {q.items[0]["item"]: ("label", "spam"), q.items[2]["item"]: ("label", "ham"),
                        q.items[3]["item"]: ("correction", "this is spam, obviously")}
    r.judge("ham")
    assert r.pos == 2  # on from the item just judged
    assert review.Review("q1", reviewer="dana", ws=ws).pos == 4
    assert feedback.verify(ws) == []  # every judgement matches its audit row


def test_two_reviewers_agreement_is_cohens_kappa(ws):
    items = [{"input": f"x{i}", "output": "a"} for i in range(10)]
    review.create("pair", items, labels=["a", "b"], ws=ws)
    ann, ben = review.Review("pair", reviewer="ann", ws=ws), review.Review("pair", reviewer="ben", ws=ws)
    for x, y in zip("aaaaabbbab", "aaaabbbbaa"):
        ann.judge(x); ben.judge(y)
    s = review.summary("pair", ws=ws)
    # agree on 8 of 10; ann a 6 b 4, ben a 6 b 4: chance .52, kappa (.8 - .52) / .48 = .583
    assert s.reviewers == {"ann": 10, "ben": 10}
    (a,) = s.agreement
    assert (a["reviewers"], a["items"], a["agreed"]) == (["ann", "ben"], 10, 8)
    assert a["kappa"] == pytest.approx(0.28 / 0.48)
    assert "Cohen's kappa 0.58" in repr(s) and "agree on 8 of 10" in s._repr_html_()
    # ben changes his mind on the last item: the latest judgement counts
    ben.back(); ben.judge("b")
    assert review.summary("pair", ws=ws).agreement[0]["agreed"] == 9


# ------------------------------------------------------------------------------------------ the panel
def test_the_panel_is_driven_by_keys_and_buttons_alike(ws):
    rv = review.open_review(PREDS, name="keys", labels=["spam", "ham"], n=4, id_column="id", reviewer="eve", ws=ws)
    p = review.ReviewPanel(rv)
    assert [b.description for b in p.buttons] == ["spam (1)", "ham (2)"]
    assert "item 1 of 4" in p.head.value and p.bar.value == 0
    p.keybox.value = "1"  # the key field: typed "1"
    assert p.keybox.value == "" and rv.pos == 1 and "Saved label: spam (item 1)." in p.said.value
    p.keybox.value = "x"  # a key that means nothing: said, nothing stored
    assert "does nothing here" in p.said.value and rv.pos == 1
    p.buttons[1].click()
    p.skip_button.click()
    p.correction.value = "spam"
    p.correct_button.click()
    assert "end of the queue" in p.head.value and "1 item left unjudged" in p.item.value
    p.keybox.value = "b"
    assert rv.pos == 3 and "You said: spam (correction)" in p.item.value
    p.note.value = "<script>alert(1)</script> a note"
    p.note_button.click()
    assert rv.pos == 3 and "&lt;script&gt;" in p.said.value and "<script>" not in p.said.value
    df = feedback.query(queue="keys", reviewer="eve", ws=ws)
    assert list(df["kind"]) == ["label", "label", "correction", "note"]
    assert list(df["value"])[:3] == ["spam", "ham", "spam"] and p.bar.value == 3
    assert repr(p).startswith("keys: 3 of 4 judged by eve")


def test_a_rating_and_a_thumbs_queue_take_their_keys(ws):
    items = [{"input": f"q{i}", "output": f"answer {i}"} for i in range(3)]
    p = review.ReviewPanel(review.Review(review.create("rate", items, task="rating", scale=(1, 5), ws=ws), ws=ws))
    assert [b.description for b in p.buttons] == ["1 (1)", "2 (2)", "3 (3)", "4 (4)", "5 (5)"]
    p.keybox.value = "4"; p.keybox.value = "2"
    assert feedback.metrics(queue="rate", ws=ws)["mean_rating"] == 3
    t = review.ReviewPanel(review.Review(review.create("thumbs", items, task="thumbs", ws=ws), ws=ws))
    t.keybox.value = "u"; t.keybox.value = "d"
    assert list(feedback.query(queue="thumbs", ws=ws)["value"]) == ["up", "down"]


# ------------------------------------------------------------------------------------------ bad input
BAD = [
    ("a path as the queue name", dict(name="../x", items=[{"input": "a"}], labels=["a", "b"]), "queue name"),
    ("one label", dict(name="q", items=[{"input": "a"}], labels=["a"]), "2 to 9 labels"),
    ("ten labels", dict(name="q", items=[{"input": "a"}], labels=list("abcdefghij")), "2 to 9 labels"),
    ("a repeated label", dict(name="q", items=[{"input": "a"}], labels=["a", "a"]), "repeat"),
    ("no items", dict(name="q", items=[], labels=["a", "b"]), "empty"),
    ("an item without input", dict(name="q", items=[{"output": "a"}], labels=["a", "b"]), "no input"),
    ("an unknown field", dict(name="q", items=[{"input": "a", "prompt": 1}], labels=["a", "b"]), "Unknown field"),
    ("two items with one id", dict(name="q", items=[{"input": "a", "item": 1}, {"input": "b", "item": 1}],
                                   labels=["a", "b"]), "same id"),
    ("NaN in an input", dict(name="q", items=[{"input": {"x": float("nan")}}], labels=["a", "b"]), "not a number"),
    ("a rating scale too long for keys", dict(name="q", items=[{"input": "a"}], task="rating", scale=(0, 100)),
     "at most 10 steps"),
    ("an unknown task", dict(name="q", items=[{"input": "a"}], task="stars"), "Unknown review task"),
    ("a bare model name as version", dict(name="q", items=[{"input": "a", "version": "clf"}], task="thumbs"),
     "model:vN"),
]


@pytest.mark.parametrize("what, kw, message", BAD, ids=[b[0] for b in BAD])
def test_bad_queues_are_refused_clearly_and_nothing_is_stored(ws, hostile, what, kw, message):
    hostile(what)
    with pytest.raises(ValidationError, match=message) as e:
        review.create(ws=ws, **kw)
    assert isinstance(e.value, FmopsError)
    assert review.queues(ws) == []


def test_opening_what_is_not_there_names_what_is(ws):
    with pytest.raises(NotFoundError, match="no queues yet"):
        review.Review("nope", ws=ws)
    review.create("triage-a", [{"input": "x"}], task="thumbs", ws=ws)
    with pytest.raises(NotFoundError, match="Did you mean 'triage-a'"):
        review.Review("triage-b", ws=ws)
    with pytest.raises(ValidationError, match="Cannot make a review queue from a int"):
        review.open_review(3, ws=ws)
    with pytest.raises(ValidationError, match="already holds other items"):
        review.create("triage-a", [{"input": "y"}], task="thumbs", ws=ws)
    r = review.Review("triage-a", ws=ws)
    r.judge("up")
    with pytest.raises(ValidationError, match="at its end"):
        r.judge("up")


# ------------------------------------------------------------------------------------------ the surfaces
def test_fmops_review_magic_opens_resumes_and_summarises(ws, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    monkeypatch.setenv("FMOPS_USER", "dana")
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fmops_nb")
    ip.user_ns["preds"] = PREDS
    p = ip.run_line_magic("fmops", "review preds --labels spam,ham -n 3 --id-column id --name inbox")
    assert isinstance(p, review.ReviewPanel) and [i["item"] for i in p.review.queue.items] == ["req-2", "req-6", "req-4"]
    p.keybox.value = "1"
    again = ip.run_line_magic("fmops", "review inbox")  # by name, in a new session: where dana left off
    assert again.review.pos == 1 and "item 2 of 3" in again.head.value
    ip.run_line_magic("fmops", "review inbox --reviewer eve").keybox.value = "2"
    s = ip.run_line_magic("fmops", "review inbox --summary")
    assert s.reviewers == {"dana": 1, "eve": 1}
    assert (s.agreement[0]["items"], s.agreement[0]["agreed"]) == (1, 0)  # dana said spam, eve ham
    from IPython.core.error import UsageError
    with pytest.raises(UsageError):
        ip.run_line_magic("fmops", "review")


def test_fmops_feedback_cli_reports_agreement_and_metrics(ws, capsys):
    from fmops_nb.cli import main
    review.create("pair", [{"input": f"x{i}", "output": "a"} for i in range(4)], labels=["a", "b"], ws=ws)
    for who, said in (("ann", "aabb"), ("ben", "abbb")):
        r = review.Review("pair", reviewer=who, ws=ws)
        for x in said:
            r.judge(x)
    assert main(["feedback", "summary", "pair", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["agreement"][0]["agreed"] == 3 and out["agreement"][0]["kappa"] == pytest.approx(0.5)
    assert main(["feedback", "metrics", "--queue", "pair", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(3 / 8)
    assert main(["feedback", "verify"]) == 0 and "matches the audit log" in capsys.readouterr().out
    assert main(["feedback", "summary", "nope"]) != 0
    assert "No review queue named 'nope'" in capsys.readouterr().err
