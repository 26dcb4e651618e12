"""One look, in JupyterLab's light theme and its dark one: the stylesheet's colours come from the theme's variables
(with fallbacks for a page without them), no panel carries inline styles, and in a real browser the text of a panel
is dark on light and light on dark, a drifted row takes the theme's error colour, numbers align right and text left.
The browser test screenshots each panel in both themes (into $FMOPS_SCREENSHOTS when set)."""
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import save_file

from fmops_nb import reports
from fmops_nb.diff import diff
from fmops_nb.drift import drift
from fmops_nb.html import STYLE, column_detail, column_table, card_html, panel, svg_timeline, versions_html
from fmops_nb.registry import Registry, version_table

LAB = Path(__import__("jupyterlab").__file__).parent / "themes" / "@jupyterlab"


def drift_panel() -> str:
    "A drift report as a panel: the column table, the timeline and the distributions of what moved."
    g = np.random.default_rng(4)
    n = 1200
    days = np.repeat(pd.date_range("2026-03-01", periods=6, freq="D"), n // 6)
    ref = pd.DataFrame({"latency_ms": g.lognormal(5, .3, n), "plan": g.choice(["free", "pro", "team"], n),
                        "tokens": g.poisson(120, n).astype(float),
                        "text": [f"refund for invoice {i % 23} please" for i in range(n)]})
    cur = pd.DataFrame({"ts": days, "latency_ms": np.r_[g.lognormal(5, .3, n // 2), g.lognormal(5.35, .3, n // 2)],
                        "plan": g.choice(["free", "pro", "team"], n, p=[.5, .3, .2]),
                        "tokens": g.poisson(121, n).astype(float),
                        "text": [f"refund for invoice {i % 23} please" for i in range(n - 300)]
                        + [f"the app crashes on the start screen {i % 9}" for i in range(300)]})
    rep = drift(ref, cur, chunk_by="ts", embedder="hashing", cache=False, seed=0)
    return panel(f"<div class='fmops-title'>{rep.headline()}</div>" + column_table(rep) + svg_timeline(rep.chunks)
                 + "".join(column_detail(rep, k) for k in rep.drifted + rep.watch), "fmops-drift")


def diff_and_versions(tmp_path) -> tuple:
    "A diff panel of two registered versions, and the versions table with a model card."
    g = np.random.default_rng(2)
    reg = Registry(log=False)
    W = {f"encoder.layer.{i}.attention.{p}.weight": g.normal(size=(8, 8)).astype(np.float32)
         for i in range(4) for p in ("query", "value", "output")}
    for name, w in ((tmp_path / "a.safetensors", W), (tmp_path / "b.safetensors",
                    {k: v + (0.05 * (i % 3)) * g.normal(size=v.shape).astype(np.float32)
                     for i, (k, v) in enumerate(W.items())})):
        save_file(w, str(name))
    reg.register("tickets", tmp_path / "a.safetensors", metrics={"accuracy": 0.81, "eval_loss": (0.52, "lower")},
                 aliases=["production"], config={"lr": 1e-4, "target_modules": ["query", "value"]},
                 description="The first router. <script>alert(1)</script>")
    reg.register("tickets", tmp_path / "b.safetensors", parent="tickets:v1",
                 metrics={"accuracy": 0.84, "eval_loss": (0.55, "lower")},
                 config={"lr": 5e-5, "target_modules": ["value", "query"]}, description="Tuned on March data.")
    d = diff("tickets:production", "tickets:v2", reg)
    t = version_table(reg.versions("tickets"))
    return d._repr_html_(), panel(versions_html(t, selected="tickets:v2", sort_by="accuracy", descending=True)
                                  + card_html(reg.card("tickets:v1")), "fmops-registry")


def test_the_stylesheet_takes_its_colours_from_the_theme_and_panels_carry_no_inline_styles(tmp_path):
    bare = re.sub(r"var\(--jp-[a-z0-9-]+, [^)]*\)", "", STYLE)  # each colour is a variable's fallback, never bare
    assert not re.search(r"#[0-9a-fA-F]{3,8}\b|rgba?\(|(?<![\w-])(black|white)(?![\w-])", bare), bare
    colour = r"color|background(?:-color)?|fill|stroke|border(?:-(?:top|right|bottom|left))?(?:-color)?|box-shadow"
    for decl in re.findall(rf"(?:^|[;{{])\s*((?:{colour})\s*:[^;}}]*)", STYLE):  # every colour-bearing declaration
        assert "var(--jp-" in decl or re.search(r":\s*(inherit|transparent|0|none)\s*$", decl), decl
    assert "var(--jp-ui-font-color1" in STYLE or "var(--jp-content-font-color1" in STYLE
    d, v = diff_and_versions(tmp_path)
    for html in (d, v, drift_panel()):
        assert html.count("<style>") == 1 and "style=" not in html.replace("<style>", "")


def theme_vars(theme: str) -> str:
    "JupyterLab's own theme variables (`--jp-*`, `--md-*`) of `theme` ('light' or 'dark'), as a :root rule."
    css = (LAB / f"theme-{theme}-extension" / "index.css").read_text()
    return ":root{" + ";".join(re.findall(r"(--(?:jp|md)-[a-z0-9-]+:[^;}]+)", css)) + "}"


def page(body: str, theme: str) -> str:
    "A cell output as JupyterLab shows it: the theme's variables, its page and output backgrounds, the panel."
    return (f"<!doctype html><html><head><meta charset='utf-8'><style>{theme_vars(theme)} body{{margin:0;padding:12px;"
            "background:var(--jp-layout-color0);color:var(--jp-content-font-color1);"
            "font-family:var(--jp-content-font-family)}</style></head>"
            f"<body><div class='jp-OutputArea-output jp-RenderedHTMLCommon'>{body}</div></body></html>")


def luminance(rgb: str) -> float:
    r, g, b = (int(x) / 255 for x in re.findall(r"\d+", rgb)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.browser
def test_panels_read_in_the_light_and_the_dark_theme(tmp_path):
    from lab import CHROMIUM, CHROMIUM_ARGS
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright
    d, v = diff_and_versions(tmp_path)
    panels = {"drift": drift_panel(), "diff": d, "versions": v}
    out = Path(os.environ.get("FMOPS_SCREENSHOTS") or tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            pg = browser.new_page(viewport={"width": 900, "height": 800})
            for theme, error in (("light", "rgb(211, 47, 47)"), ("dark", "rgb(244, 67, 54)")):
                for name, body in panels.items():
                    f = tmp_path / f"{name}-{theme}.html"
                    f.write_text(page(body, theme))
                    pg.goto(f.as_uri())
                    text = pg.eval_on_selector(".fmops", "e => getComputedStyle(e).color")
                    cell = pg.eval_on_selector(".fmops tbody tr:not(.fmops-drift):not(.fmops-watch) td",
                                               "e => getComputedStyle(e).color")
                    assert cell == text  # a table's text is the panel's
                    bg = pg.evaluate("getComputedStyle(document.body).backgroundColor")
                    assert (luminance(text) < 0.35) if theme == "light" else (luminance(text) > 0.8), (name, text)
                    assert (luminance(bg) > 0.9) if theme == "light" else (luminance(bg) < 0.1), (name, bg)
                    if (label := pg.query_selector("svg text[fill='currentColor']")) is not None:
                        assert label.evaluate("e => getComputedStyle(e).fill") == text  # and a chart's labels
                    if name == "drift":
                        row = pg.eval_on_selector("tr.fmops-drift", "e => getComputedStyle(e).color")
                        assert row == error, (theme, row)  # the theme's own error colour
                        align = pg.eval_on_selector_all("tr.fmops-drift td", "es => es.map(e => getComputedStyle(e).textAlign)")
                        assert align[0] == "left" and align[4] == "right"  # the name left, the statistic right
                    if name == "versions":
                        sel = pg.eval_on_selector("tr.fmops-selected", "e => getComputedStyle(e).boxShadow")
                        assert "inset" in sel
                    shot = tmp_path / f"H-{name}-{theme}.png"
                    pg.locator(".fmops").first.screenshot(path=str(shot))
                    assert shot.stat().st_size > 5_000
                    if out != tmp_path: shutil.copy(shot, out / shot.name)
            # a saved report page: light by default, dark when the reader's system asks for it
            run = tmp_path / "report.html"
            g = np.random.default_rng(1)
            ref, cur = g.normal(0, 1, 800), np.r_[g.normal(0, 1, 400), g.normal(0.8, 1, 400)]
            pd.DataFrame({"x": ref}).to_parquet(tmp_path / "r.parquet")
            pd.DataFrame({"ts": np.repeat(pd.date_range("2026-03-01", periods=4), 200), "x": cur}).to_parquet(tmp_path / "c.parquet")
            rr = reports.run_report("drift_report", {"reference": str(tmp_path / "r.parquet"),
                                                     "current": str(tmp_path / "c.parquet"), "chunk_by": "ts"}, log=False)
            assert rr.status == "finished", rr.error
            shutil.copy(rr.html, run)
            for scheme in ("light", "dark"):
                pg2 = browser.new_page(viewport={"width": 1000, "height": 900}, color_scheme=scheme)
                pg2.goto(run.as_uri())
                bg = pg2.evaluate("getComputedStyle(document.body).backgroundColor")
                assert (luminance(bg) > 0.9) if scheme == "light" else (luminance(bg) < 0.1), (scheme, bg)
                shot = tmp_path / f"H-report-{scheme}.png"
                pg2.screenshot(path=str(shot), full_page=True)
                if out != tmp_path: shutil.copy(shot, out / shot.name)
                pg2.close()
        finally:
            browser.close()
