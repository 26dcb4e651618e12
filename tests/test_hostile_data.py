"""Ordinary production data that used to crash the drift check, and strings that must never reach HTML as markup."""
import json
import math
import shutil
import subprocess

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.stats as ss
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from fmops_nb.drift import METHODS, DecisionRule, Method, calibrate, drift
from fmops_nb.errors import ValidationError

pytestmark = pytest.mark.hostile
XSS = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


def strict_json(rep) -> dict:
    "The report's dict, through JSON that refuses NaN and infinity both ways."
    text = json.dumps(rep.to_dict(), allow_nan=False)
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))


def fmops(*args, timeout=300):
    return subprocess.run([shutil.which("fmops"), *args], capture_output=True, text=True, timeout=timeout)


def ws_files(ws):
    "Every file under the workspace (and the W&B folders the fixture points at): what a run would have stored."
    return sorted(str(p) for p in ws.parent.rglob("*")
                  if p.is_file() and (".fmops" in p.parts or "wandb-env" in p.parts))


@pytest.fixture
def shell():
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fmops_nb")
    yield ip
    ip.run_line_magic("unload_ext", "fmops_nb")
    InteractiveShell.clear_instance()


# ------------------------------------------------------------------------------------------- few distinct values
@pytest.mark.parametrize("k", range(1, 21))
def test_every_count_of_distinct_values_is_binned_exactly(k, hostile):
    hostile(f"an integer column with {k} distinct values")
    rng = np.random.default_rng(k)
    a = rng.integers(0, k, 3000)
    b = np.where(rng.random(2000) < 0.3, k - 1, rng.integers(0, k, 2000))  # more of the largest value
    same = rng.integers(0, k, 2000)
    rep = drift({"x": a}, {"x": b})
    col = rep.columns["x"]
    assert col.status == ("ok" if k == 1 else "drift") and col.method == "ks"
    assert col.stats["ks"] == pytest.approx(ss.ks_2samp(a, b).statistic, abs=1e-12)  # exact on discrete data
    if k > 1:
        assert col.stats["wasserstein"] == pytest.approx(ss.wasserstein_distance(a, b) / a.std(), abs=1e-12)
    assert col.profile["labels"] == [str(v) for v in range(k)]  # one bar per value
    assert sum(col.profile["reference"]) == 3000 and sum(col.profile["current"]) == 2000
    assert drift({"x": a}, {"x": same}).columns["x"].status == "ok"
    strict_json(rep)


FLAG = lambda g, n: (g.random(n) < 0.1).astype(np.int8)
COIN = lambda g, n: g.integers(0, 2, n).astype(float)


@pytest.mark.parametrize("name, ref, cur, moved", [
    ("label 0/1", lambda g, n: g.integers(0, 2, n), lambda g, n: (g.random(n) < 0.6).astype(int), True),
    ("boolean stored as int", FLAG, FLAG, False),
    ("rating 1-5", lambda g, n: g.choice([1, 2, 3, 4, 5], n, p=[.1, .1, .2, .3, .3]),
     lambda g, n: g.choice([1, 2, 3, 4, 5], n, p=[.3, .1, .2, .2, .2]), True),
    ("float 0.0/1.0", COIN, COIN, False),
])
def test_labels_ratings_and_flags_on_large_samples(name, ref, cur, moved, hostile):
    hostile(f"a {name} column, 20,000 rows a side (effect-size rule)")
    g = np.random.default_rng(0)
    rep = drift(pd.DataFrame({"y": ref(g, 20_000)}), pd.DataFrame({"y": cur(g, 20_000)}))
    col = rep.columns["y"]
    assert col.method == "wasserstein" and math.isfinite(col.statistic)
    assert col.drifted is moved and col.status == ("drift" if moved else "ok")
    strict_json(rep)


def test_constant_reference_is_decided_by_jensen_shannon(hostile):
    hostile("a reference column holding one value (zero spread)")
    ref, cur = {"flag": np.ones(10_000)}, {"flag": np.r_[np.ones(9_000), np.zeros(1_000)]}
    rep = drift(ref, cur)
    col = rep.columns["flag"]
    assert (col.method, col.status, col.stats["wasserstein"]) == ("jensenshannon", "drift", None)
    assert "one value" in col.note and "decided by jensenshannon" in col.note
    assert col.profile["labels"] == ["1", "other"] and col.profile["current"] == [9_000, 1_000]
    d = strict_json(rep)
    assert d["columns"]["flag"]["stats"]["wasserstein"] is None
    assert drift(ref, {"flag": np.ones(10_000)}).columns["flag"].status == "ok"


