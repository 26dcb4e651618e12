"""LLM traffic (prompt/response logs) as a first-class drift input: descriptor columns of the texts — length, empty,
refusal, script, out-of-vocabulary share, perplexity under a reference model — through the rule and the timeline."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fmops_nb.drift import drift
from fmops_nb.errors import ValidationError
from stdlib_text import docstrings

ANSWERS = [t for t, _ in docstrings(["json", "csv", "pathlib", "shutil", "logging", "argparse", "inspect", "typing",
                                     "statistics", "difflib", "textwrap", "string", "functools", "itertools"])]
REFUSAL = "I'm sorry, but I can't help with that request."
RUSSIAN = "Функция возвращает путь к файлу и открывает его для чтения."


def traffic(n, seed, days=3, refusals=(0, 0, 0), russian=(0, 0, 0), short=False):
    "n log records a day over `days` days: prompts and answers from the docstrings, with planted shares per day."
    g = np.random.default_rng(seed)
    rows = []
    for d in range(days):
        for _ in range(n):
            a = ANSWERS[g.integers(len(ANSWERS))]
            if short: a = " ".join(a.split()[:4])
            u = g.random()
            if u < refusals[d]: a = REFUSAL
            elif u < refusals[d] + russian[d]: a = RUSSIAN
            rows.append({"prompt": "Explain: " + ANSWERS[g.integers(len(ANSWERS))].split(".")[0],
                         "response": a, "ts": f"2026-11-0{d + 1}T12:00:00", "model_version": "chat:v3"})
    return rows


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_traffic_log_drifts_by_its_descriptors_day_by_day(tmp_path):
    ref = write_jsonl(tmp_path / "ref.jsonl", traffic(300, 1))
    cur = write_jsonl(tmp_path / "cur.jsonl", traffic(300, 2, refusals=(0, 0.05, 0.3), russian=(0, 0, 0.2)))
    rep = drift(str(ref), str(cur), chunk_by="ts", embedder="hashing")
    names = set(rep.columns)
    assert {"response.length", "response.empty", "response.refusal", "response.script", "response.oov_share",
            "prompt.length"} <= names
    assert {"response.refusal", "response.script"} <= set(rep.drifted)
    assert not any(c.startswith("prompt.") for c in rep.drifted)  # the prompts did not change
    by_day = {c["chunk"]: set(c["drifted"]) for c in rep.chunks}
    assert not any(d.startswith("response.") for d in by_day["2026-11-01"])  # day 1 is like the reference
    assert {"response.refusal", "response.script"} <= by_day["2026-11-03"]
    prof = rep.columns["response.refusal"].profile  # the panel's bars: the refusal share, both sides
    share = dict(zip(prof["labels"], prof["current"]))["yes"] / prof["current_total"]
    assert 0.09 < share < 0.14  # (0 + 5% + 30%) / 3 days


def test_no_drift_no_descriptor_alarm_and_the_switches(tmp_path):
    ref, cur = pd.DataFrame(traffic(300, 3)), pd.DataFrame(traffic(300, 4))
    rep = drift(ref, cur, embedder="hashing", columns=["prompt", "response"])
    assert not [c for c in rep.drifted if "." in c], rep.drifted
    off = drift(ref, cur, embedder="hashing", columns=["prompt", "response"], descriptors=False)
    assert set(off.columns) == {"prompt", "response"}
    tickets = pd.DataFrame({"ticket": ANSWERS[:200]}), pd.DataFrame({"ticket": ANSWERS[200:400]})
    assert "ticket.length" not in drift(*tickets, embedder="hashing").columns  # not LLM traffic: asked for only
    assert "ticket.length" in drift(*tickets, embedder="hashing", descriptors=["ticket"]).columns
    with pytest.raises(ValidationError, match="not text columns"):
        drift(ref.assign(n=1.0), cur.assign(n=1.0), embedder="hashing", descriptors=["n"])


def test_shorter_answers_are_named_and_a_parquet_log_gives_the_same_answer(tmp_path):
    ref, cur = pd.DataFrame(traffic(400, 5)), pd.DataFrame(traffic(400, 6, short=True))
    rep = drift(ref, cur, embedder="hashing", columns=["response"])
    assert "response.length" in rep.drifted
    assert rep.columns["response.length"].stats["ks"] > 0.5
    ref.to_parquet(tmp_path / "ref.parquet", row_group_size=300)  # read row group by row group
    cur.to_parquet(tmp_path / "cur.parquet", row_group_size=250)
    again = drift(str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), embedder="hashing",
                  columns=["response"])
    for c in ("response.length", "response.oov_share", "response.refusal", "response.script"):
        assert again.columns[c].stats == rep.columns[c].stats, c


def test_fmops_drift_on_traffic_logs_from_the_command_line(tmp_path):
    ref = write_jsonl(tmp_path / "ref.jsonl", traffic(200, 7))
    cur = write_jsonl(tmp_path / "cur.jsonl", traffic(200, 8, refusals=(0.3, 0.3, 0.3)))
    base = [sys.executable, "-m", "fmops_nb.cli", "drift", str(ref), str(cur), "--embedder", "hashing", "--json"]
    out = json.loads(subprocess.run(base, capture_output=True, text=True, check=True).stdout)
    assert "response.refusal" in out["drifted_columns"]
    off = json.loads(subprocess.run(base + ["--no-descriptors"], capture_output=True, text=True, check=True).stdout)
    assert not any("." in c for c in off["columns"])


@pytest.mark.slow
def test_perplexity_under_the_reference_model_sees_garbled_answers():
    pytest.importorskip("transformers")
    g = np.random.default_rng(0)
    ref = pd.DataFrame({"response": ANSWERS[:150]})
    garbled = ["".join(g.permutation(list(a))) for a in ANSWERS[150:300]]  # the same letters, shuffled
    cur = pd.DataFrame({"response": garbled})
    rep = drift(ref, cur, embedder="hashing", reference_lm="tinylm")
    col = rep.columns["response.perplexity"]
    assert col.status == "drift" and "response.perplexity" in rep.drifted


@pytest.mark.slow
def test_a_responses_perplexity_does_not_depend_on_the_texts_batched_with_it():
    "Left padding: the first real token follows a pad and predicts nothing; a text scores the same alone or batched."
    pytest.importorskip("transformers")
    from fmops_nb.descriptors import text_perplexities
    from fmops_nb.lm import tiny_lm
    short, long, lm = ANSWERS[0], " ".join(ANSWERS[1:6]), tiny_lm()
    alone = text_perplexities(lm, [short])[0]
    batched = text_perplexities(lm, [short, long])[0]
    assert np.isfinite(alone) and abs(batched - alone) < 1e-3 * alone, (alone, batched)
