"""The embedding projection, as a person reads it: both samples on the reference's first principal direction and the
direction its mean moved, the current rows least like the reference ringed and numbered as in the list under the
chart and standing apart from the reference's cloud, the same picture for the same seed; for text columns and for
embedding columns, in the column detail and in the report page."""
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from fmops_nb.drift import drift
from fmops_nb.html import column_detail

SVG = "{http://www.w3.org/2000/svg}"


def projection_of(rep, name) -> dict:
    c = rep.columns[name]
    p = (c.profile or {}).get("projection") or (c.stats or {}).get("projection")
    assert p, f"no projection kept for {name}"
    return p


def scatter(markup: str) -> dict:
    "The projection's points by class, as (x, y), and its rings with their numbers (namespaced SVG or, in a page, not)."
    svg = ET.fromstring(re.search(r"<svg class=.fmops-projection.*?</svg>", markup, re.S).group(0))
    tag = lambda el: el.tag.rsplit("}", 1)[-1]
    circles = [c for c in svg.iter() if tag(c) == "circle"]
    pts = {k: [(float(c.get("cx")), float(c.get("cy"))) for c in circles if c.get("class") == k]
           for k in ("fmops-ref", "fmops-cur")}
    rings = []
    for g in (g for g in svg.iter() if tag(g) == "g" and g.get("class") == "fmops-marked"):
        ring = next(c for c in g if tag(c) == "circle")
        rings.append((float(ring.get("cx")), float(ring.get("cy")), "".join(next(t for t in g if tag(t) == "text").itertext())))
    return pts | {"rings": rings, "axes": ["".join(t.itertext()) for t in svg.iter() if tag(t) == "text"]}


def listed(markup: str) -> list:
    "The rows of the 'least like the reference' list, in order."
    ol = re.search(r"Current rows least like the reference</div><ol>(.*?)</ol>", markup, re.S).group(1)
    return [re.sub(r"\s*<small>.*", "", li) for li in re.findall(r"<li>(.*?)</li>", ol, re.S)]


def test_text_drift_shows_both_samples_and_rings_the_rows_least_like_the_reference():
    ref = {"doc": [f"refund for invoice {i % 17} please" for i in range(900)]}
    cur = {"doc": [f"refund for invoice {i % 17} please" for i in range(600)]
           + [f"the app crashes on the start screen {i % 8}" for i in range(200)]}
    rep = drift(ref, cur, embedder="hashing", cache=False, seed=3)
    assert rep.columns["doc"].drifted
    p = projection_of(rep, "doc")
    markup = column_detail(rep, "doc")
    got = scatter(markup)
    assert len(got["fmops-ref"]) == 300 and 300 <= len(got["fmops-cur"]) <= 305  # a few hundred points per side
    assert any(a.startswith("PC1 of the reference (") for a in got["axes"])
    assert "from the reference's mean toward the current's" in got["axes"]
    rows = listed(markup)  # the crash reports, new to the reference, are the least like it
    assert rows and all("crashes" in r for r in rows)
    assert [n for _, _, n in got["rings"]] == [str(k + 1) for k in range(len(rows))]  # numbered as in the list
    cur_points = set(got["fmops-cur"])
    assert all((x, y) in cur_points for x, y, _ in got["rings"])  # each ring is on a current point
    ref_x = np.mean([x for x, _ in got["fmops-ref"]])  # and those points lie away from the reference's cloud
    ref_spread = np.std([x for x, _ in got["fmops-ref"]]) + np.std([y for _, y in got["fmops-ref"]])
    ref_y = np.mean([y for _, y in got["fmops-ref"]])
    assert all(np.hypot(x - ref_x, y - ref_y) > ref_spread for x, y, _ in got["rings"])
    again = drift(ref, cur, embedder="hashing", cache=False, seed=3)
    assert column_detail(again, "doc") == markup  # seeded: the same picture twice
    assert "projection" not in rep.to_dict()["columns"]["doc"].get("stats", {})  # chart data stays out of the JSON


def test_embedding_drift_rings_the_outliers():
    g = np.random.default_rng(0)
    ref = {"emb": g.normal(0, 1, (800, 12)).astype(np.float32)}
    cur_rows = g.normal(0, 1, (700, 12))
    cur_rows[:, 0] += 0.6  # a shift along one direction
    cur_rows[:6] += 12.0  # and six rows unlike anything in the reference
    rep = drift(ref, {"emb": cur_rows.astype(np.float32)}, seed=1)
    p = projection_of(rep, "emb")
    assert len(p["reference"]) == 300 and len(p["marked"]) == len(rep.columns["emb"].stats["least_like_reference"])
    n = len(rep.columns["emb"].stats["least_like_reference"])
    got = scatter(column_detail(rep, "emb"))
    assert len(got["rings"]) == n == 5 and len(got["fmops-ref"]) == 300
    ref = np.array(got["fmops-ref"])
    centre, spread = ref.mean(0), ref.std(0).sum()
    far = [np.hypot(*(np.array(q) - centre)) for q in got["fmops-cur"]]
    assert sum(f > 4 * spread for f in far) == 6  # the six rows unlike the reference stand apart,
    assert all(np.hypot(x - centre[0], y - centre[1]) > 4 * spread for x, y, _ in got["rings"])  # and are ringed


def test_a_report_page_shows_the_projection(tmp_path):
    import pandas as pd
    from fmops_nb.reports import run_report
    ref = pd.DataFrame({"doc": [f"refund for invoice {i % 17} please" for i in range(400)]})
    cur = pd.DataFrame({"doc": [f"refund for invoice {i % 17} please" for i in range(250)]
                        + [f"the app crashes on the start screen {i % 4}" for i in range(150)]})
    ref.to_parquet(tmp_path / "ref.parquet"); cur.to_parquet(tmp_path / "cur.parquet")
    run = run_report("drift_report", {"reference": str(tmp_path / "ref.parquet"), "current": str(tmp_path / "cur.parquet"),
                                      "embedder": "hashing"}, log=False)
    assert run.status == "finished", run.error
    page = run.html.read_text()
    assert "fmops-projection" in page
    got = scatter(page)
    assert got["fmops-ref"] and got["fmops-cur"] and got["rings"]


test_a_report_page_shows_the_projection = pytest.mark.slow(test_a_report_page_shows_the_projection)
