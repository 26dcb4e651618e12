"""The drift charts say what a person looks for: which columns moved when (against each one's threshold), where the
current values fall against the reference's quantile bins and outside its range, and each method on its own scale."""
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest

from fmops_nb.drift import drift
from fmops_nb.html import RED, STYLE, column_detail, column_table, svg_timeline, vs_threshold

XSS = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"
SVG = "{http://www.w3.org/2000/svg}"


def svgs(markup: str) -> list:
    "Every inline SVG in `markup`, parsed (so a test reads elements and attributes, not strings)."
    return [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", markup, re.S)]


def texts(el) -> list:
    return ["".join(t.itertext()) for t in el.iter(f"{SVG}text")]


def chunk(label, **cols):
    "A chunk of `DriftReport.chunks` with the given column entries."
    drifted = [k for k, e in cols.items() if e["drifted"]]
    return {"chunk": label, "n": 500, "status": "drift" if drifted else "ok", "drifted": drifted, "columns": cols}


def effect(s, th=0.2, method="psi"):
    return {"statistic": s, "p_value": 0.5, "drifted": s >= th, "status": "drift" if s >= th else "ok",
            "method": method, "threshold": th, "test": "effect", "p_adjusted": 0.5}


def ptest(p, stat=0.1, method="ks", alpha=0.05):
    return {"statistic": stat, "p_value": p / 2, "drifted": p < alpha, "status": "drift" if p < alpha else "ok",
            "method": method, "threshold": alpha, "test": "p_value", "p_adjusted": p}


def charts(markup: str) -> dict:
    "The timeline's column charts by column name: their <g> label group and the elements after it."
    root = svgs(markup)[1]
    out, name = {}, None
    for el in root:
        if el.tag == f"{SVG}g" and "fmops-timeline-column" in el.get("class", ""):
            name = el.find(f"{SVG}title").text
            out[name] = {"label": texts(el), "elements": []}
        elif name is not None:
            out[name]["elements"].append(el)
    return out


DAYS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]


def test_the_timeline_shows_which_columns_moved_when_against_their_thresholds():
    chunks = [chunk(DAYS[0], a=effect(0.05), b=ptest(0.4), c=effect(0.01)),
              chunk(DAYS[1], a=effect(0.08), b=ptest(0.3), c=effect(0.02)),
              chunk(DAYS[2], a=effect(0.6), b=ptest(0.2), c=effect(0.01)),
              chunk(DAYS[3], a=effect(0.7), b=ptest(1e-6), c=effect(0.03))]
    markup = svg_timeline(chunks)
    strip, lines = svgs(markup)
    cells = list(strip.iter(f"{SVG}rect"))
    assert [c.get("fill") for c in cells] == [c for c in ["#2e7d32"] * 2 + [RED] * 2]  # a cell per chunk, by status
    assert all(d in texts(strip) for d in DAYS)  # the chunks' dates label the axis, not only the tooltips
    got = charts(markup)
    assert list(got) == ["a", "b"]  # the columns that drifted in some chunk, most often first; c never did
    assert "psi ≥ 0.2" in got["a"]["label"] and "drift in 2 of 4 chunks" in got["a"]["label"]
    assert "ks: p < 0.05" in got["b"]["label"] and "drift in 1 of 4 chunks" in got["b"]["label"]
    centres = [float(c.get("x")) + float(c.get("width")) / 2 for c in cells]
    for name, when in (("a", [2, 3]), ("b", [3])):
        els = got[name]["elements"]
        [threshold] = [e for e in els if e.get("class") == "fmops-threshold"]  # one threshold line per column
        ty = float(threshold.get("y1"))
        points = [e for e in els if "fmops-point" in (e.get("class") or "")]
        assert len(points) == 4
        xs = [float(p.get("cx") or p.get("points").split()[2].split(",")[0]) for p in points]
        assert xs == pytest.approx(centres, abs=0.6)  # each point sits under its chunk's cell
        red = [i for i, p in enumerate(points) if p.get("fill") == RED]
        assert red == when  # red where the column drifted, and only there
        ys = [float(p.get("cy")) if p.get("cy") else 0.0 for p in points]  # a triangle is drawn at the top
        assert all((ys[i] < ty) == (i in when) for i in range(4))  # above the dashed line exactly when it drifted


