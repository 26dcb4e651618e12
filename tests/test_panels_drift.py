"""The table of widgets under every panel, and the drift panel on it: headings that sort and say the order they show,
rows that select, hostile names kept as text. Clicks are the buttons' own `click()` (what a browser click calls)."""
import numpy as np
import pandas as pd
import pytest

from fmops_nb.drift import drift
from fmops_nb.errors import ValidationError
from fmops_nb.widgets import Column, DriftPanel, Grid, number_column

XSS = "<img src=x onerror=alert(1)>"


def heading(grid, title):
    return next(b for b in grid.heads if b.description.split(" ")[0] == title.split(" ")[0])


def shown(grid):
    "The row names as the table shows them now, top to bottom."
    return [row[0].description for row in grid.slots[:len(grid._shown)]]


@pytest.fixture
def fruit():
    rows = {"apple": {"price": 1.2, "origin": "Spain"}, "kiwi": {"price": None, "origin": "Chile"},
            "fig": {"price": 3.5, "origin": "Turkey"}, XSS: {"price": 2.0, "origin": XSS}}
    cols = [Column("fruit", key=lambda i, x: i), number_column("price", lambda i, x: x["price"], ".2f"),
            Column("origin", lambda i, x: x["origin"].replace("<", "&lt;"))]  # not sortable
    return Grid(cols, rows, picker="Fruit")


def test_a_heading_click_sorts_and_a_second_reverses_and_both_say_which_way(fruit):
    assert shown(fruit) == ["apple", "kiwi", "fig", XSS]  # as given, before any sort
    heading(fruit, "price").click()
    assert shown(fruit) == ["fig", XSS, "apple", "kiwi"]  # highest first; kiwi has no price: last
    assert heading(fruit, "price").description == "price ▼"
    assert fruit.caption.value.startswith("Sorted by price, highest first.")
    heading(fruit, "price").click()
    assert shown(fruit) == ["apple", XSS, "fig", "kiwi"]  # the other way; still last without a price
    assert heading(fruit, "price").description == "price ▲"
    assert fruit.caption.value.startswith("Sorted by price, lowest first.")
    assert "click for highest first" in heading(fruit, "price").tooltip
    heading(fruit, "fruit").click()  # another column: its own first order, and the arrow moves to it
    assert shown(fruit) == [XSS, "apple", "fig", "kiwi"] and heading(fruit, "price").description == "price"
    assert fruit.caption.value.startswith("Sorted by fruit, A → Z.")
    heading(fruit, "origin").click()  # a column that cannot sort: nothing changes
    assert shown(fruit) == [XSS, "apple", "fig", "kiwi"] and "fmops-fixed" in heading(fruit, "origin")._dom_classes
    with pytest.raises(ValidationError, match="Cannot sort by 'origin'"):
        fruit.sort("origin")


def test_a_click_on_a_name_selects_its_row_wherever_the_sort_put_it(fruit):
    picked = []
    fruit.on_select = picked.append
    fruit.sort("price")
    fruit.slots[0][0].click()  # the first row shown: fig
    assert picked == ["fig"] and fruit.selected == "fig" and fruit.picker.value == "fig"
    assert all("fmops-selected" in w._dom_classes for w in fruit.slots[0])
    fruit.sort("price")  # fig moves to the third row: the highlight moves with it
    row = shown(fruit).index("fig")
    assert row == 2 and all("fmops-selected" in w._dom_classes for w in fruit.slots[row])
    assert not any("fmops-selected" in w._dom_classes for w in fruit.slots[0])
    fruit.picker.value = "kiwi"  # the picker selects too
    assert picked == ["fig", "kiwi"] and fruit.selected == "kiwi"
    with pytest.raises(ValidationError, match="No row 'plum'"):
        fruit.select("plum")


def test_a_long_table_shows_a_page_and_the_rest_on_request():
    rows = {f"c{i:03d}": {"v": i} for i in range(60)}
    g = Grid([Column("name", key=lambda i, x: i), number_column("v", lambda i, x: x["v"])], rows, page=25)
    assert len(g._shown) == 25 and g.more.description == "Show all 60 rows" and g.more.layout.display is None
    assert "Showing 25 of 60 rows." in g.caption.value
    g.button("c059").click()  # a row past the page: shown, then selected
    assert g.selected == "c059" and len(g._shown) == 60 and g.more.description == "Show the first 25"
    g.more.click()
    assert len(g._shown) == 25


def test_hostile_names_stay_text_in_the_grid(fruit):
    fruit.sort("fruit")
    cells = [w.value for row in fruit.slots for w in row[1:]]
    assert all("<img" not in c for c in cells) and any("&lt;img" in c for c in cells)
    assert fruit.slots[0][0].description == XSS  # a button's label is text, never markup


def report():
    g = np.random.default_rng(0)
    n = 3000
    ref = pd.DataFrame({"latency": g.lognormal(5, .3, n), "tokens": g.poisson(120, n).astype(float),
                        "plan": g.choice(["free", "pro", "team"], n), XSS: g.normal(size=n)})
    cur = pd.DataFrame({"latency": g.lognormal(5.3, .3, n), "tokens": g.poisson(120, n).astype(float),
                        "plan": g.choice(["free", "pro", "team", "trial"], n, p=[.4, .3, .1, .2]),
                        XSS: g.normal(size=n)})
    return drift(ref, cur)


def test_drift_panel_sorts_by_its_headings_and_shows_the_column_clicked():
    rep = report()
    panel = DriftPanel(rep)
    t = panel.table
    assert [h.description for h in t.heads] == ["column", "kind", "status ▼", "method", "statistic", "threshold",
                                               "p-value", "n ref", "n cur", "vs threshold"]
    assert t.caption.value.startswith("Sorted by status, most severe first.")
    assert set(shown(t)[:2]) == {"latency", "plan"} and set(rep.drifted) == {"latency", "plan"}
    assert all("fmops-row-drift" in w._dom_classes for w in t.slots[0])  # a drifted row is drawn as drift
    first = shown(t)[0]
    assert t.selected == first and f"{first}:" in panel.detail.value  # the strongest drift, shown first
    heading(t, "column").click()
    assert shown(t) == sorted(rep.columns) and heading(t, "column").description == "column ▲"
    heading(t, "column").click()
    assert shown(t) == sorted(rep.columns, reverse=True) and t.caption.value.startswith("Sorted by column, Z → A.")
    heading(t, "vs threshold").click()  # the evidence against each column's own threshold, strongest first
    ev = [t.items[k] for k in shown(t)]
    from fmops_nb.html import vs_threshold
    vals = [vs_threshold(c) for c in ev]
    assert vals == sorted(vals, reverse=True)
    t.button("tokens").click()
    assert t.selected == "tokens" and panel.column.value == "tokens" and "tokens" in panel.detail.value
    panel.column.value = "plan"  # the picker reaches every column
    assert t.selected == "plan" and "plan: share per category" in panel.detail.value
    t.button(XSS).click()
    assert "<img" not in panel.detail.value and "&lt;img" in panel.detail.value
    assert "<img" not in panel.header.value
