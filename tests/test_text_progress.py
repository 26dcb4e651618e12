"""Text drift shows a progress bar while it embeds — from `fmops drift` on stderr and in a `%fmops drift` cell — and
embeds each text once, chunks included, with or without a cache."""
import json

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from conftest import run_py
from fmops_nb import embeddings
from fmops_nb.drift import drift
from fmops_nb.embeddings import EmbeddingCache, HashingEmbedder
from stdlib_text import docstrings

TEXTS = sorted({t for t, _ in docstrings(["json", "csv", "pathlib", "shutil", "posixpath", "tarfile", "zipfile", "gzip",
                                           "asyncio.tasks", "asyncio.locks", "asyncio.queues", "threading", "logging",
                                           "email.message", "http.client", "urllib.request", "smtplib", "ftplib", "imaplib", "argparse",
                                           "inspect", "typing", "statistics", "difflib"])})


class Counting(HashingEmbedder):
    "The hashing embedder, counting the texts it is asked to embed."
    def __init__(self):
        super().__init__(64)
        self.texts = []

    def embed(self, texts):
        self.texts += list(texts)
        return super().embed(texts)


def windows():
    "A reference and a current window of texts with a 3-day timeline (the last day from other modules)."
    g = np.random.default_rng(0)
    texts = [TEXTS[i] for i in g.permutation(len(TEXTS))]
    ref, cur = texts[:120], texts[120:240]
    days = np.repeat(pd.to_datetime(["2026-11-01", "2026-11-02", "2026-11-03"]).values, 40)
    return ref, cur, days


@pytest.mark.parametrize("cache", [False, True])
def test_a_timeline_embeds_each_text_once(cache, tmp_path):
    ref, cur, days = windows()
    emb = Counting()
    store = EmbeddingCache(tmp_path / "e.db") if cache else False
    rep = drift({"doc": ref}, {"doc": cur, "day": days}, chunk_by="day", embedder=emb, cache=store)
    assert [c["n"] for c in rep.chunks] == [40, 40, 40] and rep.columns["doc"].status in ("ok", "drift")
    assert sorted(emb.texts) == sorted(set(ref) | set(cur))  # the window, then three chunks: every text once


def test_fmops_drift_shows_the_embedding_bar_on_stderr(tmp_path):
    ref, cur, _ = windows()
    pd.DataFrame({"doc": ref}).to_parquet(tmp_path / "ref.parquet")
    pd.DataFrame({"doc": cur}).to_parquet(tmp_path / "cur.parquet")
    code = ("import sys; from fmops_nb import embeddings; embeddings.PROGRESS_DELAY = {delay}\n"
            "from fmops_nb.cli import main\n"
            f"sys.exit(main(['drift', {str(tmp_path / 'ref.parquet')!r}, {str(tmp_path / 'cur.parquet')!r}, "
            "'--embedder', 'hashing', '--json']))")
    shown = run_py(code.format(delay=0), {"FMOPS_PROGRESS": "1"})
    assert shown.returncode == 0, shown.stderr
    assert "embedding texts" in shown.stderr and "/120 " in shown.stderr  # the bar, on stderr: reference, then current
    assert json.loads(shown.stdout)["columns"]["doc"]["kind"] == "text"  # stdout is still only the JSON
    quick = run_py(code.format(delay=60), {"FMOPS_PROGRESS": "1"})  # a step quicker than the delay shows nothing
    assert quick.returncode == 0 and "embedding texts" not in quick.stderr, quick.stderr


def test_percent_fmops_drift_shows_the_embedding_bar(monkeypatch):
    ref, cur, _ = windows()
    monkeypatch.setattr(embeddings, "PROGRESS_DELAY", 0)
    monkeypatch.setenv("FMOPS_PROGRESS", "1")
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        ip.user_ns.update(ref={"doc": ref}, cur={"doc": cur})
        with capture_output() as out:
            res = ip.run_cell("%fmops drift ref cur --embedder hashing", store_history=True)
        assert res.success, res.error_in_exec
        assert "embedding texts" in out.stderr and "/120 " in out.stderr  # a terminal shell: the text bar
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()