def test_one_column_decided_by_two_methods_is_drawn_against_its_own_threshold():
    "Under the default rule a small chunk is decided by KS, a large one by Wasserstein: one axis, relative to each."
    chunks = [chunk("0", x=ptest(0.5)), chunk("1", x=effect(0.05, 0.1, "wasserstein")),
              chunk("2", x=effect(0.3, 0.1, "wasserstein"))]
    got = charts(svg_timeline(chunks))
    assert "÷ own threshold: ks, wasserstein" in got["x"]["label"]
    [threshold] = [e for e in got["x"]["elements"] if e.get("class") == "fmops-threshold"]
    assert threshold.get("stroke") == RED
    assert vs_threshold(chunks[2]["columns"]["x"]) == pytest.approx(3.0)


def test_a_report_that_did_not_record_its_methods_shows_raw_statistics_without_a_threshold():
    old = [{"chunk": d, "n": 10, "status": "ok", "drifted": [], "columns": {"x": {"statistic": s, "p_value": 0.5,
                                                                                     "drifted": False, "status": "ok"}}}
           for d, s in zip(DAYS, [0.1, 0.2, 0.1, 0.3])]
    markup = svg_timeline(old)
    got = charts(markup)
    assert "statistic (threshold not recorded)" in got["x"]["label"]
    assert "fmops-threshold" not in markup and len(svgs(markup)[0].findall(f"{SVG}rect")) == 4


def column_bars(row_html: str) -> tuple:
    "The width of the evidence bar and the position of the threshold tick in a column-table row."
    svg = svgs(row_html)[0]
    return float(svg.find(f"{SVG}rect").get("width")), float(svg.find(f"{SVG}line").get("x1"))


def test_the_column_table_puts_each_method_against_its_own_threshold():
    "A KS statistic of 0.2 beside a chi-squared in the hundreds: the drifted KS column must not look small."
    g = np.random.default_rng(5)
    n = 1500
    ref = pd.DataFrame({"ks_col": g.normal(0, 1, n), "calm": g.normal(0, 1, n), "cat": g.choice(list("abc"), n)})
    cur = pd.DataFrame({"ks_col": g.normal(0.5, 1, n), "calm": g.normal(0, 1, n),
                        "cat": g.choice(list("abcd"), n, p=[.4, .2, .2, .2])})
    rep = drift(ref, cur)
    cols = rep.columns
    assert (cols["ks_col"].method, cols["cat"].method) == ("ks", "chi2") and cols["cat"].statistic > 100
    assert cols["ks_col"].statistic < 1 and cols["ks_col"].drifted and not cols["calm"].drifted
    markup = column_table(rep)
    rows = {re.search(r"<td class='fmops-text'>(.*?)</td>", r).group(1): r
            for r in re.findall(r"<tr class='fmops-.*?</tr>", markup)}
    assert "<th title=" in markup and ">vs threshold</th>" in markup
    for name, c in cols.items():
        width, tick = column_bars(rows[name])
        assert (width > tick) == c.drifted, (name, width, tick)  # past the tick exactly when it drifted
        assert f"<td>{c.statistic:.4g}</td>" in rows[name]  # the raw statistic stays in the table
    assert re.search(r"p \d\.\de-\d+</td>", rows["ks_col"])  # a test shows the corrected p-value that decided
    ordered = column_table(rep, "vs_threshold", True)
    order = re.findall(r"<tr class='fmops-\w+'><td class='fmops-text'>(.*?)</td>", ordered)  # the name, first in a row
    assert order[-1] == "calm"


