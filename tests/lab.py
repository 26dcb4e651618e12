"""A JupyterLab-in-Chromium harness: a real `jupyter lab` on 127.0.0.1 and Debian's chromium driven by playwright.

Later panels add themselves with a notebook (a list of cell sources) and what a person should see in it.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path, cells: list[str]) -> Path:
    "A notebook with one code cell per source, for the python3 kernel of this environment."
    nb = {"nbformat": 4, "nbformat_minor": 5,
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "cells": [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": src} for i, src in enumerate(cells)]}
    path.write_text(json.dumps(nb))
    return path


class JupyterLab:
    "A `jupyter lab` server in `root`, bound to 127.0.0.1 with a token, stopped by its pid."

    def __init__(self, root: Path, env: dict | None = None):
        self.root, self.port, self.token = Path(root), free_port(), secrets.token_hex(16)
        rt = self.root / ".jupyter-runtime"
        self.env = {**os.environ, **(env or {}), "JUPYTER_RUNTIME_DIR": str(rt / "runtime"),
                    "JUPYTERLAB_SETTINGS_DIR": str(rt / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(rt / "workspaces"),
                    "JUPYTER_CONFIG_DIR": str(rt / "config")}
        self.proc: subprocess.Popen | None = None
        self.log = self.root / "jupyter-lab.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90):
        # no "get notified about Jupyter news?" toast over the panels in screenshots
        prefs = Path(self.env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        prefs.parent.mkdir(parents=True, exist_ok=True)
        prefs.write_text(json.dumps({"fetchNews": "false"}))
        cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip", "127.0.0.1", "--port", str(self.port),
               "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}", "--allow-root",
               f"--ServerApp.root_dir={self.root}", "--LabApp.expose_app_in_browser=True",
               "--ServerApp.open_browser=False", "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=self.env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"jupyter lab did not answer in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def http_status(self, path: str) -> int:
        "The HTTP status this server answers for `path` (e.g. `files/sub/x.html`), with the token."
        import urllib.error
        sep = "&" if "?" in path else "?"
        try:
            with urllib.request.urlopen(f"{self.url}/{path.lstrip('/')}{sep}token={self.token}", timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    def pids(self) -> set[int]:
        "The server's pid and every process it started (kernels)."
        import psutil
        try:
            p = psutil.Process(self.proc.pid)
            return {p.pid, *(c.pid for c in p.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def stop(self, timeout: float = 20) -> set[int]:
        "SIGTERM the server by pid (it shuts its kernels down); return the pids still alive afterwards."
        import psutil
        if self.proc is None:
            return set()
        pids = self.pids()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        deadline = time.time() + timeout
        alive = {p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        while alive and time.time() < deadline:
            time.sleep(0.2)
            alive = {p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        for p in alive:  # never leave a kernel behind, but report it
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return alive


class Browser:
    "Headless Debian chromium driven by playwright (never `playwright install`)."

    def __init__(self):
        from playwright.sync_api import sync_playwright
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        self.page = self.browser.new_page(viewport={"width": 1280, "height": 900})

    def open_notebook(self, lab: JupyterLab, name: str, timeout_ms: int = 90_000):
        "Open `name` in JupyterLab and wait until its kernel is idle."
        page = self.page
        page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}&reset", timeout=timeout_ms)
        page.wait_for_function(
            "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
            " return k && k.status === 'idle'; }", timeout=timeout_ms)
        return page

    def run_all(self):
        self.page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

    def wait_idle(self, timeout_ms: int = 120_000):
        "Wait until every cell has run (no `[*]` prompt left) and the kernel is idle."
        self.page.wait_for_function(
            "() => { const w = window.jupyterapp.shell.currentWidget;"
            " const busy = [...document.querySelectorAll('.jp-InputPrompt')].some(e => e.textContent.includes('*'));"
            " return !busy && w.sessionContext.session.kernel.status === 'idle'; }", timeout=timeout_ms)

    def set_theme(self, dark: bool, timeout_ms: int = 30_000):
        "Switch JupyterLab to its dark (or light) theme, as Settings > Theme does, and wait until the page has it."
        theme = "JupyterLab Dark" if dark else "JupyterLab Light"
        self.page.evaluate(f"() => window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})")
        self.page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{str(not dark).lower()}'"
                                    " && getComputedStyle(document.body).getPropertyValue('--jp-layout-color0').trim() !== ''",
                                    timeout=timeout_ms)
        # the theme's stylesheet is swapped in: wait until the notebook's background follows it
        want = "dark" if dark else "light"
        self.page.wait_for_function(
            "(want) => { const c = getComputedStyle(document.querySelector('.jp-Notebook')).backgroundColor;"
            " const m = c.match(/\\d+/g); if (!m) return false; const l = (+m[0] + +m[1] + +m[2]) / 3;"
            " return want === 'dark' ? l < 100 : l > 155; }", arg=want, timeout=timeout_ms)

    def outputs(self) -> list[str]:
        "The visible text of each cell's output area, in order."
        return self.page.eval_on_selector_all(".jp-Cell .jp-Cell-outputArea", "els => els.map(e => e.innerText)")

    def close(self):
        self.browser.close()
        self._pw.stop()




def screenshot(locator, path: Path) -> Path:
    "Screenshot `locator` into `path`, and copy it into $FMOPS_SCREENSHOTS when set (for closing notes)."
    locator.screenshot(path=str(path))
    if os.environ.get("FMOPS_SCREENSHOTS"):
        import shutil
        shutil.copy(path, Path(os.environ["FMOPS_SCREENSHOTS"]) / path.name)
    return path


def lab_session(tmp_path: Path, env: dict):
    "A started JupyterLab and a browser on it, for a test fixture to yield; both stopped after, and nothing left."
    server = JupyterLab(tmp_path, env=env).start()
    browser = None
    try:
        browser = Browser()
        yield server, browser
    finally:
        if browser is not None:
            browser.close()
        left = server.stop()
        assert not left, f"processes left running after the server stopped: {left}"


def need_chromium():
    "Skip the calling test module where Debian's chromium is not installed; in CI its absence is an error."
    import pytest
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{CHROMIUM} is missing in CI: .ci/run installs it with `apt-get install -y chromium`")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)", allow_module_level=True)