@pytest.mark.slow
def test_low_cardinality_through_the_cli_and_nothing_is_written_on_error(tmp_path, isolated_workspace, hostile):
    hostile("0/1 label and 1-5 rating columns through `fmops drift`")
    g = np.random.default_rng(1)
    ref = pd.DataFrame({"label": g.integers(0, 2, 8000), "rating": g.integers(1, 6, 8000)})
    cur = pd.DataFrame({"label": (g.random(8000) < 0.7).astype(int), "rating": g.integers(1, 6, 8000)})
    ref.to_parquet(tmp_path / "ref.parquet"); cur.to_csv(tmp_path / "cur.csv", index=False)
    r = fmops("drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.csv"), "--json",
              "--html", str(tmp_path / "r.html"))
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout, parse_constant=lambda c: pytest.fail(c))
    assert d["drifted_columns"] == ["label"] and d["columns"]["rating"]["status"] == "ok"
    assert "share per value" in (tmp_path / "r.html").read_text()
    hostile("a current CSV with one byte that is not UTF-8, through `fmops drift --log --html`")
    raw = (tmp_path / "cur.csv").read_bytes().replace(b"\n1,3\n", b"\n1,3\xff\n", 1)
    assert b"\xff" in raw
    bad = tmp_path / "bad.csv"; bad.write_bytes(raw)
    before = ws_files(isolated_workspace)
    r = fmops("drift", str(tmp_path / "ref.parquet"), str(bad), "--log", "--html", str(tmp_path / "bad.html"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "Column 'rating': row" in r.stderr and "is not valid UTF-8" in r.stderr and "Decode your texts" in r.stderr
    assert not (tmp_path / "bad.html").exists() and ws_files(isolated_workspace) == before


def test_low_cardinality_through_the_magic(shell, hostile):
    hostile("0/1 prediction column through %fmops drift")
    g = np.random.default_rng(2)
    shell.user_ns.update(ref=pd.DataFrame({"pred": g.integers(0, 2, 3000), "score": g.random(3000)}),
                         cur=pd.DataFrame({"pred": (g.random(3000) < 0.8).astype(int), "score": g.random(3000)}))
    rep = shell.run_line_magic("fmops", "drift ref cur")
    assert rep.drifted == ["pred"] and rep.columns["pred"].profile["labels"] == ["0", "1"]
    strict_json(rep)


# ------------------------------------------------------------------------------------------- identifiers
def test_row_ids_unique_ids_and_epoch_seconds_are_skipped_with_the_fix(hostile):
    g = np.random.default_rng(3)
    n = 20_000
    t0 = 1_767_225_600.0  # 2026-01-01 in epoch seconds
    ref = {"row_id": np.arange(n), "user_id": g.permutation(n) + 10_000, "at": t0 + np.cumsum(g.exponential(3.0, n)),
           "x": g.normal(size=n)}
    cur = {"row_id": np.arange(n, 2 * n), "user_id": g.permutation(n) + 40_000,
           "at": t0 + 86_400 + np.cumsum(g.exponential(3.0, n)), "x": g.normal(size=n)}
    for what in ("a row id", "a shuffled unique integer id", "epoch seconds"): hostile(what)
    rep = drift(ref, cur)
    assert list(rep.columns) == ["x"] and rep.drifted == []
    found = {q["column"]: q["message"] for q in rep.quality if q["check"] == "skipped"}
    assert set(found) == {"row_id", "user_id", "at"}
    assert "all different whole numbers" in found["user_id"] and "rises row by row" in found["at"]
    for col, msg in found.items():
        assert "likely an identifier" in msg and "columns=[...]" in msg and f"kinds={{'{col}': 'numeric'}}" in msg
    declared = drift(ref, cur, kinds={"row_id": "numeric", "user_id": "numeric", "at": "numeric"})  # checked anyway
    assert declared.columns["row_id"].status == "drift" and declared.columns["at"].status == "drift"
    small = drift({"id": np.arange(500)}, {"id": np.arange(500)})  # a small table is not guessed at
    assert small.columns["id"].status == "ok"
    strict_json(rep)


def test_a_monotonic_timestamp_is_skipped_unless_it_is_the_chunking_column(hostile):
    hostile("a monotonic timestamp column in the reference")
    g = np.random.default_rng(4)
    n = 6000
    ts = pd.Timestamp("2026-03-01") + pd.to_timedelta(np.arange(n) * 60, unit="s")
    ref = pd.DataFrame({"ts": ts, "x": g.normal(size=n)})
    cur = pd.DataFrame({"ts": ts + pd.Timedelta(days=7), "x": g.normal(size=n)})
    rep = drift(ref, cur)
    assert "ts" not in rep.columns
    msg = next(q["message"] for q in rep.quality if q["column"] == "ts")
    assert "a timestamp" in msg and "chunk_by='ts'" in msg
    tl = drift(ref, cur, chunk_by="ts")
    assert not any(q["column"] == "ts" for q in tl.quality) and len(tl.chunks) == 5


# ------------------------------------------------------------------------------------------- types and files
def test_float_in_the_reference_integer_now_is_a_type_change_compared_as_numbers(tmp_path, hostile):
    hostile("a column written as 1.0, 2.0 in the reference CSV and 1, 2 in the current one")
    g = np.random.default_rng(5)
    v = g.integers(0, 300, 4000)
    (tmp_path / "ref.csv").write_text("n\n" + "".join(f"{x:.1f}\n" for x in v))
    (tmp_path / "cur.csv").write_text("n\n" + "".join(f"{x}\n" for x in v))
    for a, b, was, now in (("ref.csv", "cur.csv", "float", "integer"), ("cur.csv", "ref.csv", "integer", "float")):
        rep = drift(tmp_path / a, tmp_path / b)
        col = rep.columns["n"]
        assert (col.kind, col.status, col.statistic) == ("numeric", "ok", 0.0)
        q = [f for f in rep.quality if f["check"] == "type_change"]
        assert q and f"stored as {was} in the reference, as {now} in the current data: compared as numbers" \
            in q[0]["message"]
        strict_json(rep)
    assert not any(f["check"] == "type_change" for f in drift(tmp_path / "ref.csv", tmp_path / "ref.csv").quality)


def ns_files(tmp_path):
    "A reference parquet file, and a current one with nanosecond, time-zone and date columns (the third day moved)."
    g = np.random.default_rng(6)
    n = 12_000
    ts = pd.Timestamp("2026-02-01") + pd.to_timedelta(np.sort(g.integers(0, 3 * 86_400 * 10**9, n)), unit="ns")
    x = g.normal(size=n) + 0.5 * (ts >= pd.Timestamp("2026-02-03"))  # the third day moved
    pd.DataFrame({"x": g.normal(size=n)}).to_parquet(tmp_path / "ref.parquet")
    cur = pd.DataFrame({"x": x, "ts": ts, "seen": g.permutation(ts.to_numpy()),
                        "local": ts.tz_localize("UTC").tz_convert("Europe/Berlin"), "day": ts.date})
    cur.to_parquet(tmp_path / "cur.parquet", row_group_size=5000)
    return ts


def test_nanosecond_timestamps_in_parquet_for_chunk_by_and_columns(tmp_path, hostile):
    hostile("parquet with timestamp[ns] values that are not whole microseconds (pandas' default)")
    ts = ns_files(tmp_path)
    schema = pq.read_schema(tmp_path / "cur.parquet")
    assert str(schema.field("ts").type) == "timestamp[ns]" and str(schema.field("day").type) == "date32[day]"
    assert (ts.to_numpy().astype(np.int64) % 1000 != 0).any()  # casting these to µs is what raised ArrowInvalid
    rep = drift(tmp_path / "ref.parquet", tmp_path / "cur.parquet", chunk_by="ts", columns=["x"])
    assert [c["chunk"] for c in rep.chunks] == ["2026-02-01", "2026-02-02", "2026-02-03"]
    assert [c["status"] for c in rep.chunks] == ["ok", "ok", "drift"]
    both = drift(tmp_path / "cur.parquet", tmp_path / "cur.parquet", columns=["seen", "local", "day", "x"])
    assert {q["column"] for q in both.quality if q["check"] == "skipped"} == {"seen", "local", "day"}  # times
    both = drift(tmp_path / "cur.parquet", tmp_path / "cur.parquet", columns=["seen", "local", "day", "x"],
                 kinds={"seen": "datetime"})  # declared: checked
    assert both.columns["seen"].kind == "datetime" and both.columns["seen"].status == "ok"
    from fmops_nb.data import load
    d = load(tmp_path / "cur.parquet", columns=["ts", "local", "day"])
    assert d["ts"].values[0] == pytest.approx(ts[0].value // 1000 / 1e6, abs=1e-6)
    assert d["local"].values[0] == d["ts"].values[0]  # a time zone does not move the instant
    assert d["day"].values[0] == pd.Timestamp(ts[0].date()).timestamp()
    strict_json(rep); strict_json(both)


@pytest.mark.slow
def test_nanosecond_timestamps_through_the_cli(tmp_path, hostile):
    hostile("`fmops drift --chunk-by ts --columns x` on parquet with timestamp[ns] values")
    ns_files(tmp_path)
    r = fmops("drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), "--chunk-by", "ts",
              "--columns", "x", "--json")
    assert r.returncode == 0, r.stderr
    assert [c["status"] for c in json.loads(r.stdout)["chunks"]] == ["ok", "ok", "drift"]


def test_non_utf8_bytes_in_the_current_csv_are_the_reference_side_error(tmp_path, hostile):
    hostile("a current CSV whose category column has one byte that is not UTF-8")
    rows = "".join(f"{'ab'[i % 2]},{i}\n" for i in range(300))
    (tmp_path / "ref.csv").write_text("c,x\n" + rows)
    (tmp_path / "cur.csv").write_bytes(b"c,x\n" + rows.encode() + b"\xffa,3\n")
    with pytest.raises(ValidationError) as cur_err:
        drift(tmp_path / "ref.csv", tmp_path / "cur.csv")
    with pytest.raises(ValidationError) as ref_err:
        drift(tmp_path / "cur.csv", tmp_path / "ref.csv")
    assert str(cur_err.value) == str(ref_err.value)
    msg = str(cur_err.value)
    assert msg.startswith("Column 'c': row 300 is not valid UTF-8") and "Decode your texts" in msg
    hostile("the same byte in a column that --columns leaves out")
    rep = drift(tmp_path / "ref.csv", tmp_path / "cur.csv", columns=["x"])
    assert list(rep.columns) == ["x"]


def test_zero_byte_and_truncated_parquet_are_clear_errors_naming_the_file(tmp_path, hostile):
    good = tmp_path / "good.parquet"
    g = np.random.default_rng(11)
    pd.DataFrame({"x": g.normal(size=1000), "c": g.choice(["a", "b"], 1000)}).to_parquet(good)
    empty, cut = tmp_path / "empty.parquet", tmp_path / "cut.parquet"
    empty.write_bytes(b"")
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    from fmops_nb.data import load
    for path, what in ((empty, "a 0-byte parquet file"), (cut, "a parquet file cut in half")):
        hostile(what)
        size = path.stat().st_size
        for call in (lambda: drift(path, good), lambda: drift(good, path), lambda: load(path),
                     lambda: drift(good, path, chunk_by="c")):
            with pytest.raises(ValidationError) as e:
                call()
            assert str(path) in str(e.value) and "Check that it is a complete parquet file" in str(e.value)
        assert path.stat().st_size == size  # nothing was written to it
    r = fmops("drift", str(good), str(empty))
    assert r.returncode == 1 and "Traceback" not in r.stderr and f"Cannot read {empty} as parquet" in r.stderr


def test_struct_and_list_of_string_columns_are_skipped_or_a_clear_error(tmp_path, hostile):
    hostile("struct and list<string> columns beside a numeric one")
    g = np.random.default_rng(7)
    n = 500
    tbl = pa.table({"x": g.normal(size=n), "meta": pa.array([{"a": int(i), "b": "z"} for i in range(n)]),
                    "tags": pa.array([["red", "blue"][: 1 + i % 2] for i in range(n)])})
    pq.write_table(tbl, tmp_path / "t.parquet")
    for data in (tbl, tmp_path / "t.parquet", tbl.to_pandas()):
        rep = drift(data, data)
        assert list(rep.columns) == ["x"]
        skipped = {q["column"]: q["message"] for q in rep.quality if q["check"] == "skipped"}
        assert set(skipped) == {"meta", "tags"}
        assert all("leave it out with columns=[...]" in m for m in skipped.values())
        assert "new_column" not in {q["check"] for q in rep.quality}
        strict_json(rep)
        hostile("the same columns asked for by name")
        with pytest.raises(ValidationError, match="Column 'tags' .*cannot compare"):
            drift(data, data, columns=["x", "tags"])
    hostile("a column numeric in the reference and a struct in the current data")
    rep = drift({"x": g.normal(size=n), "m": g.normal(size=n)}, pa.table({"x": g.normal(size=n), "m": tbl["meta"]}))
    assert rep.columns["m"].status == "missing" and rep.columns["x"].status == "ok"
    assert any(q["column"] == "m" and q["check"] == "type_change" and "cannot compare" in q["message"]
               for q in rep.quality)


def test_a_mixed_column_left_out_by_columns_no_longer_fails(shell, hostile):
    hostile("an object column mixing ints and strings, not asked for")
    g = np.random.default_rng(8)
    n = 400
    ref = pd.DataFrame({"a": g.normal(size=n), "b": g.normal(size=n), "mixed": [1, "two"] * (n // 2)})
    cur = pd.DataFrame({"a": g.normal(size=n), "b": g.normal(size=n), "mixed": ["two", 3.0] * (n // 2)})
    assert list(drift(ref, cur, columns=["a", "b"]).columns) == ["a", "b"]
    shell.user_ns.update(ref=ref, cur=cur)
    assert list(shell.run_line_magic("fmops", "drift ref cur --columns a,b").columns) == ["a", "b"]
    rep = drift(ref, cur)
    assert list(rep.columns) == ["a", "b"]
    assert any(q["column"] == "mixed" and q["check"] == "skipped" and "mixes types" in q["message"]
               for q in rep.quality)
    hostile("the mixed column asked for by name")
    with pytest.raises(UsageError, match="Column 'mixed' mixes types"):
        shell.run_line_magic("fmops", "drift ref cur --columns a,mixed")
    declared = drift(ref, cur, kinds={"mixed": "categorical"})  # declared categorical: compared as strings
    assert declared.columns["mixed"].kind == "categorical" and declared.columns["mixed"].status == "drift"


def test_repeated_column_names_are_a_clear_error(hostile):
    hostile("a DataFrame with two columns named 'x'")
    df = pd.DataFrame([[1.0, 2.0]] * 50, columns=["x", "x"])
    with pytest.raises(ValidationError, match="Column name\\(s\\) 'x' appear more than once"):
        drift(df, df)
    hostile("a dict with the keys 1 and '1'")
    with pytest.raises(ValidationError, match="'1' appear more than once"):
        drift({1: np.ones(50), "1": np.ones(50)}, {"1": np.ones(50)})


# ------------------------------------------------------------------------------------------- watch
@pytest.mark.slow
def test_significant_shifts_below_the_effect_threshold_are_named_to_watch(hostile):
    hostile("four small real shifts in 25 columns of 200,000 rows")
    g = np.random.default_rng(9)
    n = 200_000
    ref = {f"n{i}": g.normal(size=n) for i in range(25)}
    cur = {f"n{i}": g.normal(size=n) for i in range(25)}
    for c in ("n3", "n7", "n11", "n19"): cur[c] = cur[c] + 0.04
    bh = drift(ref, cur)  # the default rule, Benjamini–Hochberg: the four, and perhaps a null column by chance (FDR)
    assert bh.drifted == [] and {"n3", "n7", "n11", "n19"} <= set(bh.watch) and len(bh.watch) <= 5
    assert all(bh.columns[c].stats["p_adjusted"] < 0.05 for c in bh.watch)
    rep = drift(ref, cur, rule=DecisionRule(correction="bonferroni"))
    assert rep.drifted == [] and rep.watch == ["n3", "n7", "n11", "n19"]
    assert rep.headline().startswith("Drift: 0 of 25 columns drifted; 4 to watch (n3, n7, n11, n19)")
    assert {rep.columns[c].status for c in rep.watch} == {"watch"} and rep.dataset_drift is False
    assert all(rep.columns[c].stats["p_adjusted"] < 0.05 for c in rep.watch)
    assert "watch" in rep.rule and "watch   " in repr(rep)
    d = strict_json(rep)
    assert d["watch_columns"] == rep.watch and d["columns"]["n3"]["status"] == "watch"
    assert "<tr class='fmops-watch'>" in rep._repr_html_()  # the stylesheet colours a row by its class
    from fmops_nb.widgets import DriftPanel
    assert "#ef6c00" in DriftPanel(rep).header.value
    assert drift(ref, cur, rule=DecisionRule(mode="p_value")).watch == []  # p-value mode: those columns are drift


# ------------------------------------------------------------------------------------------- HTML
def _html_of(widget):
    "The values of every HTML widget inside `widget`, recursively."
    import ipywidgets as W
    out = [widget.value] if isinstance(widget, W.HTML) else []
    for child in getattr(widget, "children", ()):
        out += _html_of(child)
    return out


def assert_inert(markup: str, what: str):
    assert XSS not in markup, f"{what} holds the raw markup"
    assert "<img" not in markup and "onerror=alert(1)>" not in markup


def test_hostile_names_categories_texts_and_methods_reach_html_only_escaped(tmp_path, hostile):
    from fmops_nb.html import column_detail, column_table, quality_html, svg_timeline
    from fmops_nb.widgets import DriftPanel
    for what in ("a column name", "a category", "a text", "a third-party method's name", "a chunk label"):
        hostile(f"{XSS} as {what}")
    g = np.random.default_rng(10)
    n = 600
    texts = [f"ticket {i} about the invoice for order {i % 7}" for i in range(n)]
    ref = {XSS: g.normal(size=n), "cat": g.choice(["a", "b"], n), "doc": texts, "batch": g.choice(["b1", "b2"], n)}
    cur = {XSS: g.normal(1, 1, n), "cat": np.r_[g.choice(["a", "b"], n - 200), [XSS] * 200],
           "doc": texts[:300] + [f"{XSS} again {i}" for i in range(300)], "batch": g.choice(["b1", XSS], n)}
    rep = drift(ref, cur, embedder="hashing", cache=False, chunk_by="batch")
    assert set(rep.drifted) == {XSS, "cat", "doc"} and XSS in rep.headline()
    assert any(XSS in e["row"] for e in rep.columns["doc"].stats["least_like_reference"])
    pieces = {"_repr_html_": rep._repr_html_(), "column_table": column_table(rep), "quality_html": quality_html(rep),
              "svg_timeline": svg_timeline(rep.chunks),
              **{f"column_detail({k!r})": column_detail(rep, k) for k in rep.columns}}
    page = (tmp_path / "r.html")
    pieces["save()"] = open(rep.save(page), encoding="utf-8").read()
    panel = DriftPanel(rep)
    for k in rep.columns:
        panel.column.value = k  # every column's detail, as a person would pick it
        pieces[f"panel detail {k!r}"] = panel.detail.value
    panel.table.sort("column")  # a click on the heading "column"
    pieces.update({f"panel widget {i}": v for i, v in enumerate(_html_of(panel))})
    for what, markup in pieces.items():
        assert_inert(markup, what)
    for what in ("_repr_html_", "column_table", f"column_detail({XSS!r})", "column_detail('cat')",
                 "column_detail('doc')", "save()", "svg_timeline"):
        assert ESCAPED in pieces[what], what
    hostile(f"{XSS} as the name of a registered drift method, and as a statistic it returns")
    stat = {"odd": 0.7}
    METHODS.register(XSS, Method(XSS, "odd", ("numeric",), "effect", 0.5, compute=lambda r, c, b: dict(stat)))
    try:
        odd = drift({"x": g.normal(size=n)}, {"x": g.normal(size=n)}, method=XSS)
        stat["odd"] = XSS
        odder = drift({"x": g.normal(size=n)}, {"x": g.normal(size=n)}, method=XSS)
    finally:
        METHODS.unregister(XSS)
    assert (odd.columns["x"].method, odd.columns["x"].status) == (XSS, "drift")
    col = odder.columns["x"]
    assert col.method == "jensenshannon" and f"{XSS} gave no usable odd" in col.note  # a string is no statistic
    for r in (odd, odder):
        for markup in (r._repr_html_(), column_table(r), column_detail(r, "x"), *_html_of(DriftPanel(r))):
            assert_inert(markup, "a report decided by (or around) a hostile method")
        assert ESCAPED in r._repr_html_() and ESCAPED in column_table(odd)
        strict_json(r)
    strict_json(rep)


def test_version_diff_html_escapes_module_tensor_and_metric_names(hostile):
    from types import SimpleNamespace
    from fmops_nb.html import diff_html, svg_modules
    for what in ("a module name", "a tensor name", "a metric name", "a config value", "a flipped input"):
        hostile(f"{XSS} as {what}")
    mods = [{"module": f"encoder.{XSS}", "changed": 1, "tensors": 2, "rel_delta": 0.5,
             "structural": [f"shape of {XSS}"]},
            {"module": "head", "changed": 0, "tensors": 1, "rel_delta": 0.0, "structural": []}]
    metric = {"metric": XSS, "a": 1.0, "b": XSS, "delta": None, "direction": XSS, "verdict": XSS}
    d = SimpleNamespace(headline=lambda: f"m:v1 -> m:v2: {XSS}", lineage=f"m:v2 from {XSS}",
                        cost={"skipped_by_hash": XSS, "bytes_read": XSS}, tensors=[object()], modules=mods,
                        metrics=[metric],
                        config=[{"key": XSS, "change": "changed", "a": 1, "b": XSS}],
                        data=[{"role": XSS, "same": False, "rows_a": 1, "rows_b": 2, "schema_changes": [XSS]}],
                        lora={XSS: [{"module": XSS, "rank": 2, "r": 8, "norm_delta": 0.1, "rel_delta": XSS}]},
                        behaviour={"probe": XSS, "agreement": 0.5, "n": 2,
                                   "flipped": [{"index": 0, "input": XSS, "a": XSS, "b": "ok"}]})
    for markup in (svg_modules(mods), diff_html(d)):
        assert_inert(markup, "diff html")
        assert ESCAPED in markup


def test_calibration_skips_what_the_check_skips(hostile):
    hostile("a row id and a mixed-type column in the reference that `calibrate` splits")
    g = np.random.default_rng(12)
    df = pd.DataFrame({"x": g.normal(size=4000), "row_id": np.arange(4000), "mixed": [1, "a"] * 2000,
                       "label": g.integers(0, 3, 4000)})
    cal = calibrate(df, splits=3)
    assert set(cal.columns) == {"x", "label"} and cal.dataset_false_alarm_rate == 0.0
    assert "row_id" in calibrate(df, splits=2, kinds={"row_id": "numeric"}).columns  # declared: calibrated too
    with pytest.raises(ValidationError, match="Column 'mixed' mixes types"):
        calibrate(df, splits=2, columns=["x", "mixed"])


def test_an_embedding_row_with_infinity_is_a_missing_row(hostile):
    hostile("embeddings with one row holding +inf and one holding NaN")
    g = np.random.default_rng(13)
    e_ref, e_cur = g.normal(size=(400, 8)).astype(np.float32), g.normal(size=(400, 8)).astype(np.float32)
    e_cur[0, 0], e_cur[1, 1] = np.inf, np.nan
    rep = drift(e_ref, e_cur)
    col = rep.columns["embedding"]
    assert (col.status, col.n_current) == ("ok", 398) and math.isfinite(col.stats["mmd2"])
    strict_json(rep)
    hostile("a DataFrame column of vectors with NaN where a vector is missing")
    vectors = pd.DataFrame({"e": [list(v) for v in e_ref[:200]] + [np.nan] * 10})
    col = drift(vectors, vectors).columns["e"]
    assert (col.kind, col.status, col.n_reference) == ("embedding", "ok", 200)


# ------------------------------------------------------------------------------------------- wave 2: ordinary tables
SNOWFLAKE = 1_234_567_890_123_456_789


def limited(mb=4096):
    "A preexec_fn capping a child's address space, so that a regression fails with MemoryError instead of the machine."
    import resource
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (mb << 20, mb << 20))


def test_integers_beyond_2_53_are_identifiers_not_a_crash(tmp_path, shell, hostile):
    g = np.random.default_rng(20)
    snow = pa.table({"user_id": np.arange(3000, dtype=np.int64) + SNOWFLAKE, "x": g.normal(size=3000)})
    hashes = pa.table({"h": pa.array(g.integers(0, 2**63, 3000, dtype=np.uint64) * np.uint64(2)),
                       "x": g.normal(size=3000)})
    pq.write_table(snow, tmp_path / "snow.parquet")
    snow.to_pandas().to_csv(tmp_path / "snow.csv", index=False)
    cases = {"snowflake ids in parquet": tmp_path / "snow.parquet", "snowflake ids in csv": tmp_path / "snow.csv",
             "snowflake ids in an arrow table": snow, "snowflake ids in pandas": snow.to_pandas(),
             "uint64 hashes above 2^63 in an arrow table": hashes}
    for what, data in cases.items():
        hostile(what)
        rep = drift(data, data)
        assert list(rep.columns) == ["x"] and rep.columns["x"].status == "ok", what
        name = "h" if "hashes" in what else "user_id"
        msg = next(q["message"] for q in rep.quality if q["column"] == name and q["check"] == "skipped")
        assert "go beyond 2^53" in msg and "columns=[...]" in msg and f"kinds={{'{name}': 'numeric'}}" in msg
        strict_json(rep)
    hostile("a table whose only column is snowflake ids")
    only = tmp_path / "only.parquet"
    pq.write_table(snow.select(["user_id"]), only)
    with pytest.raises(ValidationError, match="No column of the reference can be checked: user_id: its whole numbers go"
                                              " beyond 2\\^53"):
        drift(only, only)
    declared = drift(only, only, kinds={"user_id": "numeric"})  # declared: compared at a float's precision
    assert declared.columns["user_id"].status == "ok"
    hostile("snowflake ids through %fmops drift")
    shell.user_ns.update(snow=snow.to_pandas())
    rep = shell.run_line_magic("fmops", f"drift snow {tmp_path / 'snow.csv'}")
    assert list(rep.columns) == ["x"]


def test_polars_categorical_and_enum_columns_and_their_parquet(tmp_path, hostile):
    pl = pytest.importorskip("polars")
    g = np.random.default_rng(21)
    plans = ["free", "pro", "team"]
    ref = pl.DataFrame({"plan": pl.Series(g.choice(plans, 6000).tolist(), dtype=pl.Categorical)})
    same = pl.DataFrame({"plan": pl.Series(g.choice(plans, 6000).tolist(), dtype=pl.Categorical)})
    moved = pl.DataFrame({"plan": pl.Series(g.choice(plans, 6000, p=[.6, .3, .1]).tolist(), dtype=pl.Categorical)})
    enum = pl.Enum(plans)
    for what, cast in (("a polars Categorical column", lambda d: d),
                       ("a polars Enum column", lambda d: d.with_columns(pl.col("plan").cast(enum)))):
        hostile(what)
        assert str(cast(ref).to_arrow().schema.field("plan").type).startswith("dictionary<values=large_string, "
                                                                              "indices=uint")
        assert drift(cast(ref), cast(same)).columns["plan"].status == "ok"
        assert drift(cast(ref), cast(moved)).columns["plan"].status == "drift"
    hostile("parquet files written from polars Categorical columns, with a missing value")
    ref.with_columns(pl.when(pl.int_range(6000) == 0).then(None).otherwise(pl.col("plan")).alias("plan")) \
        .write_parquet(tmp_path / "ref.parquet")
    moved.write_parquet(tmp_path / "cur.parquet")
    rep = drift(tmp_path / "ref.parquet", tmp_path / "cur.parquet")
    col = rep.columns["plan"]
    assert (col.kind, col.status, col.n_reference) == ("categorical", "drift", 5999)
    assert col.profile["labels"] and set(col.profile["labels"]) == set(plans)
    strict_json(rep)


@pytest.mark.slow
def test_a_text_column_of_numbers_in_current_is_compared_as_text(tmp_path, isolated_workspace, hostile):
    hostile("a text column whose current values are all numbers (CSV), through `fmops drift --embedder hashing`")
    body = [f"my invoice number {i} shows the wrong amount for the month of May" for i in range(300)]
    pd.DataFrame({"body": body}).to_csv(tmp_path / "tref.csv", index=False)
    pd.DataFrame({"body": [str(10_000 + i) for i in range(300)]}).to_csv(tmp_path / "tcur.csv", index=False)
    rep = drift(tmp_path / "tref.csv", tmp_path / "tcur.csv", embedder="hashing", cache=False)
    col = rep.columns["body"]
    assert (col.kind, col.status) == ("text", "drift")
    assert all(str(e["row"]).startswith("10") for e in col.stats["least_like_reference"])  # the numbers, as text
    same = drift(tmp_path / "tcur.csv", tmp_path / "tcur.csv", kinds={"body": "text"}, embedder="hashing", cache=False)
    assert same.columns["body"].status == "ok"
    r = fmops("drift", str(tmp_path / "tref.csv"), str(tmp_path / "tcur.csv"), "--embedder", "hashing", "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["columns"]["body"]["status"] == "drift"


def test_small_api_inputs_that_crashed_are_clear(hostile):
    g = np.random.default_rng(22)
    hostile("a numeric reference column against a current column of vectors (beside a good column)")
    rep = drift({"a": g.random(300), "b": g.random(300)}, {"a": list(g.random((300, 4))), "b": g.random(300)})
    assert rep.columns["a"].status == "missing" and rep.columns["b"].status == "ok"
    assert any(q["column"] == "a" and q["check"] == "type_change" and "holds vectors or lists" in q["message"]
               for q in rep.quality)
    hostile("the same as the only column, and as a 2-D array")
    for cur in ({"a": list(g.random((300, 4)))}, {"a": g.random((300, 4))}):
        with pytest.raises(ValidationError, match="No column of the current data can be compared with the reference: "
                                                  "a: was numeric in the reference.*holds vectors or lists"):
            drift({"a": g.random(300)}, cur)
    for what, bad, kind in (("a scalar where a column belongs", {"a": 5}, "int"),
                            ("a string where a column belongs", {"a": "hello"}, "str"),
                            ("a dict where a column belongs", {"a": {"x": 1}}, "dict")):
        hostile(what)
        with pytest.raises(ValidationError, match=f"Column 'a' is a single {kind} .*Pass a list or array per column"):
            drift(bad, {"a": [1, 2, 3]})
        with pytest.raises(ValidationError, match=f"Column 'a' is a single {kind}"):
            drift({"a": [1, 2, 3]}, bad)
    for what, v in (("denormal values", np.array([0, 5e-324, 1e-323] * 100)),
                    ("values at ±1e308", np.array([-1e308, 0.0, 1e308] * 100)),
                    ("normal values scaled to 1e-310", g.normal(size=3000) * 1e-310),
                    ("a column mixing 1e-320 and 1e300", np.r_[np.full(500, 1e-320), g.random(500) * 1e300])):
        hostile(what)
        rep = drift({"v": v}, {"v": v[::-1].copy()})
        assert rep.columns["v"].status == "ok" and rep.columns["v"].stats["ks"] == 0.0, what
        strict_json(rep)
    hostile("a Python integer too large for a float")
    with pytest.raises(ValidationError, match="too large for a float"):
        drift({"a": [10**400, 1, 2] * 20}, {"a": [1, 2, 3] * 20}, columns=["a"])


# ------------------------------------------------------------------------------------------- wave 2: false alarms
def levels(k):
    return np.array([f"L{i}" for i in range(k)], dtype=object)


@pytest.mark.slow
@pytest.mark.parametrize("k", [2000, 5000])
def test_high_cardinality_categoricals_from_one_distribution_do_not_alarm(k, hostile):
    hostile(f"two samples of 20,000 rows from one distribution over {k:,} categories")
    g = np.random.default_rng(k)
    rep = drift({"c": g.choice(levels(k), 20_000)}, {"c": g.choice(levels(k), 20_000)})
    col = rep.columns["c"]
    assert (col.method, col.status, rep.dataset_drift) == ("jensenshannon", "ok", False)
    assert col.stats["jensenshannon_raw"] > 0.15 and col.statistic < 0.06  # biased before, about zero now
    assert col.stats["psi_raw"] > 0.15 and col.stats["psi"] < 0.05
    cal = calibrate({"c": g.choice(levels(k), 40_000)}, splits=5)
    assert cal.dataset_false_alarm_rate == 0.0 and cal.columns["c"]["max_statistic"] < 0.1
    p = np.ones(k); p[: k // 10] *= 3  # a tenth of the categories three times as likely: real drift
    moved = drift({"c": g.choice(levels(k), 20_000)}, {"c": g.choice(levels(k), 20_000, p=p / p.sum())})
    assert moved.columns["c"].status == "drift" and moved.columns["c"].statistic >= 0.1
    strict_json(rep)


def test_a_large_categorical_effect_needs_a_significant_test_too(hostile):
    hostile("5,000 categories, 5,000 rows a side, one distribution: an effect over the threshold by chance")
    g = np.random.default_rng(3)
    a, b = g.choice(levels(5000), 5000), g.choice(levels(5000), 5000)
    loose = drift({"c": a}, {"c": b}, rule=DecisionRule(significant=False)).columns["c"]
    assert loose.status == "drift" and loose.statistic >= 0.1 and loose.p_value >= 0.05
    col = drift({"c": a}, {"c": b}).columns["c"]
    assert (col.status, col.drifted) == ("ok", False) and col.statistic == loose.statistic
    assert "the chi-squared test is not significant" in col.note and "by chance" in col.note
    assert "a categorical effect counts only with a corrected p-value < 0.05" in DecisionRule().describe()


def test_unsorted_timestamps_and_epoch_integers_are_time_not_features(hostile):
    g = np.random.default_rng(23)
    n = 20_000
    jan = pd.Timestamp("2026-01-01") + pd.to_timedelta(g.integers(0, 31 * 86_400, n), unit="s")
    feb = jan + pd.Timedelta(days=31)
    secs = lambda t: ((t - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)).to_numpy()
    ref = pd.DataFrame({"created_at": jan, "at_s": secs(jan), "at_ms": secs(jan) * 1000,
                        "at_ns": secs(jan) * 10**9 + g.integers(0, 10**9, n), "x": g.normal(size=n)})
    cur = pd.DataFrame({"created_at": feb, "at_s": secs(feb), "at_ms": secs(feb) * 1000,
                        "at_ns": secs(feb) * 10**9 + g.integers(0, 10**9, n), "x": g.normal(size=n)})
    for what in ("created_at drawn at random within January against February (not sorted)",
                 "epoch seconds as integers, not sorted", "epoch milliseconds as integers",
                 "epoch nanoseconds as int64"):
        hostile(what)
    rep = drift(ref, cur)
    assert list(rep.columns) == ["x"] and rep.dataset_drift is False
    why = {q["column"]: q["message"] for q in rep.quality if q["check"] == "skipped"}
    assert set(why) == {"created_at", "at_s", "at_ms", "at_ns"}
    assert why["created_at"].startswith("a timestamp") and "chunk_by='created_at'" in why["created_at"]
    assert "hour of day" in why["created_at"] and "kinds={'created_at': 'datetime'}" in why["created_at"]
    for col, unit in (("at_s", "seconds"), ("at_ms", "milliseconds"), ("at_ns", "nanoseconds")):
        assert f"read as times from 2026-01-01 to 2026-01-31 in {unit} since 1970" in why[col], why[col]
        assert "hour of day" in why[col] and f"kinds={{'{col}': 'numeric'}}" in why[col]
    assert "kinds={'at_s': 'datetime'}, chunk_by='at_s'" in why["at_s"] and "unit='ms'" in why["at_ms"]
    declared = drift(ref, cur, kinds={"created_at": "datetime", "at_ms": "numeric"})  # declared: checked anyway
    assert declared.columns["created_at"].status == "drift" and declared.columns["at_ms"].status == "drift"
    tl = drift(ref, cur, chunk_by="created_at", period="W", columns=["x", "created_at"])  # the time column: chunks
    assert len(tl.chunks) == 6 and not any(q["column"] == "created_at" for q in tl.quality)
    hostile("codes and counts that are not times: a few whole numbers in the epoch range, small integers")
    fine = drift({"code": g.choice([1_700_000_000, 1_700_000_001], n), "count": g.integers(0, 10**6, n)},
                 {"code": g.choice([1_700_000_000, 1_700_000_001], n), "count": g.integers(0, 10**6, n)})
    assert set(fine.columns) == {"code", "count"}
    strict_json(rep)


# ------------------------------------------------------------------------------------------- wave 2: timeline size
def test_a_timeline_is_bounded_before_it_is_built(tmp_path, hostile):
    g = np.random.default_rng(24)
    n = 20_000
    ts = pd.Timestamp("2026-03-01") + pd.to_timedelta(g.integers(0, 7 * 86_400, n), unit="s")
    ref, cur = pd.DataFrame({"x": g.normal(size=n)}), pd.DataFrame({"x": g.normal(size=n), "ts": ts})
    # period='ns' (20 GB before the fix) is tried in a subprocess under a memory cap: see the next test
    hostile("one 1970-01-01 placeholder row in a week of data")
    stray = cur.copy(); stray.loc[0, "ts"] = pd.Timestamp("1970-01-01")
    with pytest.raises(ValidationError, match="per period='D', from 1970-01-01 to 2026-03-07, would make 20,520 chunks"
                                              ".*leave out the rows far from the rest"):
        drift(ref, stray, chunk_by="ts")
    assert len(drift(ref, stray, chunk_by="ts", period="Y").chunks) == 57  # a coarser period: fine
    assert len(drift(ref, stray, chunk_by="ts", max_chunks=30_000).chunks) == 20_520  # the limit is a setting
    hostile("a categorical chunk_by column with a value per row")
    with pytest.raises(ValidationError, match="chunk_by='u' \\(one chunk per value\\) would make 20,000 chunks"):
        drift(ref, cur.assign(u=[f"u{i}" for i in range(n)]), chunk_by="u")
    for what, size, err in (("chunk_size=1", 1, "would make 20,000 chunks.*Use a chunk_size of at least 20"),
                            ("chunk_size=0", 0, "chunk_size must be a positive whole number"),
                            ("chunk_size=2.5", 2.5, "chunk_size must be a positive whole number"),
                            ("chunk_size=True", True, "chunk_size must be a positive whole number")):
        hostile(what)
        with pytest.raises(ValidationError, match=err):
            drift(ref, cur, chunk_size=size)
    hostile("chunk_size=99999999999999999999 (beyond int64)")
    assert [c["n"] for c in drift(ref, cur, chunk_size=99999999999999999999).chunks] == [n]
    hostile("the same limits on a parquet file read row group by row group")
    cur.to_parquet(tmp_path / "cur.parquet", row_group_size=5000)
    stray.to_parquet(tmp_path / "stray.parquet", row_group_size=5000)
    with pytest.raises(ValidationError, match="would make 20,520 chunks"):
        drift(ref, tmp_path / "stray.parquet", chunk_by="ts")
    with pytest.raises(ValidationError, match="chunk_size=10 on 20,000 rows would make 2,000 chunks"):
        drift(ref, tmp_path / "cur.parquet", chunk_size=10)
    hostile("a time beyond what a nanosecond period holds (year 9999)")
    far = cur.assign(ts=pd.Series(np.full(n, np.datetime64("9999-01-01", "s"))))
    with pytest.raises(ValidationError, match="Cannot split chunk_by column 'ts' per 'ns'.*holds these times"):
        drift(ref, far, chunk_by="ts", period="ns")


@pytest.mark.slow
def test_the_cli_timeline_stays_small_in_memory_and_on_disk(tmp_path, isolated_workspace, hostile):
    hostile("`fmops drift --chunk-by ts --period ns --log --html` (20 GB before), under a 4 GB memory cap")
    g = np.random.default_rng(25)
    ts = pd.Timestamp("2026-03-01") + pd.to_timedelta(g.integers(0, 7 * 86_400, 20_000), unit="s")
    pd.DataFrame({"x": g.normal(size=20_000), "ts": ts}).to_parquet(tmp_path / "r.parquet")
    before = ws_files(isolated_workspace)
    r = subprocess.run([shutil.which("fmops"), "drift", str(tmp_path / "r.parquet"), str(tmp_path / "r.parquet"),
                        "--chunk-by", "ts", "--period", "ns", "--log", "--html", str(tmp_path / "r.html")],
                       capture_output=True, text=True, timeout=300, preexec_fn=limited())
    assert r.returncode == 1 and "Traceback" not in r.stderr and "MemoryError" not in r.stderr, r.stderr
    assert "chunk_by='ts' per period='ns', from 2026-03-01" in r.stderr and "more than the limit of 1,000" in r.stderr
    assert "Choose a coarser period" in r.stderr
    assert not (tmp_path / "r.html").exists() and ws_files(isolated_workspace) == before
    hostile("`fmops drift --chunk-size 99999999999999999999`")
    r = fmops("drift", str(tmp_path / "r.parquet"), str(tmp_path / "r.parquet"), "--chunk-size",
              "99999999999999999999", "--json")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert [c["n"] for c in json.loads(r.stdout)["chunks"]] == [20_000]


# ------------------------------------------------------------------------------------------- wave 2: arguments
@pytest.mark.slow
def test_a_negative_seed_and_empty_columns_are_clear_errors(tmp_path, isolated_workspace, shell, hostile):
    g = np.random.default_rng(26)
    big = pd.DataFrame({"x": g.normal(size=120_000)})  # more than the 100,000 rows that are sampled
    big.to_parquet(tmp_path / "big.parquet")
    before = ws_files(isolated_workspace)
    for what, args, msg in (("--seed -1 on 120,000 rows", ["--seed", "-1"], "seed must be a whole number from 0"),
                            ("--seed 2**64", ["--seed", str(2**64)], "seed must be a whole number from 0"),
                            ("--columns ,,,", ["--columns", ",,,"], "columns must name at least one column")):
        hostile(f"`fmops drift {' '.join(args)}`")
        r = fmops("drift", str(tmp_path / "big.parquet"), str(tmp_path / "big.parquet"), *args, "--log")
        assert r.returncode == 1 and "Traceback" not in r.stderr and msg in r.stderr, r.stderr
        assert "has no rows" not in r.stderr
        hostile(f"`%fmops drift {' '.join(args)}`")
        shell.user_ns.update(big=big)
        with pytest.raises(UsageError, match=msg):
            shell.run_line_magic("fmops", f"drift big big {' '.join(args)}")
    assert ws_files(isolated_workspace) == before
    for seed in (-1, 2**63, 1.5, True, "0"):
        with pytest.raises(ValidationError, match="seed must be a whole number"):
            calibrate(big.iloc[:100], splits=2, seed=seed)
    with pytest.raises(ValidationError, match="columns must be a list of column names"):
        drift(big, big, columns="x")


# ------------------------------------------------------------------------------------------- wave 2: no rows?
def test_no_rows_is_said_only_when_there_are_no_rows(tmp_path, hostile):
    import datetime as dt
    import uuid
    g = np.random.default_rng(27)
    pd.DataFrame({"amount": g.random(500).round(2)}).to_csv(tmp_path / "ref1.csv", index=False)
    pd.DataFrame({"amount": [f"${v:.2f}" for v in g.random(500)]}).to_csv(tmp_path / "cur1.csv", index=False)
    hostile("a current CSV with amounts written as '$1.20'")
    with pytest.raises(ValidationError) as e:
        drift(tmp_path / "ref1.csv", tmp_path / "cur1.csv")
    msg = str(e.value)
    assert "has no rows" not in msg
    assert msg.startswith("No column of the current data can be compared with the reference: amount: was numeric in "
                          "the reference") and "holds '$" in msg and "Fix the current data" in msg
    hostile("the same beside a good column")
    pd.DataFrame({"amount": g.random(500), "n": g.integers(0, 5, 500)}).to_csv(tmp_path / "ref2.csv", index=False)
    pd.DataFrame({"amount": [f"${v:.2f}" for v in g.random(500)], "n": g.integers(0, 5, 500)}).to_csv(
        tmp_path / "cur2.csv", index=False)
    rep = drift(tmp_path / "ref2.csv", tmp_path / "cur2.csv")
    assert rep.columns["n"].status == "ok" and rep.columns["amount"].status == "missing"
    assert any(q["column"] == "amount" and q["check"] == "type_change" for q in rep.quality)
    hostile("a list of texts with one None, and one with a NaN")
    texts = [f"the parcel {i} arrived late and the box was damaged" for i in range(300)]
    for cur in (texts[:-1] + [None], [float("nan")] + texts[1:]):
        rep = drift(texts, cur, embedder="hashing", cache=False)
        col = rep.columns["text"]
        assert (col.kind, col.status, col.n_current) == ("text", "ok", 299)
    hostile("a column list of only commas")
    with pytest.raises(ValidationError, match="columns must name at least one column"):
        drift(tmp_path / "ref2.csv", tmp_path / "cur2.csv", columns=[])
    for what, frame, why in (
            ("a frame whose only column is uuid", pd.DataFrame({"u": [uuid.uuid4() for _ in range(300)]}), "uuid"),
            ("a frame whose only column is datetime.time",
             pd.DataFrame({"t": [dt.time(i % 24) for i in range(300)]}), "a time of day")):
        hostile(what)
        with pytest.raises(ValidationError) as e:
            drift(frame, frame)
        assert "has no rows" not in str(e.value)
        assert str(e.value).startswith("No column of the reference can be checked: ") and why in str(e.value)
    hostile("a frame whose only column is sparse")
    sparse = pd.DataFrame({"s": pd.arrays.SparseArray(np.r_[np.zeros(950), np.ones(50)])})
    assert drift(sparse, sparse).columns["s"].status == "ok"
    hostile("a frame whose rows are all there but whose columns are all renamed")
    with pytest.raises(ValidationError, match="amount: in the reference but not in the current data"):
        drift(tmp_path / "ref1.csv", pd.DataFrame({"total": g.random(500)}))
    with pytest.raises(ValidationError, match="The current data has no rows"):  # and when there are none, it says so
        drift(tmp_path / "ref1.csv", pd.DataFrame({"amount": np.array([], dtype=float)}))


def test_text_times_in_a_column_declared_datetime_are_read_and_a_bad_one_is_named(hostile):
    "A log's `ts` as ISO 8601 text (any UTC offset) is a datetime column; the error names the value that is no time."
    hostile("a datetime column of text times with one 'yesterday' in the current data")
    ts = pd.date_range("2026-11-01", periods=60, freq="h", tz="UTC")
    ref = pd.DataFrame({"ts": [t.isoformat() for t in ts], "x": range(60)})  # '2026-11-01T00:00:00+00:00'
    cur = pd.DataFrame({"ts": [t.tz_convert("Europe/Paris").isoformat() for t in ts], "x": range(60)})
    rep = drift(ref, cur, kinds={"ts": "datetime"})  # was: "is datetime but holds '2026-11-01T00:00:00+00:00'"
    assert rep.columns["ts"].kind == "datetime" and rep.columns["ts"].status == "ok"  # the same instants: no drift
    cur.loc[7, "ts"] = "yesterday"
    with pytest.raises(ValidationError, match="is datetime but holds 'yesterday'"):  # was: its first, valid, value
        drift(ref, cur, kinds={"ts": "datetime"})
