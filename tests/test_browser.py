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
    for cmd in ("%fmops config", "%fmops drift", "%fmops help", "%fmops workspace"):
        assert cmd in help_text
    assert "Run %fmops help COMMAND for a command's arguments." in help_text
    err = out[2]
    assert "UsageError: Unknown %fmops command 'nosuch'" in err
    assert "Available: config, drift, help, workspace." in err
    assert "Traceback" not in err
    # the help table is a real table a person can read, not a text dump
    rows = page.eval_on_selector_all(".fmops-help table tr", "els => els.length")
    assert rows >= 4
