"""The docs site (`docs/build.py`): every notebook executed and rendered with its outputs, panels as static HTML, the
references generated from the code, and no internal link or anchor that leads nowhere."""
import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
build = sys.modules["docs_build"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def page(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!doctype html><html><head><title>t</title></head><body>{body}</body></html>")
    return path


def test_link_checker_catches_a_planted_broken_link_and_anchor(tmp_path):
    site = tmp_path / "site"
    page(site / "b.html", "<h2 id='there'>There</h2><a id='A-tour-of-%25fmops'></a>")
    (site / "static").mkdir()
    (site / "static" / "x.png").write_bytes(b"\x89PNG")
    page(site / "a.html", "<p id='top'>"
         "<a href='b.html'>ok</a> <a href='b.html#there'>ok</a> <a href='#top'>ok</a> <img src='static/x.png'>"
         "<a href='b.html#A-tour-of-%25fmops'>ok: percent-encoded as nbconvert writes it</a>"
         "<a href='b.html#gone'>planted: no such anchor</a> <a href='missing.html'>planted: no such page</a>"
         "<a href='../outside.html'>planted: leaves the site</a>"
         "<a href='https://example.org/x'>external</a></p>")
    rep = build.check_links(site)
    assert sorted((p, ref, why) for p, ref, why in rep.broken) == [
        ("a.html", "../outside.html", "points outside the site"),
        ("a.html", "b.html#gone", "no such anchor"),
        ("a.html", "missing.html", "no such file")]
    assert rep.external == {"https://example.org/x": ["a.html"]}  # listed, never fetched
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), "--check-links", str(site)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "BROKEN a.html: b.html#gone (no such anchor)" in r.stdout, r.stdout + r.stderr
    page(site / "a.html", "<a href='b.html#there'>fixed</a> <a href='https://example.org/x'>external</a>")
    r = subprocess.run([sys.executable, str(ROOT / "docs" / "build.py"), "--check-links", str(site)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and ", 0 broken" in r.stdout and "external https://example.org/x" in r.stdout


def test_a_panel_is_frozen_as_the_html_it_shows():
    import ipywidgets as W
    head = W.HTML("<b class='fmops-head'>Drift: 1 of 2 columns drifted</b>")
    column = W.Dropdown(options=["latency_ms", "plan"], value="plan", description="Column")
    stop = W.Button(description="Stop", button_style="danger", disabled=True)
    resume = W.Button(description="Resume")
    resume.layout.display = "none"  # hidden in the panel: not in the snapshot either
    grid = W.GridBox([W.HTML("column"), W.HTML("status"), W.HTML("plan"), W.HTML("drift")],
                     layout=W.Layout(grid_template_columns="max-content max-content"))
    grid.add_class("fmops-grid-box")
    panel = W.VBox([head, W.HBox([column, stop, resume]), grid])
    panel.add_class("fmops-panel")
    out = build.panel_html(panel)
    assert "<b class='fmops-head'>Drift: 1 of 2 columns drifted</b>" in out
    assert "VBox(" not in out and "Resume" not in out
    assert "<option selected>plan</option>" in out and ">Column</label>" in out
    assert "grid-template-columns:max-content max-content" in out and "fmops-grid-box" in out and "fmops-panel" in out
    assert "mod-danger" in out and "mod-disabled" in out  # disabled in the panel itself, so greyed in the snapshot


def test_pages_and_their_order():
    pages = build.pages()
    slugs = [p.slug for p in pages]
    assert slugs[0] == "index" and len(set(slugs)) == len(slugs)
    assert [p.slug for p in pages if p.section == "Workflows"][:len(build.GUIDES)] == list(build.GUIDES)
    assert {"ref_templates", "ref_finetune_spec", "ref_cli", "drift", "widgets", "magics", "cli"} <= set(slugs)
    for g in build.GUIDES:  # the workflow notebooks document; they export nothing
        src = (ROOT / "nbs" / f"{g}.ipynb").read_text()
        assert "#| export" not in src and "default_exp" not in src, g


# ------------------------------------------------------------------------------------------ the whole site
# The docs build executes every notebook (~4 minutes) once per process (`conftest.docs_site`), so every test that reads
# it lives in this file: CI's xdist workers take whole files (`--dist loadfile`), and one worker builds it once.
NBS = sorted((ROOT / "nbs").glob("*.ipynb"))


@pytest.mark.slow
@pytest.mark.parametrize("nb", NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, docs_site):
    """Every cell but `notest`/`slow` ones, heavy cells included, as `nbdev-test --flags heavy` runs them: read from
    the docs build, which executes each notebook that way in a fresh process (once for the site and for this test).
    The fast tier runs each without its heavy cells (`test_notebooks.py`)."""
    ran = docs_site.record.get(nb.name)
    assert ran is not None, (f"the docs build did not execute {nb.name} (see test_docs.py::"
                             f"test_site_builds_with_no_broken_links):\n{docs_site.result.stderr[-3000:]}")
    assert not ran["error"], f"{nb.name} failed; run `nbdev-test --flags heavy {nb}` to see it again:\n{ran['error']}"


@pytest.fixture(scope="module")
def site(docs_site):
    "The site built as CI builds it, heavy cells run (`conftest.docs_site`, shared with `test_notebook` above)."
    return docs_site.out, docs_site.result


@pytest.mark.slow
def test_site_builds_with_no_broken_links(site):
    out, r = site
    assert r.returncode == 0, f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    assert re.search(r"links: \d+ internal checked, 0 broken", r.stdout), r.stdout[-2000:]
    assert (out / "static" / "site.css").is_file() and (out / "static" / "jupyterlab.css").is_file()


@pytest.mark.slow
def test_every_page_is_there_with_its_outputs(site):
    out, _ = site
    for p in build.pages():
        text = (out / p.file).read_text()
        assert f"<title>{html.escape(p.title)} — fmops_nb</title>" in text, p.file
        assert '<script type="application/vnd.jupyter.widget' not in text, p.file  # no widget left for a JS manager
    index = (out / "index.html").read_text()
    assert "Getting started" in index and "fmops workspace" in index  # `%fmops workspace` ran: its table is shown


@pytest.mark.slow
def test_each_workflow_page_shows_a_rendered_panel(site):
    out, _ = site
    seen = {"guide_drift": ["DriftPanel", "Drift: "], "guide_finetune": ["FinetunePanel", "finished"],
            "guide_diff_promote": ["DiffPanel", "RegistryPanel", "tickets:v2"],
            "guide_reports": ["tickets"], "guide_policies": ["RegistryPanel", "rollback"]}
    for slug in build.GUIDES:
        text = (out / f"{slug}.html").read_text()
        assert re.search(r"""class=["']fmops-static-panel""", text), f"{slug}: no panel"
        assert not re.search(r"\b(VBox|HBox|GridBox)\(children=", text), f"{slug}: a widget shown as its repr"
        for what in seen[slug]: assert what in text, f"{slug}: {what!r} not shown"


@pytest.mark.slow
def test_cli_reference_lists_every_subcommand_of_the_real_parser(site):
    from fmops_nb.cli import parser
    out, _ = site
    text = (out / "ref_cli.html").read_text()
    ids = set(re.findall(r'id="([^"]+)"', text))
    commands = [c for c, _ in build.subcommands(parser())]
    assert {"fmops drift", "fmops report run", "fmops schedule add", "fmops finetune stop"} <= set(commands)
    for c, p in build.subcommands(parser()):
        assert build.cli_anchor(c) in ids, c
        usage = p.format_usage().split("\n")[0].removeprefix("usage: ")
        assert html.escape(usage) in text, c


@pytest.mark.slow
def test_references_are_generated_from_the_code(site):
    from fmops_nb.finetune import spec_keys
    out, _ = site
    spec = (out / "ref_finetune_spec.html").read_text()
    for key, typ, default, meaning in spec_keys():
        assert f">{html.escape(key)}<" in spec, key
    templates = (out / "ref_templates.html").read_text()
    for t in sorted((ROOT / "templates").glob("*.ipynb")):
        assert f'id="{t.stem}"' in templates, t.stem
    assert "reference" in templates and "label_column" in templates