def test_quantile_bins_are_labelled_by_their_edges_and_out_of_range_values_get_their_own_bars():
    g = np.random.default_rng(1)
    ref = {"x": g.uniform(0, 10, 4000)}
    cur = {"x": np.r_[g.uniform(0, 10, 3700), g.uniform(20, 30, 200), g.uniform(-6, -5, 100)]}
    rep = drift(ref, cur)
    p = rep.columns["x"].profile
    if "below" not in p:
        pytest.xfail("the engine does not count out-of-range values apart yet (/tmp/issue13/charts-drift.patch)")
    below, above = int((cur["x"] < ref["x"].min()).sum()), int((cur["x"] > ref["x"].max()).sum())
    assert (p["below"], p["above"]) == (below, above) and below == 100 and 200 <= above <= 203
    assert len(p["edges"]) == len(p["current"]) + 1
    markup = column_detail(rep, "x")
    [svg] = svgs(markup)
    out = [r for r in svg.iter(f"{SVG}rect") if r.get("class") == "fmops-out-of-range"]
    assert len(out) == 2  # one bar below the reference's minimum, one above its maximum
    shown = texts(svg)
    assert {"100", str(above), "< min", "> max"} <= set(shown)  # their counts are written on them
    low, high = out  # drawn left and right of the bins, the taller one for the larger count
    bins = [r for r in svg.iter(f"{SVG}rect") if r.get("fill") == RED and r.get("class") is None]
    assert float(low.get("x")) < min(float(r.get("x")) for r in bins) < max(float(r.get("x")) for r in bins) \
        < float(high.get("x"))
    assert float(high.get("height")) == pytest.approx(above / below * float(low.get("height")), rel=0.01)
    # the last bin is not inflated by the 200 values above the maximum: about 3,700 / 20 of 4,000 current values
    last = bins[-1].find(f"{SVG}title").text
    share = float(re.search(r"current ([\d.]+)%", last).group(1))
    assert 3.5 < share < 5.5, last
    axis_y = next(t.get("y") for t in svg.iter(f"{SVG}text") if t.text == "< min")  # the row of the edge labels
    edges = [float(t.text) for t in svg.iter(f"{SVG}text") if t.get("y") == axis_y and t.text not in ("< min", "> max")]
    assert edges[0] == pytest.approx(min(ref["x"]), abs=0.01) and edges[-1] == pytest.approx(max(ref["x"]), abs=0.05)
    assert edges == sorted(edges) and len(edges) >= 5  # true edges, in order, labelled between the bars
    assert "100 below the reference minimum" in markup and f"{above} above its maximum" in markup
    assert "(the lowest -6" in markup or "(the lowest -5.9" in markup


def test_a_column_with_few_values_splits_its_other_bar():
    class C:  # a column result as the engine builds it for a column of ratings 1..5
        kind, status, note, stats = "numeric", "drift", "", {}
        profile = {"values": [1.0, 2.0, 3.0], "labels": ["1", "2", "3", "other"], "reference": [10, 10, 10, 0],
                   "current": [8, 8, 8, 6], "below": 2, "above": 3, "lowest": 0.0, "highest": 9.0,
                   "reference_total": 30, "current_total": 30}
    markup = column_detail(type("R", (), {"columns": {"r": C}})(), "r")
    shown = texts(svgs(markup)[0])
    assert {"< 1", "between", "> 3"} <= set(shown) and "other" not in shown
    assert "2 below the reference minimum 1 (the lowest 0)" in markup and "3 above its maximum 3" in markup


def test_an_older_profile_still_draws_and_says_where_out_of_range_values_went():
    class C:
        kind, status, note, stats = "numeric", "ok", "", {}
        profile = {"edges": [float(i) for i in range(21)], "reference": [5] * 20, "current": [5] * 20}
    markup = column_detail(type("R", (), {"columns": {"x": C}})(), "x")
    assert "counted in the first and last bars" in markup and "fmops-out-of-range" not in markup
    assert {"0", "20"} <= set(texts(svgs(markup)[0]))


