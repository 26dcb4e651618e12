"""The drift check's approximations against the exact statistics (issue 13).

Numeric columns are summarized on 2,048 quantile bins laid on a uniform grid of 65,536 cells, values counted per cell
in blocks: the KS statistic from those bins must stay within 0.001 of scipy's exact two-sample statistic whatever the
data, the grid's counts must equal binning every value exactly, and memory must not grow with the rows.
"""
import math
import shutil
import tracemalloc

import numpy as np
import pytest
import scipy.stats as ss

import fmops_nb.drift as engine
from fmops_nb.drift import _BLOCK, _GRID, QUANTILE_SAMPLE, DriftDetector, NumericBins, _Cells, drift, sample_rows

N = 200_000
COMPILED = engine._compiled


@pytest.fixture(params=["compiled", "numpy"])
def loop(request, monkeypatch):
    """Run a test with the compiled grid loop (fmops_nb/_grid.c) and again with the numpy loop a machine without a C
    compiler gets: both must give the same counts."""
    if request.param == "compiled" and COMPILED is None:
        pytest.skip("the compiled grid loop was not built in this install")
    monkeypatch.setattr(engine, "_compiled", COMPILED if request.param == "compiled" else None)
    return request.param


def _cases():
    "(name, reference, current): shapes that bin differently — heavy tails, atoms, concentration, nothing in common."
    g = np.random.default_rng(7)
    n = lambda: g.normal(size=N)
    return [
        ("mean shift 0.05 sd", n(), n() + 0.05),
        ("scale x1.1", n(), n() * 1.1),
        ("5% mixture", n(), np.where(g.random(N) < 0.05, g.normal(2, 0.5, N), g.normal(size=N))),
        ("no change", n(), n()),
        ("lognormal, shifted", g.lognormal(size=N), g.lognormal(0.1, 1, N)),
        ("student t, 2 dof (long tails)", g.standard_t(2, N), g.standard_t(2, N) * 1.2),
        ("cauchy", g.standard_cauchy(N), g.standard_cauchy(N) + 0.2),
        ("pareto", g.pareto(1.5, N), g.pareto(1.3, N)),
        ("uniform", g.random(N), g.random(N) ** 1.1),
        ("bimodal, weights moved", np.r_[g.normal(-3, 1, N // 2), g.normal(3, 1, N // 2)],
         np.r_[g.normal(-3, 1, N // 3), g.normal(3, 1, N - N // 3)]),
        ("zero-inflated amounts", np.where(g.random(N) < 0.3, 0.0, g.exponential(50, N)),
         np.where(g.random(N) < 0.4, 0.0, g.exponential(60, N))),
        ("whole numbers 0..9999", g.integers(0, 10_000, N).astype(float), g.integers(0, 12_000, N).astype(float)),
        ("current at one value", n(), np.full(N // 10, 0.1234)),
        ("current narrow", n(), g.normal(0, 0.01, N)),
        ("current above the reference", n(), g.normal(10, 1, N)),
        ("current below, partly", n(), g.normal(-4, 2, N)),
    ]


CASES = _cases()


@pytest.mark.parametrize("name,ref,cur", CASES, ids=[c[0] for c in CASES])
def test_binned_ks_is_within_0_001_of_scipys_exact_statistic(name, ref, cur):
    col = drift({"x": ref}, {"x": cur}).columns["x"]
    exact = ss.ks_2samp(ref, cur).statistic
    assert abs(col.stats["ks"] - exact) <= 1e-3, (name, col.stats["ks"], exact)


@pytest.mark.parametrize("name,ref,cur", CASES, ids=[c[0] for c in CASES])
def test_binned_wasserstein_is_close_to_the_exact_distance(name, ref, cur):
    """Wasserstein (in reference sds): within 3% or 0.002 sd of scipy's on the same data — long tails and values beyond
    the reference's range included (their slots keep the sums of their values)."""
    col = drift({"x": ref}, {"x": cur}).columns["x"]
    exact = ss.wasserstein_distance(ref, cur) / col_sd(ref)
    assert col.stats["wasserstein"] == pytest.approx(exact, rel=0.03, abs=2e-3), name


def col_sd(ref):
    "The spread the report divides by: that of the seeded reference sample the bins are fitted on."
    return DriftDetector().fit({"x": ref}).bins["x"].sd


def _exact_counts(b: NumericBins, v: np.ndarray) -> np.ndarray:
    fin = v[np.isfinite(v)]
    return np.bincount(b._exact(fin), minlength=b.n_slots)


@pytest.mark.parametrize("n", [1, 999, _BLOCK - 1, _BLOCK, 3 * _BLOCK + 17])
def test_grid_counts_equal_binning_every_value_exactly(n, loop):
    g = np.random.default_rng(n)
    ref = g.lognormal(size=50_000)
    b = NumericBins.of(ref)
    assert b.scale and b._runs is not None  # the grid path
    v = g.lognormal(0.2, 1.3, n)
    v[g.random(n) < 0.01] = np.nan
    v[g.random(n) < 0.005] = np.inf
    v[g.random(n) < 0.005] = -np.inf
    v[:3] = [ref.min(), ref.max(), -1.0][:len(v[:3])]  # the reference's ends, and one value below them all
    s = b.summarize(v)
    assert np.array_equal(s.counts, _exact_counts(b, v))
    assert s.n_missing == int(np.isnan(v).sum()) and s.n_inf == int(np.isinf(v).sum())
    fin = v[np.isfinite(v)]
    below, above = fin[fin < b.edges[0]], fin[fin > b.edges[-1]]
    assert s.lo == (below.min() if len(below) else math.inf) and s.hi == (above.max() if len(above) else -math.inf)


def test_values_whose_cell_number_overflows_take_the_exact_path(loop):
    """Cell numbers are cast to 32-bit integers: a value so far off that its number does not fit (or one just below
    the grid, whose number truncates to 0) is found by the range check and binned exactly, never wrapped into the grid."""
    g = np.random.default_rng(2)
    ref = g.normal(size=50_000)
    b = NumericBins.of(ref)
    far = np.array([1e300, -1e300, 3e9, -3e9, 1e7, -1e7, np.nextafter(b.grid[0], -np.inf), b.grid[1], 5e-324])
    v = np.r_[g.normal(size=_BLOCK + 5), far, np.nan, np.inf, -np.inf]
    g.shuffle(v)
    s = b.summarize(v)
    assert np.array_equal(s.counts, _exact_counts(b, v))
    assert (s.lo, s.hi, s.n_missing, s.n_inf) == (-1e300, 1e300, 1, 2)


def test_the_compiled_loop_is_built_wherever_a_c_compiler_is():
    "`pip install` builds fmops_nb/_grid.c when a C compiler is on the machine (as in CI): the fast loop is the one used."
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here: the numpy loop is expected")
    assert COMPILED is not None, "fmops_nb._grid was not built: reinstall with `pip install -e .`"


def _on_cell_boundaries(b: NumericBins, g, n: int) -> np.ndarray:
    "Values on and just beside the grid's cell boundaries, where a different rounding would change a value's cell."
    k = g.integers(-3, _GRID + 5, n).astype(np.float64)
    v = b.lo + k / b.scale
    return np.r_[v, np.nextafter(v, np.inf), np.nextafter(v, -np.inf)]


@pytest.mark.skipif(COMPILED is None, reason="the compiled grid loop was not built in this install")
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, "strided"])
def test_the_compiled_and_numpy_loops_give_the_same_summary(dtype, monkeypatch):
    """Same counts, NaN/inf counts, extremes and sums from both loops, for values on cell boundaries, far outside the
    grid, NaN and ±inf; for float32 and integer columns and a column that is a strided view of a 2-d table."""
    g = np.random.default_rng(11)
    ref = g.normal(50, 20, 60_000)
    b = NumericBins.of(ref)
    assert b._runs is not None
    v = np.r_[g.normal(55, 25, 2 * _BLOCK), _on_cell_boundaries(b, g, 20_000), [1e300, -1e300, np.nan, np.inf, -np.inf]]
    g.shuffle(v)
    if dtype == "strided":
        v = np.column_stack([v, -v])[:, 0]
        assert not v.flags.c_contiguous
    elif dtype is np.int64:
        v = np.rint(v[np.isfinite(v) & (np.abs(v) < 1e9)]).astype(np.int64)
    else:
        v = v.astype(dtype)
    out = {}
    for name in ("compiled", "numpy"):
        monkeypatch.setattr(engine, "_compiled", COMPILED if name == "compiled" else None)
        out[name] = b.summarize(v)
    a, n = out["compiled"], out["numpy"]
    assert np.array_equal(a.counts, n.counts)
    assert (a.n_missing, a.n_inf, a.lo, a.hi) == (n.n_missing, n.n_inf, n.lo, n.hi)
    assert np.array_equal(a.sums, n.sums)
    assert a.counts.sum() + a.n_missing + a.n_inf == len(v)


@pytest.mark.skipif(COMPILED is None, reason="the compiled grid loop was not built in this install")
def test_the_compiled_loops_32_bit_counts_are_moved_to_64_bits_before_they_can_overflow():
    """The compiled loop counts into 32-bit cells: a column of more than 2**31 values must not wrap them. Brought to
    the edge (a cell already holding 2**31 - 3 values), the next values move the counts to 64 bits first."""
    b = NumericBins.of(np.random.default_rng(1).normal(size=50_000))
    cells = np.zeros(_GRID + 2, np.int64)
    grid = _Cells(b, cells)
    x = np.full(10, b.lo + 100.5 / b.scale)  # ten values in cell 100
    grid.c32[100], grid.pending = 2**31 - 3, 2**31 - 3
    assert len(grid.add(x)) == 0
    assert grid.total()[100] == 2**31 + 7


def test_the_sampled_rows_are_the_seeded_choice_in_order():
    "The sample the bins are fitted on: `sample_rows` gives the rows numpy's seeded choice picks, in row order."
    n = 1_000_003
    want = np.sort(np.random.default_rng(9).choice(n, QUANTILE_SAMPLE, replace=False))
    assert np.array_equal(sample_rows(n, 9), want)
    assert np.array_equal(sample_rows(500, 9), np.arange(500))


def test_grid_covers_the_whole_range_when_the_tails_are_short_and_the_centre_when_they_are_long():
    g = np.random.default_rng(3)
    short, long = g.normal(size=100_000), g.standard_cauchy(100_000)
    bs, bl = NumericBins.of(short), NumericBins.of(long)
    assert bs.grid == (short.min(), short.max())  # a value like the reference never leaves the grid
    assert long.min() < bl.grid[0] < bl.grid[1] < long.max()  # a central range only
    assert bl.grid[1] - bl.grid[0] == pytest.approx(_GRID / bl.scale)
    for b, ref in ((bs, short), (bl, long)):
        counts = b.summarize(ref).counts
        assert counts[0] == 0 and counts[-1] == 0  # nothing below the minimum or above the maximum
        inner = counts[1:-1] / counts.sum()
        assert inner.max() < 0.001  # no bin holds more than 0.1% of the reference: the KS bound


def test_summaries_of_chunks_add_up_to_the_summary_of_the_whole(loop):
    g = np.random.default_rng(5)
    ref, cur = g.normal(size=100_000), np.r_[g.normal(0.3, 1, 150_000), [np.nan, np.inf]]
    b = NumericBins.of(ref)
    whole = b.summarize(cur)
    parts = b.summarize(cur[:70_001]) + b.summarize(cur[70_001:])
    assert np.array_equal(whole.counts, parts.counts)
    assert (whole.n_missing, whole.n_inf, whole.lo, whole.hi) == (parts.n_missing, parts.n_inf, parts.lo, parts.hi)


def test_memory_does_not_grow_with_the_rows():
    "Scoring 4M rows takes no more memory beyond its inputs than 1M rows: no temporary the size of a column."
    g = np.random.default_rng(11)
    det = DriftDetector().fit({"a": g.normal(size=200_000), "b": g.lognormal(size=200_000)})

    def peak(n):
        data = {"a": g.normal(size=n), "b": np.where(g.random(n) < 0.01, np.nan, g.lognormal(size=n))}
        tracemalloc.start()
        det.score(data)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(1_000_000), peak(4_000_000)
    # one float64 column of the 3M extra rows is 24 MB; the blocks and the bins are a few MB whatever the rows
    assert large - small < 4 * 2**20, (small / 2**20, large / 2**20)
    assert large < 16 * 2**20
