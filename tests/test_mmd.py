"""The tiled MMD permutation test against direct computation, and its subsample rule on the benchmark's data."""
import importlib.util

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from conftest import ROOT
from fmops_nb.embeddings import EmbeddingDrift, kernel_sums, median_bandwidth, mmd_test, subsample


def bench_mmd():
    "bench/mmd.py as a module: the benchmark's data generator, so the tests check the data the figures come from."
    spec = importlib.util.spec_from_file_location("bench_mmd", ROOT / "bench" / "mmd.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def direct_mmd2(a, b, bw):
    "Unbiased MMD² from the whole kernel matrix, in float64."
    k = lambda p, q: np.exp(-cdist(p.astype(np.float64), q.astype(np.float64), "sqeuclidean") / bw)
    n, m = len(a), len(b)
    return (k(a, a).sum() - n) / (n * (n - 1)) + (k(b, b).sum() - m) / (m * (m - 1)) - 2 * k(a, b).mean()


@pytest.mark.parametrize("n,block", [(97, 16), (97, 97), (97, 1000), (250, 64)])
def test_kernel_sums_equal_the_whole_kernel_matrix(n, block):
    g = np.random.default_rng(n)
    z = g.normal(size=(n, 7)).astype(np.float32)
    u = (g.random((n, 5)) < 0.4).astype(np.float32)
    v = g.normal(size=(n, 2)).astype(np.float32)
    gamma = 1 / median_bandwidth(z)
    K = np.exp(-gamma * cdist(z.astype(np.float64), z.astype(np.float64), "sqeuclidean"))
    quad, kv = kernel_sums(z, u, v, gamma, block)
    np.testing.assert_allclose(quad, np.einsum("ij,ik,kj->j", u, K, u), rtol=2e-6)
    np.testing.assert_allclose(kv, K @ v, rtol=2e-5, atol=2e-5)


def test_mmd_test_equals_permuting_one_split_at_a_time():
    g = np.random.default_rng(7)
    x, y = g.normal(size=(120, 6)).astype(np.float32), g.normal(0.15, 1, size=(90, 6)).astype(np.float32)
    bw = median_bandwidth(x)
    res = mmd_test(x, y, bw, n_permutations=60, seed=4, block=50)
    assert res["mmd2"] == pytest.approx(direct_mmd2(x, y, bw), abs=1e-6)
    rng, z = np.random.default_rng(4), np.concatenate([x, y])
    null = []
    for _ in range(60):  # the same permutations, drawn in the same order: the observed rows are the first 120
        idx = rng.permutation(210)
        null.append(direct_mmd2(z[np.sort(idx[:120])], z[np.sort(idx[120:])], bw))
    assert res["p_value"] == (1 + np.sum(np.array(null) >= res["mmd2"] - 1e-9)) / 61
    assert res["null_max"] == pytest.approx(max(null), abs=1e-6)
    sim = np.exp(-cdist(y.astype(np.float64), x.astype(np.float64), "sqeuclidean") / bw).mean(1)
    np.testing.assert_allclose(res["similarity_to_reference"], sim, rtol=1e-5)


def test_far_from_the_origin_the_statistic_keeps_its_precision():
    "Rows far from the origin (norms 10⁴ times their spread) give the statistic of the same rows near it."
    g = np.random.default_rng(2)
    x, y = g.normal(size=(300, 16)), g.normal(0.3, 1, size=(200, 16))
    bw = median_bandwidth(x)
    near = mmd_test(x.astype(np.float32), y.astype(np.float32), bw, 20)
    far = mmd_test((x + 1e4).astype(np.float32), (y + 1e4).astype(np.float32), bw, 20)
    assert near["mmd2"] > 0.01
    assert far["mmd2"] == pytest.approx(near["mmd2"], rel=1e-2) and far["p_value"] == near["p_value"]


def test_embedding_drift_on_a_subsample_names_rows_of_the_whole_sample():
    g = np.random.default_rng(5)
    x = g.normal(size=(2000, 8)).astype(np.float32)
    y = g.normal(size=(2400, 8)).astype(np.float32)
    y[2300:] += 6  # a hundred rows far from the reference, at the end
    det = EmbeddingDrift(n_permutations=30, seed=3, max_rows=500).fit(x)
    assert len(det.x) == 500 and det.rows_reference == 2000
    s = det.score(y, labels=[f"row {i}" for i in range(len(y))])
    assert (s["sample_reference"], s["sample_current"], s["rows_reference"], s["rows_current"]) == (500, 500, 2000, 2400)
    assert s["p_value"] < 0.05
    least = [int(e["row"].split()[1]) for e in s["least_like_reference"]]
    assert len(least) == 5 and all(i >= 2300 for i in least), least  # labels of the far rows, indexed in all of y
    whole = EmbeddingDrift(n_permutations=30, seed=3, max_rows=None).fit(x).score(y)
    assert whole["sample_current"] == 2400 and "rows_current" not in whole
    assert subsample(2400, 500, 3, 1) is not None and subsample(400, 500, 3, 1) is None


@pytest.mark.slow
def test_subsampled_decision_is_the_same_for_every_seed_on_the_benchmark_sets():
    """50,000 rows a side (bench/mmd.py's shifted and control sets) are tested on 5,000-row samples: five seeds, five
    samples, one decision — drift on the shifted set, none on the control (bench/mmd.py records ten); and on 10,000 rows
    a side the test of every row decides the same."""
    b = bench_mmd()
    for case, drifted in (("shift", True), ("control", False)):
        x, y = b.case_data(case, 50_000)
        bw = median_bandwidth(x)
        ps = [mmd_test(x, y, bw, 100, seed=s)["p_value"] for s in range(5)]
        assert all((p < 0.05) == drifted for p in ps), (case, ps)
        full = mmd_test(x[:10_000], y[:10_000], bw, 100, max_rows=None)
        assert full["sample_current"] == 10_000 and (full["p_value"] < 0.05) == drifted, (case, full["p_value"])


def test_vector_keys_in_blocks_equal_the_one_pass_formula():
    "The keys that pick the bottom-k sample are the same as before they were computed in blocks (old summaries merge)."
    from fmops_nb.embeddings import _mix, vector_keys
    x = np.random.default_rng(9).normal(size=(2500, 33)).astype(np.float32)
    x[7] = x[8]  # equal rows, equal keys
    bits = x.view(np.uint32).astype(np.uint64)
    r = np.random.default_rng(4).integers(1, 2**63, size=33, dtype=np.uint64) | np.uint64(1)
    with np.errstate(over="ignore"):
        want = _mix((bits * r).sum(axis=1, dtype=np.uint64))
    for block in (1, 1000, 4096):
        np.testing.assert_array_equal(vector_keys(x, 4, block), want)
    assert vector_keys(x, 4)[7] == vector_keys(x, 4)[8] and len(vector_keys(x[:0], 4)) == 0