def test_datetime_edges_are_dates():
    class C:
        kind, status, note, stats = "datetime", "ok", "", {}
        profile = {"edges": [1772323200.0 + i * 86400.0 for i in range(21)], "reference": [5] * 20, "current": [5] * 20,
                   "below": 0, "above": 4, "lowest": None, "highest": 1772323200.0 + 40 * 86400.0}
    markup = column_detail(type("R", (), {"columns": {"t": C}})(), "t")
    assert "2026-03-01" in texts(svgs(markup)[0]) and "4 above its maximum 2026-03-21 (the highest 2026-04-10)" in markup


def test_rows_least_like_the_reference_are_listed_once():
    g = np.random.default_rng(2)
    ref = {"doc": [f"ticket {i % 50} about an invoice for order {i}" for i in range(600)]}
    cur = {"doc": [f"ticket {i % 50} about an invoice for order {i}" for i in range(300)]
           + ["refund me now"] * 250 + ["cancel my account please"] * 50}
    rep = drift(ref, cur, kinds={"doc": "text"}, embedder="hashing", cache=False, seed=int(g.integers(10)))
    markup = column_detail(rep, "doc")
    items = re.findall(r"<li>(.*?) <small>", re.search(r"<ol>(.*?)</ol>", markup).group(1))
    assert len(items) == len(set(items)) and "refund me now" in items, items
    assert re.search(r"refund me now <small>\(similarity [\d.]+, [\d,]+ times\)", markup)


