"""The `llm_report` template on a logged prompt/response traffic: really executed by papermill through `fmops report
run`, its HTML showing the descriptors, its W&B run (offline, read back) holding them; a log without responses is
refused with a message that names the columns."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fmops_nb.tracking import read_run
from stdlib_text import docstrings

pytestmark = pytest.mark.slow  # a papermill kernel per test

ANSWERS = [t for t, _ in docstrings(["json", "csv", "pathlib", "shutil", "logging", "argparse", "inspect", "typing",
                                     "statistics", "difflib", "textwrap", "string"])]
PROMPTS = 60  # the prompts ask about the first 60 docstrings: every window asks the same things
REFUSAL = "I'm sorry, but I can't help with that request."


def traffic_log(path, n, seed, refusals=(0, 0, 0)):
    "n records a day over three days: a docstring's first sentence asked about, a docstring answered; planted refusals."
    g = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for day, share in enumerate(refusals):
            for i in range(n):  # each record at its own second of the day, as a log writes them
                answer = REFUSAL if g.random() < share else ANSWERS[g.integers(len(ANSWERS))]
                f.write(json.dumps({"prompt": "Explain: " + ANSWERS[g.integers(PROMPTS)].split(".")[0],
                                    "response": answer, "ts": f"2026-11-0{day + 1}T{i // 60:02d}:{i % 60:02d}:07Z",
                                    "model_version": "chat:v3"}) + "\n")
    return path


def fmops(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fmops_nb.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600, env=os.environ)


def test_llm_report_shows_the_drifting_descriptors_in_its_html_and_wandb_run(tmp_path):
    ref = traffic_log(tmp_path / "reference.jsonl", 120, 1)
    cur = traffic_log(tmp_path / "traffic.jsonl", 120, 2, refusals=(0, 0.1, 0.4))
    r = fmops("report", "run", "llm_report", "-p", "reference", str(ref), "-p", "current", str(cur),
              "-p", "embedder", "hashing", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    run_dir = next((tmp_path / ".fmops" / "reports" / "llm_report").iterdir())
    v = json.loads((run_dir / "values.json").read_text())
    assert v["dataset_drift"] and "response.refusal" in v["drifted_columns"]
    assert not any(c.startswith("prompt") for c in v["drifted_columns"])  # the prompts did not change
    assert (v["n_reference"], v["n_current"]) == (360, 360)
    assert v["traffic"]["reference"]["response"]["refusal_rate"] == 0
    assert 0.13 < v["traffic"]["current"]["response"]["refusal_rate"] < 0.20  # (0 + 10% + 40%) / 3 days
    rows = {d["descriptor"]: d for d in v["descriptors"]}
    assert {"response.length", "response.empty", "response.refusal", "response.script", "response.oov_share",
            "prompt.length"} <= set(rows)
    assert rows["response.refusal"]["status"] == "drift" and rows["prompt.length"]["status"] != "drift"
    days = {t["chunk"]: t["drifted"] for t in v["timeline"]}  # a chunk a day, not one per timestamp
    assert sorted(days) == ["2026-11-01", "2026-11-02", "2026-11-03"], sorted(days)[:5]
    assert "response.refusal" not in days["2026-11-01"] and "response.refusal" in days["2026-11-03"]
    assert v["model_versions"] == [{"model_version": "chat:v3", "records": 360}]
    page = (run_dir / "report.html").read_text()
    assert "Response descriptors" in page and "response.refusal" in page and "refusal_rate" in page
    assert "data:image/png;base64," in page and "<script" not in page
    wb = read_run(next((tmp_path / ".fmops" / "wandb").glob("offline-run-*")))
    assert wb.status == "finished" and wb.job_type == "llm_report" and wb.config["current"] == str(cur)
    assert wb.summary["dataset_drift"] is True
    assert wb.summary["traffic.current.response.refusal_rate"] == pytest.approx(
        v["traffic"]["current"]["response"]["refusal_rate"])
    table = wb.tables["descriptors"]
    col = table["columns"].index("descriptor")
    assert {row[col] for row in table["data"]} == set(rows)


@pytest.mark.hostile
def test_a_log_without_responses_is_refused_naming_its_columns(tmp_path, hostile):
    ref = traffic_log(tmp_path / "reference.jsonl", 20, 1)
    bad = tmp_path / "traffic.jsonl"
    bad.write_text("".join(json.dumps({"prompt": "hi", "answer_text": "hello"}) + "\n" for _ in range(20)))
    hostile("a traffic log whose response column has another name")
    r = fmops("report", "run", "llm_report", "-p", "reference", str(ref), "-p", "current", str(bad), "--no-wandb",
              cwd=tmp_path)
    assert r.returncode != 0
    assert "has no column 'response'" in r.stderr and "answer_text" in r.stderr and "response_column" in r.stderr
