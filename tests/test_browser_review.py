"""The review panel in JupyterLab in Chromium: judged by clicks and by keys, the kernel restarted mid-queue, the queue
reopened — nothing lost, and it resumes at the first item not judged."""

import pytest

from lab import lab_session, need_chromium, screenshot, write_notebook

pytestmark = pytest.mark.browser

need_chromium()

from playwright.sync_api import expect  # noqa: E402  (after the skip: the fast tier has no browser)


@pytest.fixture
def lab(tmp_path, isolated_workspace):
    yield from lab_session(tmp_path, {"FMOPS_HOME": str(isolated_workspace), "FMOPS_USER": "dana"})


SETUP = """
import pandas as pd
from fmops_nb.review import open_review, ReviewPanel
preds = pd.DataFrame({'id': ['r1', 'r2', 'r3', 'r4', 'r5'],
                      'input': ['WIN a <b>free</b> phone', 'lunch at noon?', 'URGENT: verify your account',
                                'minutes attached', 'see you tomorrow'],
                      'prediction': ['ham', 'ham', 'spam', 'spam', 'ham'], 'confidence': [.51, .55, .6, .62, .99]})
"""
OPEN = "panel = ReviewPanel(open_review(preds, name='triage', labels=['spam', 'ham'], n=4, id_column='id'))\npanel"


def test_review_queue_by_clicks_and_keys_survives_a_kernel_restart(lab, tmp_path, isolated_workspace):
    server, browser = lab
    write_notebook(tmp_path / "review.ipynb", [SETUP, OPEN])
    page = browser.open_notebook(server, "review.ipynb")
    browser.run_all()
    panel = page.locator(".fmops-review-panel")
    head = panel.locator(".fmops-review-head")
    expect(head).to_contain_text("item 1 of 4 · 0 of 4 judged by dana", timeout=120_000)
    browser.wait_idle()
    # the least confident prediction first, its markup shown as text
    expect(panel.locator(".fmops-review-item")).to_contain_text("WIN a <b>free</b> phone")
    assert panel.locator(".fmops-review-item b").count() == 0
    # a click judges
    panel.locator("button.fmops-review-choice", has_text="spam (1)").click()
    expect(head).to_contain_text("item 2 of 4 · 1 of 4 judged")
    expect(panel.locator(".fmops-ok")).to_contain_text("Saved label: spam (item 1).")
    # keys: typed into the keys field, which empties itself after each
    keys = panel.locator(".fmops-review-keys input")
    keys.click()
    page.keyboard.type("2")
    expect(head).to_contain_text("item 3 of 4 · 2 of 4 judged")
    expect(keys).to_have_value("")
    page.keyboard.type("s")  # skip item 3
    expect(head).to_contain_text("item 4 of 4 · 2 of 4 judged")
    page.keyboard.type("b")  # back to it
    expect(head).to_contain_text("item 3 of 4 · 2 of 4 judged")
    page.keyboard.type("1")
    expect(head).to_contain_text("item 4 of 4 · 3 of 4 judged")
    expect(panel.locator("progress, .widget-hprogress")).to_have_count(1)
    screenshot(panel, tmp_path / "C-review-panel.png")

    # the kernel restarts mid-queue (item 4 not judged): what was judged is already stored
    page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.restart()")
    browser.wait_idle()
    from fmops_nb import feedback
    df = feedback.query(queue="triage", ws=None)
    assert list(df["item"]) == ["r1", "r2", "r3"] and list(df["value"]) == ["spam", "ham", "spam"]
    assert set(df["reviewer"]) == {"dana"}

    # reopened: the same queue, at the first item not judged
    browser.run_all()
    expect(head).to_contain_text("item 4 of 4 · 3 of 4 judged by dana", timeout=120_000)
    browser.wait_idle()
    expect(panel.locator(".fmops-review-item")).to_contain_text("minutes attached")
    panel.locator(".fmops-review-keys input").click()
    page.keyboard.type("b")
    expect(head).to_contain_text("item 3 of 4")
    expect(panel).to_contain_text("You said: spam (label). Choose again to change it.")
    expect(panel.locator("button.fmops-review-choice.fmops-review-chosen")).to_have_text("spam (1)")
    page.keyboard.type("s")
    page.keyboard.type("2")
    expect(head).to_contain_text("end of the queue · 4 of 4 judged")
    expect(panel.locator(".fmops-review-end")).to_contain_text("Every item is judged.")
    screenshot(panel, tmp_path / "C-review-done.png")
    assert list(feedback.query(queue="triage")["value"]) == ["spam", "ham", "spam", "ham"]