def test_every_chart_shows_a_hostile_column_name_as_text():
    g = np.random.default_rng(3)
    n = 1200
    ref = pd.DataFrame({XSS: g.normal(0, 1, n), "batch": g.choice(["b1", XSS], n)})
    cur = pd.DataFrame({XSS: np.r_[g.normal(0, 1, n // 2), g.normal(3, 1, n // 2)],
                        "batch": np.r_[["b1"] * (n // 2), [XSS] * (n // 2)]})
    rep = drift(ref, cur, chunk_by="batch")
    from fmops_nb.widgets import DriftPanel
    panel = DriftPanel(rep)
    pieces = {"timeline": svg_timeline(rep.chunks), "table": column_table(rep), "detail": column_detail(rep, XSS),
              "panel timeline": panel.timeline.value, "panel detail": panel.detail.value}
    for what, markup in pieces.items():
        assert "<img" not in markup and "onerror=alert(1)>" not in markup, what
        assert ESCAPED in markup, what
        for svg in svgs(markup):  # parsed as XML: the name is text inside the chart, not an element
            assert not list(svg.iter("img")) and not list(svg.iter(f"{SVG}img"))
    assert XSS in charts(pieces["timeline"])  # its chart is labelled with the name, as text


def test_chart_text_follows_the_theme():
    "No chart text is black: it is currentColor (the theme's text colour), or red through the theme's error colour."
    chunks = [chunk(d, a=effect(s), b=ptest(p)) for d, s, p in zip(DAYS, [0.1, 0.3, 0.5, 0.1], [0.5, 0.01, 1e-9, .3])]

    class C:
        kind, status, note, stats = "numeric", "drift", "", {}
        profile = {"edges": [float(i) for i in range(21)], "reference": [5] * 20, "current": [4] * 20,
                   "below": 5, "above": 15, "lowest": -3.0, "highest": 30.0}
    markup = svg_timeline(chunks) + column_detail(type("R", (), {"columns": {"x": C}})(), "x")
    for svg in svgs(markup):
        for t in svg.iter(f"{SVG}text"):
            assert t.get("fill") == "currentColor" or "fmops-bad-ink" in (t.get("class") or ""), ET.tostring(t)
        for line in svg.iter(f"{SVG}line"):
            assert line.get("stroke") in ("currentColor", RED)
    assert "#000" not in markup and "black" not in markup and "#333" not in markup
    assert ".fmops svg .fmops-bad-ink{fill:var(--jp-error-color1," in STYLE  # red text: the theme's error colour


def test_a_real_timeline_draws_each_drifting_column_with_its_threshold():
    g = np.random.default_rng(0)
    n = 6000
    ref = pd.DataFrame({"latency": g.lognormal(5, .3, n), "tokens": g.poisson(120, n).astype(float),
                        "plan": g.choice(["free", "pro", "team"], n)})
    cur = pd.DataFrame({"latency": np.r_[g.lognormal(5, .3, n // 2), g.lognormal(5.3, .3, n // 2)],
                        "tokens": g.poisson(120, n).astype(float),
                        "plan": np.r_[g.choice(["free", "pro", "team"], n // 2),
                                      g.choice(["free", "pro", "team", "trial"], n // 2, p=[.4, .3, .1, .2])],
                        "ts": pd.Timestamp("2026-03-01") + pd.to_timedelta(np.arange(n) * 6 * 86400 / n, unit="s")})
    rep = drift(ref, cur, chunk_by="ts")
    if "test" not in rep.chunks[0]["columns"]["latency"]:
        pytest.xfail("the chunks do not record their method and threshold yet (/tmp/issue13/charts-drift.patch)")
    got = charts(svg_timeline(rep.chunks))
    assert sorted(got) == ["latency", "plan"]  # tokens never drifted
    for name, method in (("latency", "ks"), ("plan", "chi2")):  # 1,000-row chunks: decided by p-value tests
        assert f"{method}: p < 0.05" in got[name]["label"] and "drift in 3 of 6 chunks" in got[name]["label"]
        assert sum(e.get("class") == "fmops-threshold" for e in got[name]["elements"]) == 1
        red = [e.get("fill") == RED for e in got[name]["elements"] if "fmops-point" in (e.get("class") or "")]
        assert red == [False] * 3 + [True] * 3


def test_the_charts_survive_the_report_sanitizer():
    "A report template shows them through `reports.show`, which drops anything live: the charts must still read."
    from fmops_nb.reports import _inert
    chunks = [chunk(d, a=effect(s)) for d, s in zip(DAYS, [0.1, 0.3, 0.5, 0.1])]
    kept = _inert(svg_timeline(chunks))
    assert kept.count("<rect") == 4 and kept.count('class="fmops-threshold"') == 1
    assert kept.count(f'fill="{RED}"') >= 2 + 2  # the two red cells and the two red points
    assert "drift in 2 of 4 chunks" in kept and "var(" not in kept  # the theme's colour went, the fallback stayed
    assert re.search(rf'<text[^>]*fill="{RED}"[^>]*>drift in 2 of 4 chunks', kept)


def test_a_timeline_of_a_thousand_chunks_stays_small_and_shows_its_drifting_runs():
    "Too many chunks for a point each: each run of drifting chunks is one band, with its first and last chunk."
    moved = lambda i, j: j == 0 and 600 <= i < 700 or j == 1 and i in (10, 11, 500)
    chunks = [chunk(f"c{i}", **{f"f{j}": effect(0.5 if moved(i, j) else 0.05) for j in range(30)})
              for i in range(1000)]
    markup = svg_timeline(chunks)
    assert len(markup) < 400_000, len(markup)  # a cell output, not megabytes of tooltips
    assert len(svgs(markup)[0].findall(f"{SVG}rect")) == 1000  # the strip still has a cell per chunk
    got = charts(markup)
    assert list(got) == ["f0", "f1"] and "drift in 100 of 1000 chunks" in got["f0"]["label"]
    runs = {n: [r.find(f"{SVG}title").text for r in g["elements"] if r.get("class") == "fmops-drift-run"]
            for n, g in got.items()}
    assert runs == {"f0": ["f0: drift in c600 to c699 (100 chunks)"],
                    "f1": ["f1: drift in c10 to c11 (2 chunks)", "f1: drift in c500"]}
    assert not any("fmops-point" in (e.get("class") or "") for g in got.values() for e in g["elements"])
