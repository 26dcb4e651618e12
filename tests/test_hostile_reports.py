"""Reports, schedules and policies against hostile input: concurrent runs, inert reports, fail-closed gates, clear
errors. Each test names the hostile inputs it feeds (`hostile(...)`), asserts the error a user sees and that nothing
stored changed."""
import base64, datetime as dt, hashlib, json, math, os, re, shlex, socket, subprocess, sys, tempfile, threading, time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from fmops_nb import monitor, reports, schedule
from fmops_nb.core import Workspace, atomic_write, process_start
from fmops_nb.errors import ConfigError, FmopsError, ValidationError, WorkspaceError
from tiny import TRAIN_SCRIPT

P = "<img src=x onerror=alert(1)>"  # live markup, if anything forgets to escape it
M = "$\\undefined$"  # mathtext that matplotlib cannot parse


def fmops(*args, cwd=None, timeout=600, env=None):
    return subprocess.run([sys.executable, "-m", "fmops_nb.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, **(env or {})})


def template(path: Path, params: str, *cells: str) -> Path:
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[p, *[nbformat.v4.new_code_cell(c) for c in cells]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def tick(folder: Path) -> Path:
    return template(folder / "tick.ipynb", "n: int = 1", "from fmops_nb.reports import record\nrecord('twice', n * 2)")


def listing(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.iterdir()}


class Live(HTMLParser):
    "What a browser would run or fetch in a page: elements and attributes no report makes, and the page's text."
    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.found, self.text, self.styles = [], [], 0
        self.feed(page); self.close()
        self.text = ''.join(self.text)

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "iframe", "object", "embed", "link", "base", "form", "frame", "applet", "use", "animate",
                   "set"):
            self.found.append(tag)
        if tag == "style":
            self.styles += 1  # report.html has its own one, in <head>
        for k, v in attrs:
            if k.startswith("on") or k == "srcdoc":
                self.found.append(f"{tag}[{k}]")
            local = (v or "").startswith(("data:image/png;base64,", "#"))
            if k in ("src", "href", "xlink:href", "action", "formaction") and not local:
                self.found.append(f"{tag}[{k}={v}]")
            if v and "javascript:" in v.replace(" ", "").lower():
                self.found.append(f"{tag}[{k}=javascript:]")
        if tag == "img" and not any(k == "src" for k, _ in attrs):
            self.found.append("img without src (the payload's element)")

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)


def live_in_page(page: str) -> list:
    live = Live(page)
    return live.found + (["a second <style>"] if live.styles > 1 else [])


def live_in_notebook(path: Path) -> list:
    "Live markup in the HTML outputs of an output notebook (what a notebook viewer renders)."
    nb = nbformat.read(str(path), as_version=4)
    found = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            d = o.get("data", {})
            for mime in ("text/html", "image/svg+xml", "text/markdown", "application/javascript"):
                if mime in d:
                    bad = live_in_page(d[mime]) if mime == "text/html" else [f"a {mime} output"]
                    found += [f"{mime}: {x}" for x in bad]
    return found


def md5_b64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


# ---------------------------------------------------------------- 8. every failure is an FmopsError

@pytest.mark.slow
@pytest.mark.hostile
def test_a_template_that_is_not_a_notebook_is_refused_without_its_bytes(tmp_path, hostile):
    cases = {"binary.ipynb": b"\x89PNG\r\n\x1a\n" + b"SECRET-BYTES" * 50, "list.ipynb": b'["SECRET-BYTES"]',
             "nocells.ipynb": b'{"metadata": {}, "nbformat": 4, "nbformat_minor": 5, "SECRET": "SECRET-BYTES"}',
             "badcells.ipynb": b'{"cells": [{"cell_type": "code", "SECRET": "SECRET-BYTES"}], "metadata": {}, '
                               b'"nbformat": 4, "nbformat_minor": 5}'}
    for name, data in cases.items():
        hostile(f"template file {name}")
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValidationError, match="is not a Jupyter notebook") as e:
            reports.run_report(tmp_path / name, log=False)
        assert "SECRET-BYTES" not in str(e.value) and "fmops report templates" in str(e.value)
    hostile("a folder named like a template")
    (tmp_path / "folder.ipynb").mkdir()
    with pytest.raises(ValidationError, match="does not exist"):
        reports.run_report(tmp_path / "folder.ipynb", log=False)
    r = fmops("report", "run", str(tmp_path / "binary.ipynb"), "--no-wandb", cwd=tmp_path)
    assert r.returncode == 1 and "is not a Jupyter notebook" in r.stderr
    assert "Traceback" not in r.stderr and "SECRET" not in r.stderr
    r = fmops("schedule", "add", "x", "--cron", "0 6 * * *", "--template", str(tmp_path / "list.ipynb"), cwd=tmp_path)
    assert r.returncode == 1 and "is not a Jupyter notebook" in r.stderr and "Traceback" not in r.stderr
    assert not any(Workspace.open().reports_dir.iterdir()) and schedule.schedules() == []  # nothing ran, nothing stored


@pytest.mark.hostile
def test_a_working_directory_that_is_a_file_or_missing_is_named_for_what_it_is(tmp_path, hostile):
    "`--cwd` a file is 'not a folder', a missing path 'does not exist'; neither starts a kernel or leaves a run folder."
    tpl = tmp_path / "t.ipynb"
    cell = nbformat.v4.new_code_cell("x: int = 1")
    cell.metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(tpl))
    (tmp_path / "afile").write_text("not a folder")
    for cwd, says in ((tmp_path / "afile", "is not a folder"), (tmp_path / "nowhere" / "deeper", "does not exist")):
        hostile(f"--cwd {cwd.name}")
        with pytest.raises(ValidationError, match=says):
            reports.run_report(tpl, log=False, cwd=cwd)
        r = fmops("report", "run", str(tpl), "--cwd", str(cwd), "--no-wandb", cwd=tmp_path)
        assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not Workspace.open().reports_dir.exists() or not any(Workspace.open().reports_dir.iterdir())


@pytest.mark.hostile
def test_a_template_file_name_that_is_not_a_safe_name_is_refused(tmp_path, hostile):
    for name in (f"{P}.ipynb", "...ipynb", "a b.ipynb"):  # '...ipynb' has the stem '..': reports/../ is the workspace
        hostile(f"template file named {name!r}")
        tpl = template(tmp_path / name, "n: int = 1", "print(n)")
        with pytest.raises(ValidationError, match="template name .* is not allowed"):
            reports.run_report(tpl, log=False)
    assert not any(Workspace.open().reports_dir.iterdir())


@pytest.mark.slow
@pytest.mark.hostile
def test_values_inside_list_and_dict_parameters_must_be_json_plain(tmp_path, hostile):
    tpl = template(tmp_path / "t.ipynb", "columns: list = []\nlimits: dict = {}\nthreshold: float = 0.1",
                   "print(columns)")
    spec = reports.schema(tpl)
    cases = [({"columns": ["a", dt.date(2026, 1, 1)]}, "Parameter 'columns' item [1] is datetime.date(2026, 1, 1)",
              "'2026-01-01'"),
             ({"columns": [{"a", "b"}]}, "Parameter 'columns' item [0] is", "values inside list and dict parameters"),
             ({"limits": {"psi": [0.1, dt.datetime(2026, 1, 1, 6)]}}, "Parameter 'limits' key 'psi' item [1]",
              "Write it as a string"),
             ({"limits": {1: "a"}}, "Parameter 'limits' has the key 1 (int)", "dict keys must be strings"),
             ({"columns": [float("nan")]}, "Parameter 'columns' item [0] is nan", "finite numbers"),
             ({"threshold": float("inf")}, "Parameter 'threshold' is inf", "finite numbers"),
             ({"columns": [b"bytes"]}, "Parameter 'columns' item [0] is b'bytes'", "Write it as a string")]
    for params, where, what in cases:
        hostile(f"parameters {params!r}")
        with pytest.raises(ValidationError) as e:
            reports.validate(spec, params)
        assert where in str(e.value) and what in str(e.value), str(e.value)
    assert reports.validate(spec, {"columns": ["a", 1, 2.5, True, None, ["x"], {"k": "v"}]})["columns"][6] == {"k": "v"}
    # from the shell: YAML reads a date, a set and .nan inside lists
    for value, msg in (("[2026-01-01]", "item [0] is datetime.date(2026, 1, 1)"),
                       ("[!!set {a: null}]", "must be a list, got '[!!set {a: null}]' (str)"), ("[.nan]", "item [0] is nan")):
        hostile(f"-p columns {value}")
        r = fmops("report", "run", str(tpl), "-p", "columns", value, "--no-wandb", cwd=tmp_path)
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = fmops("schedule", "add", "s", "--cron", "0 6 * * *", "--template", str(tpl), "-p", "columns", "[2026-01-01]",
              cwd=tmp_path)
    assert r.returncode == 1 and "item [0] is datetime.date" in r.stderr
    assert not any(Workspace.open().reports_dir.iterdir()) and schedule.schedules() == []


@pytest.mark.slow
@pytest.mark.hostile
def test_a_cron_expression_that_never_fires_is_refused_and_one_stored_before_reads_never(tmp_path, hostile):
    tpl = tick(tmp_path)
    ws = Workspace.open()
    for cron in ("0 0 31 2 *", "0 0 30 2 *", "0 6 31 4,6,9,11 *"):
        hostile(f"cron {cron!r}")
        with pytest.raises(schedule.CronError, match="never fires: day of month .* never falls in month"):
            schedule.add("never", cron, str(tpl), ws=ws)
    r = fmops("schedule", "add", "never", "--cron", "0 0 31 2 *", "--template", str(tpl), cwd=tmp_path)
    assert r.returncode == 1 and "never fires" in r.stderr and "1-28 always exist" in r.stderr
    assert "Traceback" not in r.stderr
    assert schedule.schedules(ws) == []
    assert schedule.Cron("0 0 29 2 *").never() == ""  # leap days
    assert schedule.Cron("0 0 31 2 1").never() == ""  # and Mondays (cron's OR of the two day fields)
    # written by an older fmops (or by hand): one that never fires, one that cannot be read; a good one beside them
    schedule.add("good", "0 6 * * *", str(tpl), ws=ws)
    hostile("a stored schedule whose cron never fires"); hostile("a stored schedule whose cron cannot be read")
    with ws.transaction() as con:
        for name, cron in (("feb31", "0 0 31 2 *"), ("arabic", "0 \u0663 * * *")):
            con.execute("INSERT INTO schedules VALUES (?,?,?,?,?,?,1)",
                        (name, cron, str(tpl), "{}", "2026-01-01T00:00:00", "old"))
    ss = {s.name: s for s in schedule.schedules(ws)}
    assert ss["feb31"].next_due() is None and "never" in repr(ss["feb31"]) and "never fires" in ss["feb31"].problem()
    assert ss["arabic"].to_dict()["next_due"] is None and "use ASCII digits" in ss["arabic"].to_dict()["problem"]
    out = fmops("schedule", "ls", cwd=tmp_path)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    assert "never" in out.stdout and "good" in out.stdout
    js = {s["name"]: s for s in json.loads(fmops("schedule", "ls", "--json", cwd=tmp_path).stdout)}
    assert js["feb31"]["next_due"] is None and js["good"]["next_due"] and js["good"]["problem"] == ""
    cron = schedule.crontab(ws)
    assert "# feb31: never fires" in cron and "# arabic: Cron expression" in cron and "--only good" in cron
    assert "--only arabic" not in cron  # not a line cron could read
    done = {r["schedule"]: r for r in schedule.run_due(ws, now=dt.datetime(2026, 3, 1, 5, 0), log=False)}
    assert done["arabic"]["status"] == "skipped" and "ASCII digits" in done["arabic"]["why"]
    assert "feb31" not in done and schedule.history(ws) == []  # never due; nothing ran (the good one: due at 06:00)


@pytest.mark.hostile
def test_cron_fields_take_ascii_digits_only(tmp_path, hostile):
    tpl = tick(tmp_path)
    for cron in ("\u00b2 * * * *", "0 \u0663 * * *", "0 6 \uff11 * *", "0 6 * \u0661\u0662 *", "0 6 * * \u0665",
                 "*/\u00b9 * * * *", "0-\u0665 * * * *", "\uff10 6 * * *"):
        hostile(f"cron {cron!r}")
        with pytest.raises(schedule.CronError, match="ASCII digits"):
            schedule.add("uni", cron, str(tpl))
    r = fmops("schedule", "add", "uni", "--cron", "0 \u0663 * * *", "--template", str(tpl), cwd=tmp_path)
    assert r.returncode == 1 and "is not a valid hour (use ASCII digits 0-9)" in r.stderr
    assert "Traceback" not in r.stderr
    assert schedule.schedules() == []


class Dripping:
    "An HTTP server on 127.0.0.1 that answers one header line every 0.3 s and never finishes (for at most 60 s)."
    def __init__(self):
        self.sock = socket.socket(); self.sock.bind(("127.0.0.1", 0)); self.sock.listen(4)
        self.port, self.stop, self.accepted = self.sock.getsockname()[1], threading.Event(), threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stop.is_set():
            try: c, _ = self.sock.accept()
            except OSError: return
            self.accepted.set()
            threading.Thread(target=self.drip, args=(c,), daemon=True).start()

    def drip(self, c):
        try:
            c.recv(65536); c.sendall(b"HTTP/1.1 200 OK\r\n")
            end = time.monotonic() + 60
            while not self.stop.is_set() and time.monotonic() < end:
                c.sendall(b"X-Drip: 1\r\n"); self.stop.wait(0.3)
        except OSError: pass
        finally: c.close()

    def close(self):
        self.stop.set(); self.sock.close()


@pytest.mark.hostile
def test_a_webhook_has_one_deadline_for_the_whole_answer(tmp_path, hostile):
    hostile("a webhook server that drips a header line every 0.3 s and never finishes")
    srv = Dripping()
    try:
        ws = Workspace.open()
        ws.config_path.write_text(f'[monitor]\nsinks = ["webhook", "log"]\n'
                                  f'webhook_url = "http://127.0.0.1:{srv.port}/hook"\nwebhook_timeout_s = 1.0\n')
        ws.reload()
        t = time.monotonic()
        a = monitor.raise_alert(ws, "drift", "the production window drifted")
        took = time.monotonic() - t
        assert srv.accepted.is_set()  # it did reach the server
        assert took < 30, took  # one 1 s deadline (the server drips for 60 s, each line within a per-read timeout)
        got = monitor.alerts(ws)[0]
        assert got["id"] == a["id"] and got["message"] == "the production window drifted" and got["state"] == "open"
        assert got["deliveries"]["webhook"].startswith("failed:") and "timed out" in got["deliveries"]["webhook"]
        assert "within 1 s" in got["deliveries"]["webhook"] and got["deliveries"]["log"].endswith("alerts.jsonl")
    finally:
        srv.close()


@pytest.mark.hostile
def test_a_webhook_url_must_be_http_or_https(tmp_path, hostile):
    ws = Workspace.open()
    secret = tmp_path / "secret.txt"; secret.write_text("do not send")
    for url in (secret.as_uri(), "ftp://127.0.0.1/x", "javascript:alert(1)", "gopher://127.0.0.1:70/x",
                "http:///no-host", "data:,x"):
        hostile(f"monitor.webhook_url {url!r}")
        ws.config_path.write_text(f'[monitor]\nsinks = ["webhook"]\nwebhook_url = "{url}"\n'); ws.reload()
        with pytest.raises(ConfigError, match="must be an http:// or https:// URL"):  # refused when the config is read
            ws.config
        with pytest.raises(ValidationError, match="must be an http:// or https:// URL"):  # and never posted to
            monitor._post(url, b"{}", 5.0)
    ws.config_path.write_text(""); ws.reload()
    assert monitor.alerts(ws) == []  # nothing was recorded or sent
    from http.server import BaseHTTPRequestHandler, HTTPServer
    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"])); self.send_response(500); self.end_headers()
        def log_message(self, *a): pass
    srv = HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        hostile("a webhook that answers HTTP 500")
        url = f"http://127.0.0.1:{srv.server_port}/"
        ws.config_path.write_text(f'[monitor]\nsinks = ["webhook"]\nwebhook_url = "{url}"\n')
        ws.reload()
        monitor.raise_alert(ws, "p", "m")
        d = monitor.alerts(ws)[0]["deliveries"]["webhook"]
        assert d == "failed: the webhook answered HTTP 500: check monitor.webhook_url", d
    finally:
        srv.shutdown(); srv.server_close()


@pytest.mark.hostile
def test_model_version_and_schedule_names_with_markup_are_refused(tmp_path, hostile):
    import torch
    from fmops_nb.registry import Registry
    reg = Registry(log=False)
    for name in (P, M, "a b", "../x"):
        hostile(f"model name {name!r}")
        with pytest.raises(ValidationError, match="is not allowed"):
            reg.register(name, {"w": torch.ones(2)})
    reg.register("m", {"w": torch.ones(2)})
    hostile(f"alias {P!r}")
    with pytest.raises(ValidationError):
        reg.promote("m:v1", P)
    assert reg.models() == ["m"] and reg.get("m:v1").aliases == []
    hostile(f"schedule name {P!r}")
    with pytest.raises(ValidationError, match="schedule name .* is not allowed"):
        schedule.add(P, "0 6 * * *", str(tick(tmp_path)))
    hostile(f"recorded value name {P!r}")
    with pytest.raises(ValidationError, match="recorded value name"):
        reports.record(P, 1)


# ---------------------------------------------------------------- 4. gates fail closed

GATE = """
[monitor]
sinks = ["log"]
[[monitor.policies]]
name = "no-regression"
on = "promote"
when = "candidate.accuracy < current.accuracy"
action = "block"
[[monitor.policies]]
name = "floor"
on = "promote"
when = "candidate.f1 < 0.5"
action = "alert"
"""


def alias_rows(ws):
    with ws.connect() as con:
        aliases = [tuple(r) for r in con.execute("SELECT * FROM aliases")]
        return aliases, con.execute("SELECT count(*) FROM alias_history").fetchone()[0]


def stored_metrics(v, metrics):
    "`v` as if an older fmops (or another tool) had stored `metrics` on it: NaN, a string (the registry refuses them)."
    import dataclasses
    return dataclasses.replace(v, meta=v.meta | {"metrics": metrics})


@pytest.mark.hostile
def test_a_promotion_gate_that_cannot_be_evaluated_blocks(tmp_path, hostile):
    import torch
    from fmops_nb.monitor import PromotionBlocked, promotion_gate
    from fmops_nb.registry import Registry
    from fmops_nb.audit import audit_log
    ws = Workspace.open()
    ws.config_path.write_text(GATE); ws.reload()
    reg = Registry(ws, log=False)
    w = lambda k: {"w": torch.full((2,), float(k))}
    # a first promotion: there is no `current`, so the comparison does not apply (documented), but a candidate without
    # the metric is still refused; the alert gate notes f1
    reg.register("m", w(1))
    hostile("a first promotion of a candidate without the metric a comparison gate reads")
    with pytest.raises(PromotionBlocked, match="the candidate m:v1 has no metric 'accuracy'"):
        reg.promote("m:v1", "production")
    assert alias_rows(ws)[0] == []
    reg.register("m", w(2), metrics={"accuracy": 0.9})
    assert reg.promote("m:v2", "production").aliases == ["production"]
    assert [a["policy"] for a in monitor.alerts(ws)] == ["floor", "no-regression"]
    assert "has no metric 'f1'" in monitor.alerts(ws)[0]["message"]
    before = alias_rows(ws)
    cases = [({}, "the candidate m:vN has no metric 'accuracy'", "--metric accuracy=VALUE"),
             ({"accuracy": {"value": float("nan"), "direction": "higher"}},
              "metric 'accuracy' is nan, not a usable number", "usable value"),
             ({"accuracy": {"value": "high", "direction": "higher"}}, "is str 'high', not comparable with",
              "--metric accuracy=VALUE"),
             ({"accuracy": {"value": float("inf"), "direction": "higher"}}, "metric 'accuracy' is inf",
              "--metric accuracy=VALUE")]
    for i, (metrics, why, fix) in enumerate(cases):
        hostile(f"candidate metrics {metrics!r}")
        v = reg.register("m", w(i + 3), parent="m:v2")
        with pytest.raises(PromotionBlocked) as e:
            if metrics: promotion_gate(reg, stored_metrics(v, metrics), "m", "production")
            else: reg.promote(v.id, "production")
        msg = str(e.value)
        assert f"Policy 'no-regression' blocks promoting {v.id}" in msg and "cannot be evaluated" in msg, msg
        assert why.replace("m:vN", v.id) in msg, msg
        assert fix in msg and "--force" in msg and "audited" in msg
        assert alias_rows(ws) == before  # the alias did not move
        last = audit_log(ws, "m:production")[0]
        assert last["action"] == "promote-blocked" and last["after"]["version"] == v.id
        assert "cannot be evaluated" in last["after"]["why"]
    # a current version whose metric is missing blocks too: nothing to compare with is not "no regression"
    hostile("the current version without the gate's metric")
    old = reg.register("m", w(8), parent="m:v2", metrics={"f1": 0.9})
    with pytest.raises(PromotionBlocked, match="the candidate .* has no metric 'accuracy'"):
        reg.promote(old.id, "production")
    reg.promote(old.id, "production", reason="predates the accuracy metric", force=True)
    before = alias_rows(ws)
    good = reg.register("m", w(9), parent=old.id, metrics={"accuracy": 0.99, "f1": 0.9})
    with pytest.raises(PromotionBlocked, match=rf"the current m:production \({old.id}\) has no metric 'accuracy'"):
        reg.promote(good.id, "production")
    assert alias_rows(ws) == before
    # forcing needs a reason (when the caller passes one), and is audited
    hostile("--force with an empty reason")
    with pytest.raises(PromotionBlocked, match="forcing it needs a reason"):
        promotion_gate(reg, good, "m", "production", enforce=False, reason="")
    forced = promotion_gate(reg, good, "m", "production", enforce=False, reason="v1 predates metrics")
    assert forced == ["no-regression"]
    reg.promote(good.id, "production", reason="v1 predates metrics", force=True)
    last = audit_log(ws, "m:production")[0]
    assert last["action"] == "promote" and "forced past no-regression" in last["after"]["reason"]
    assert reg.get("m:production").id == good.id


@pytest.mark.hostile
def test_a_gate_that_reads_only_the_candidate_blocks_a_first_promotion_without_the_metric(tmp_path, hostile):
    import torch
    from fmops_nb.monitor import PromotionBlocked
    from fmops_nb.registry import Registry
    ws = Workspace.open()
    ws.config_path.write_text('[monitor]\nsinks = ["log"]\n[[monitor.policies]]\nname = "floor"\non = "promote"\n'
                              'when = "candidate.accuracy < 0.8"\naction = "block"\n'); ws.reload()
    reg = Registry(ws, log=False)
    reg.register("m", {"w": torch.ones(2)})
    hostile("a first promotion of a version with no metrics past a candidate-only gate")
    with pytest.raises(PromotionBlocked, match="the candidate m:v1 has no metric 'accuracy'"):
        reg.promote("m:v1", "production")
    assert alias_rows(ws)[0] == []


ROLLBACK = """
[monitor]
sinks = ["log"]
[[monitor.policies]]
name = "rollback-on-drop"
when = "live.production.accuracy < 0.95 * live.previous.accuracy"
action = "rollback"
target = "m:production"
severity = "critical"
[[monitor.policies]]
name = "drift"
when = "dataset_drift"
"""

V1_MONITOR_SCHEMA = """
        CREATE TABLE alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, policy TEXT NOT NULL,
                             severity TEXT NOT NULL, message TEXT NOT NULL, subject TEXT, action TEXT, outcome TEXT,
                             deliveries TEXT, state TEXT NOT NULL DEFAULT 'open');
        CREATE TABLE policy_streaks (policy TEXT NOT NULL, scope TEXT NOT NULL, streak INTEGER NOT NULL,
                                     updated_at TEXT NOT NULL, PRIMARY KEY (policy, scope))
"""


@pytest.mark.hostile
def test_a_rollback_policy_that_cannot_be_evaluated_alerts_once_per_stretch(tmp_path, hostile):
    ws = Workspace.open()
    ws.ensure_schema("monitor", [V1_MONITOR_SCHEMA])  # a workspace made by the previous fmops, with a streak in it
    with ws.transaction() as con:
        con.execute("INSERT INTO policy_streaks VALUES ('drift', 'maintenance_report', 1, '2026-01-01T00:00:00Z')")
    ws.config_path.write_text(ROLLBACK); ws.reload()
    chk = lambda values, **kw: monitor.check(values, template="maintenance_report", ws=ws, display=False, **kw)
    ok = {"dataset_drift": False, "live": {"production": {"accuracy": 0.9}, "previous": {"accuracy": 0.91}}}
    hostile("report values without the live metrics a rollback policy reads")
    first = chk({"dataset_drift": True})  # migrated on first use: the old streak counts
    f = first.firings[0]
    assert (f.policy, f.state) == ("rollback-on-drop", "not applicable") and "no recorded value 'live'" in f.message
    assert f.alert_id and "not guarding" in f.outcome
    assert (first.firings[1].state, first.firings[1].streak) == ("holding", 2)  # drift: its streak from before
    a = monitor.alerts(ws)[0]
    assert a["id"] == f.alert_id and a["severity"] == "critical" and a["policy"] == "rollback-on-drop"
    assert "cannot be evaluated" in a["message"] and "rollback of m:production is not guarding" in a["message"]
    assert "pass model, task and label_column to maintenance_report" in a["message"] and "(`template:`)" in a["message"]
    n = len(monitor.alerts(ws))
    hostile("a NaN where the rollback policy reads a number")
    nan = chk({"live": {"production": {"accuracy": float("nan")}, "previous": {"accuracy": 0.9}}})
    assert nan.firings[0].state == "not applicable" and "is nan" in nan.firings[0].message
    assert nan.firings[0].alert_id is None
    assert len(monitor.alerts(ws)) == n  # the same stretch: no second alert
    assert chk({}, dry_run=True).firings[0].outcome == ""  # a dry run changes nothing
    assert chk(ok).firings[0].state == "quiet"  # evaluated again: the stretch ends
    assert chk({}, dry_run=True).firings[0].outcome == "would alert: it cannot be evaluated"
    assert len(monitor.alerts(ws)) == n
    again = chk({})
    assert again.firings[0].alert_id and len(monitor.alerts(ws)) == n + 1  # a new stretch: a new alert
    with ws.connect() as con:
        assert con.execute("SELECT version FROM schema_versions WHERE component='monitor'").fetchone()[0] == 3


# ---------------------------------------------------------------- 7. reports are inert (the helpers)

@pytest.mark.hostile
def test_the_report_kit_escapes_values_and_report_html_neutralises_live_markup(tmp_path, hostile):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    InteractiveShell.instance()  # a shell, so that display() has somewhere to go
    hostile("markup and mathtext through fmt, show, html_table and the charts")
    assert (reports.fmt("<p>{} {x}</p>", P, x=reports.Safe("<b>ok</b>"))
            == "<p>&lt;img src=x onerror=alert(1)&gt; <b>ok</b></p>")
    with capture_output() as got:
        reports.show("<p>{}</p>", P)
        reports.show(f"<p>{P}</p>")  # an f-string by mistake: shown without anything live
        reports.show(reports.html_table([{P: M, "n": 1.5}], title=P))
        png = reports.bar_chart([M, P, "$x^2$", M], [1, None, float("nan"), 2], title=M, xlabel=M,
                                highlight=[1, 0, 0, 1])
        reports.line_chart([1, 2], {M: [1, 2], P: [2, 1]}, M, M, M)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    shown = [o.data["text/html"] for o in got.outputs if "text/html" in o.data]
    assert len(shown) == 3 and all(live_in_page(h) == [] for h in shown), shown
    assert P in Live(shown[0]).text and P in Live(shown[2]).text and M in Live(shown[2]).text
    hostile("live markup in the outputs an output notebook holds")
    evil = [f"<script>alert(1)</script>{P}<a href='javascript:alert(1)'>x</a><iframe src='https://evil.example'>",
            "<img src='https://evil.example/pixel.png'><div style='background:url(https://evil.example)'>s</div>",
            "<svg onload=alert(1)><rect/></svg>",
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table></mtext></math>",
            "<form action='https://evil.example'><button formaction='javascript:alert(1)'>b</button></form>",
            "<meta http-equiv=refresh content=0>"]
    outs = [nbformat.v4.new_output("display_data", data={"text/html": h}) for h in evil]
    outs += [nbformat.v4.new_output("stream", text=P),
             nbformat.v4.new_output("display_data", data={"image/png": "AAAA' onerror='alert(1)"}),
             nbformat.v4.new_output("error", ename=P, evalue=M, traceback=[])]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# T\n\n{P} [x](javascript:alert(1))"),
                                         nbformat.v4.new_code_cell("x", outputs=outs)])
    page = reports.report_html(nb, P, show_code=True)
    assert live_in_page(page) == [], live_in_page(page)
    assert "evil.example" not in page and Live(page).text.count(P) >= 3  # shown as text where it was text


# ------------------------------------------------------- 2. runs never collide; stamps, status.json, killed runs

@pytest.mark.slow
def test_a_run_folder_stamp_that_collides_draws_again_and_never_overwrites(tmp_path, monkeypatch, hostile):
    tpl = tick(tmp_path)
    ws = Workspace.open()
    taken = ws.reports_dir / "tick" / "20260101T000000000-abcd"
    taken.mkdir(parents=True)
    (taken / "status.json").write_text('{"status": "finished", "pid": 1}')
    hostile("a report folder stamp that another run holds")
    names = iter(["20260101T000000000-abcd", "20260101T000000000-abcd", "20260101T000000000-beef"])
    monkeypatch.setattr(reports, "_stamp", lambda: next(names))
    r = reports.run_report(tpl, {"n": 4}, ws=ws, log=False)
    assert r.dir.name == "20260101T000000000-beef" and r.status == "finished" and r.values == {"twice": 8}
    assert sorted(p.name for p in taken.iterdir()) == ["status.json"]  # the other run's folder is untouched
    hostile("a clock whose stamps always collide")
    monkeypatch.setattr(reports, "_stamp", lambda: "20260101T000000000-abcd")
    with pytest.raises(WorkspaceError, match="Could not find a free report folder name"):
        reports.run_report(tpl, {"n": 4}, ws=ws, log=False)
    assert len(list((ws.reports_dir / "tick").iterdir())) == 2


@pytest.mark.hostile
def test_status_json_read_while_it_is_written_and_when_it_is_damaged(tmp_path, hostile):
    from fmops_nb.reports import ReportRun
    ws = Workspace.open()
    d = ws.reports_dir / "t" / "20260101T000000000-abcd"; d.mkdir(parents=True)
    hostile("status.json rewritten while it is read")
    stop, seen, errors, start = threading.Event(), set(), [], process_start(os.getpid())
    def writer():
        i = 0
        while not stop.is_set():
            atomic_write(d / "status.json", json.dumps({"status": ("running", "finished")[i % 2], "pid": os.getpid(),
                                                         "pid_start": start, "pad": "x" * 20000}))
            i += 1
    atomic_write(d / "status.json", json.dumps({"status": "running", "pid": os.getpid()}))
    th = threading.Thread(target=writer); th.start()
    try:
        for _ in range(300):
            try: seen.add(ReportRun.load(d).status)
            except Exception as e: errors.append(e)
    finally:
        stop.set(); th.join()
    assert errors == [] and seen <= {"running", "finished"}
    for text in ("{not json", '["a list"]', ""):
        hostile(f"status.json holding {text!r}")
        (d / "status.json").write_text(text)
        r = ReportRun.load(d)
        assert r.status == "unknown" and "status.json cannot be read" in r.error
    hostile("values.json that is not JSON")
    (d / "values.json").write_bytes(b"\xff\xfe garbage")
    assert "values.json" in ReportRun.load(d).error and ReportRun.load(d).values == {}
    out = fmops("report", "ls", cwd=tmp_path)
    assert out.returncode == 0 and "unknown" in out.stdout and "Traceback" not in out.stderr
    hostile("a running run whose process id now belongs to another process")
    atomic_write(d / "status.json", json.dumps({"status": "running", "pid": os.getpid(), "pid_start": "1"}))
    assert ReportRun.load(d).status == "killed"
    atomic_write(d / "status.json", json.dumps({"status": "running", "pid": os.getpid(), "pid_start": start}))
    assert ReportRun.load(d).status == "running"


@pytest.mark.slow
def test_three_concurrent_report_runs_from_one_directory_all_finish(tmp_path):
    tpl = tick(tmp_path)
    Workspace.open()
    kernels = Path(tempfile.mkdtemp(prefix="k", dir="/tmp"))  # TMPDIR of the runs: their private kernel folders go here
    try:
        before = listing(tmp_path)
        procs = [subprocess.Popen([sys.executable, "-m", "fmops_nb.cli", "report", "run", str(tpl), "-p", "n", str(n)],
                                  cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "TMPDIR": str(kernels)})
                 for n in (1, 2, 3)]
        outs = [p.communicate(timeout=600) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outs]
        runs = reports.report_runs(template="tick")
        assert len({r.dir for r in runs}) == 3 and sorted(r.values["twice"] for r in runs) == [2, 4, 6]
        assert all(r.status == "finished" and r.wandb_run for r in runs)
        assert listing(tmp_path) == before  # nothing left in the working directory (no kernel-ipc-N sockets)
        assert list(kernels.iterdir()) == []  # and the private kernel folders are gone
    finally:
        import shutil
        shutil.rmtree(kernels, ignore_errors=True)


@pytest.mark.slow
def test_two_schedules_due_in_the_same_minute_both_run_under_the_printed_crontab(tmp_path):
    tpl = tick(tmp_path)
    ws = Workspace.open()
    schedule.add("first", "* * * * *", str(tpl), {"n": 1}, ws=ws)
    schedule.add("second", "* * * * *", str(tpl), {"n": 2}, ws=ws)
    lines = [l for l in schedule.crontab(ws).splitlines() if l and not l.startswith("#")]
    assert len(lines) == 2
    commands = [l.split(None, 5)[5] for l in lines]  # what cron runs: the line after its five time fields
    assert all("--only" in c and "run-due" in c for c in commands)
    kernels = Path(tempfile.mkdtemp(prefix="k", dir="/tmp"))
    try:
        before = listing(tmp_path)
        procs = [subprocess.Popen(c, shell=True, cwd="/", env={**os.environ, "TMPDIR": str(kernels)}) for c in commands]
        assert [p.wait(timeout=600) for p in procs] == [0, 0], (ws.root / "logs" / "schedule.log").read_text()[-3000:]
        h = {r["schedule"]: r for r in schedule.history(ws)}
        assert set(h) == {"first", "second"} and all(r["status"] == "finished" for r in h.values()), h
        assert sorted(reports.get_report(r["report"], ws).values["twice"] for r in h.values()) == [2, 4]
        assert listing(tmp_path) == before and list(kernels.iterdir()) == []
    finally:
        import shutil
        shutil.rmtree(kernels, ignore_errors=True)


# ------------------------------------------- 7. reports are inert (every template, every user-controlled field)

def hf_dir(folder: Path, weights: dict, config: dict) -> Path:
    "A Hugging Face style model folder: model.safetensors and config.json."
    from safetensors.torch import save_file
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def check_inert(run, must_show: list, charts: bool = True):
    "The run finished; its HTML, output notebook and W&B artifact hold no live markup; the payloads are there as text."
    from fmops_nb.tracking import read_run
    assert run.status == "finished", run.error
    page = run.html.read_text()
    assert live_in_page(page) == [], (run.id, live_in_page(page))
    text = Live(page).text
    for s in must_show:  # a tuple: one of them
        assert any(x in text for x in ((s,) if isinstance(s, str) else s)), (run.id, s)
    assert not charts or "data:image/png;base64," in page
    assert live_in_notebook(run.notebook) == [], (run.id, live_in_notebook(run.notebook))
    rec = read_run(run.wandb_run)
    art = next(a for a in rec.artifacts if a["type"] == "report")
    files = {f["path"]: f["digest"] for f in art["files"]}
    assert {"output.ipynb", "report.html", "values.json", "record.json"} <= set(files)
    for name in ("output.ipynb", "report.html", "values.json"):  # the artifact holds the very files checked above
        assert files[name] == md5_b64(run.dir / name), (run.id, name)  # (record.json gains the W&B run's path after it)


@pytest.mark.slow
@pytest.mark.hostile
def test_every_template_is_inert_against_markup_and_mathtext_in_every_field(tmp_path, monkeypatch, hostile):
    import numpy as np, pandas as pd, textwrap, torch
    from fmops_nb.demo import prepare_demo
    from fmops_nb.registry import Registry
    from fmops_nb.finetune import FinetuneSpec, launch
    torch.set_num_threads(1); monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ws, refp, prodp = prepare_demo(tmp_path / "demo", n=600, log=False)
    monkeypatch.setenv("FMOPS_HOME", str(ws.root))
    # drift: column names, categories (unseen in the reference: named by the quality findings), texts, chunk labels
    rng = np.random.default_rng(0)
    ref, cur = pd.read_parquet(refp), pd.read_parquet(prodp)
    for df, cats, shift in ((ref, ["a", "b", "c"], 0.0), (cur, ["a", P, M], 3.0)):
        df[P] = rng.choice(cats, len(df))
        df[M] = rng.normal(shift, 1.0, len(df))
        df["note"] = [f"{P} ticket {i} about {M} and {'more ' * (i % 7)}" for i in range(len(df))]
    hostile("column names, categories, text values and chunk labels with markup and mathtext")
    ref.to_parquet(refp_h := tmp_path / "ref.parquet"); cur.to_parquet(curp_h := tmp_path / "cur.parquet")
    # version diff: tensor and module names, config keys and values (an HF folder's config.json), descriptions
    hostile("tensor and module names, config.json keys and values, model descriptions with markup and mathtext")
    w = {f"{P}.weight": torch.ones(3, 3), f"{M}.bias": torch.ones(3), "enc.<script>alert(1)</script>.w": torch.ones(2)}
    reg = Registry(ws, log=False)
    v1 = reg.register("hostile", hf_dir(tmp_path / "hf1", w, {P: M, "label": P}), description=f"{P} first {M}",
                      metrics={"accuracy": 0.9})
    reg.promote(v1.id, "production")
    v2 = reg.register("hostile", hf_dir(tmp_path / "hf2", {k: v * 2 for k, v in w.items()}, {P: P, "label": M}),
                      parent=v1.id, description=f"{M} second {P}", metrics={"accuracy": 0.95})
    reg.promote(v2.id, "production")
    # maintenance: alert and policy messages, recorded values
    hostile("a policy message and an open alert's text with markup and mathtext")
    pol = ws.root.parent / "policies.yaml"
    pol.write_text(pol.read_text() + f"  - name: markup-message\n    when: dataset_drift\n"
                                     f"    message: '{P} drifted {M}'\n")
    monitor.raise_alert(ws, "seeded", f"{P} seeded {M}", sinks=["log"])
    # probe inputs and labels
    hostile("probe inputs and labels with markup and mathtext")
    probe = cur.head(200).copy()
    probe.loc[probe.index[::3], "label"] = P
    probe.loc[probe.index[1::3], "label"] = M
    probe.to_parquet(probep := tmp_path / "probe.parquet")
    # fine-tune: spec strings and the run's reason
    hostile("fine-tune spec name and text_column, and the run's reason, with markup and mathtext")
    (tmp_path / "train.py").write_text(TRAIN_SCRIPT)
    ft = launch(FinetuneSpec(base="", recipe="script", script=str(tmp_path / "train.py"), max_steps=3, model="ft",
                             name=f"{P} {M}", text_column=P), ws=ws)
    runs = {}
    data = {"reference": str(refp_h), "current": str(curp_h)}
    runs["drift"] = reports.run_report("drift_report", data | {"chunk_by": P, "embedder": "hashing"}, ws=ws)
    columns = [P, M, "channel", "latency_ms"]  # not the text column: this template has no embedder parameter
    runs["maintenance"] = reports.run_report("maintenance_report", data | {"model": "hostile", "columns": columns},
                                             ws=ws)
    runs["diff"] = reports.run_report("version_diff", {"a": v1.id, "b": v2.id}, ws=ws)
    runs["probe"] = reports.run_report("version_diff", {"a": "tickets:v1", "b": "tickets:v2", "task": "demo-tickets",
                                                        "probe": str(probep), "label_column": "label"}, ws=ws)
    assert ft.wait(300) == "finished", ft.tail(30)
    st = json.loads((ft.dir / "status.json").read_text())
    atomic_write(ft.dir / "status.json", json.dumps(st | {"reason": f"{P} stopped by {M}"}))  # as a failing recipe says
    runs["finetune"] = reports.run_report("finetune_report", {"run_id": ft.id}, ws=ws)
    check_inert(runs["drift"], [P, M])
    assert P in runs["drift"].values["drifted_columns"] or M in runs["drift"].values["drifted_columns"]
    assert {c["chunk"] for c in runs["drift"].values["timeline"]} == {"a", P, M}
    check_inert(runs["maintenance"], [P, M, f"{P} seeded {M}", f"{P} drifted {M}", (f"(most: {P}", f"(most: {M}")])
    firings = runs["maintenance"].values["policy_firings"]
    assert any(f["policy"] == "markup-message" and f["state"] == "fired" for f in firings)
    check_inert(runs["diff"], [f"{P} first {M}", f"{M} second {P}", f"model.{P}", (f"(most: {P}", f"(most: {M}")],
                charts=False)  # its module chart is inline SVG, drawn as text
    assert "enc.<script>alert(1)</script>" in [m["module"] for m in runs["diff"].values["modules"]]  # drawn as text
    check_inert(runs["probe"], [P, M], charts=False)
    assert runs["probe"].values["agreement"] < 1
    check_inert(runs["finetune"], [f"{P} {M}", f"{P} stopped by {M}"])


@pytest.mark.hostile
def test_a_run_that_breaks_before_its_kernel_says_so_in_status_json(tmp_path, monkeypatch, hostile):
    from fmops_nb.errors import ExecutionError
    tpl = tick(tmp_path)
    hostile("a disk error while a run writes its folder")
    def broken(): raise OSError(28, "No space left on device")
    monkeypatch.setattr(reports, "_versions", broken)
    with pytest.raises(ExecutionError, match="could not run: OSError: .*No space left on device") as e:
        reports.run_report(tpl, {"n": 1}, log=False)
    assert "What it wrote is in" in str(e.value)
    run = reports.report_runs(template="tick")[-1]
    assert run.status == "failed" and "No space left on device" in run.error  # not `running`, later misread as `killed`


@pytest.mark.hostile
def test_a_scheduled_run_whose_process_id_was_reused_reads_killed(tmp_path, hostile):
    ws = Workspace.open()
    schedule.add("s", "0 6 * * *", str(tick(tmp_path)), ws=ws)
    hostile("a `running` schedule row whose process id now belongs to another process (after a restart)")
    q = "INSERT INTO schedule_runs (schedule, due_at, started_at, status, pid, pid_start) VALUES (?,?,?,?,?,?)"
    with ws.transaction() as con:
        con.execute(q, ("s", "2026-01-01T06:00:00", "2026-01-01T06:00:01Z", "running", os.getpid(), "1"))
        con.execute(q, ("s", "2026-01-02T06:00:00", "2026-01-02T06:00:01Z", "running", os.getpid(),
                        process_start(os.getpid())))
    assert [r["status"] for r in schedule.history(ws)] == ["running", "killed"]


# ------------------------------------------------------------------ wave 2: what the attack round found

def gate_config(ws, when: str):
    ws.config_path.write_text('[monitor]\nsinks = ["log"]\n[[monitor.policies]]\nname = "gate"\non = "promote"\n'
                              f'when = "{when}"\naction = "block"\n')
    ws.reload()


FIRST_PROMOTIONS = [  # the gate's `when`, the candidate's metrics, what a first promotion (no current) must do
    ("candidate.accuracy < 0.9 or candidate.accuracy < current.accuracy", {}, "no metric 'accuracy'"),
    ("candidate.accuracy < 0.9 or candidate.accuracy < current.accuracy", {"accuracy": 0.5}, "fires"),
    ("candidate.accuracy < 0.9 or candidate.accuracy < current.accuracy", {"accuracy": 0.95}, "passes"),
    ("candidate.accuracy < current.accuracy or candidate.accuracy < 0.9", {"accuracy": 0.5}, "fires"),
    ("candidate.accuracy < current.accuracy or candidate.accuracy < 0.9", {}, "no metric 'accuracy'"),
    ("candidate.accuracy < current.accuracy or candidate.accuracy < 0.9", {"accuracy": float("nan")}, "is nan"),
    ("candidate.accuracy < current.accuracy and candidate.f1 < 0.5", {"accuracy": 0.9}, "no metric 'f1'"),
    ("candidate.accuracy < current.accuracy and candidate.f1 < 0.5", {"accuracy": 0.9, "f1": 0.9}, "passes"),
    ("candidate.accuracy < current.accuracy", {}, "no metric 'accuracy'"),
    ("candidate.accuracy < current.accuracy", {"accuracy": 0.1}, "passes"),
    ("current.accuracy - candidate.accuracy > 0.05", {}, "no metric 'accuracy'"),
    ("max(current.accuracy, 0.9) > candidate.accuracy", {"accuracy": "high"}, "is str 'high'"),
    ("not (candidate.accuracy >= current.accuracy and candidate.accuracy >= 0.9)", {"accuracy": 0.5}, "fires"),
    ("not (candidate.accuracy >= current.accuracy)", {"accuracy": 0.5}, "passes"),
    ("current.accuracy < candidate.accuracy < 0.9", {"accuracy": 0.95}, "passes"),
    ("current.accuracy < candidate.accuracy < 0.9", {}, "no metric 'accuracy'"),
    ("candidate.accuracy < current.accuracy or alias == 'production'", {"accuracy": 0.9}, "fires"),
]


@pytest.mark.hostile
def test_a_gate_blocks_a_missing_candidate_metric_on_a_first_promotion_whatever_else_it_reads(tmp_path, hostile):
    import torch
    from fmops_nb.monitor import PromotionBlocked, promotion_gate
    from fmops_nb.registry import Registry
    from fmops_nb.audit import audit_log
    ws = Workspace.open()
    reg = Registry(ws, log=False)
    for i, (when, metrics, expect) in enumerate(FIRST_PROMOTIONS):
        gate_config(ws, when)
        hostile(f"first promotion past `{when}` of a candidate with metrics {metrics!r}")
        usable = all(isinstance(x, float) and math.isfinite(x) for x in metrics.values())
        v = reg.register(f"g{i}", {"w": torch.full((2,), float(i))}, metrics=metrics if usable else None)
        before = alias_rows(ws)
        if expect == "passes":
            assert reg.promote(v.id, "production").aliases == ["production"], (when, metrics)
            continue
        with pytest.raises(PromotionBlocked) as e:
            if usable: reg.promote(v.id, "production")
            else: promotion_gate(reg, stored_metrics(v, {k: {"value": x} for k, x in metrics.items()}), f"g{i}",
                                 "production")
        msg = str(e.value)
        assert f"Policy 'gate' blocks promoting {v.id} to g{i}:production" in msg, (when, metrics, msg)
        if expect == "fires":
            assert "cannot be evaluated" not in msg and "Fix the candidate" in msg, (when, msg)
        else:
            assert "cannot be evaluated" in msg and expect in msg and "--metric" in msg and "--force" in msg, msg
        assert alias_rows(ws) == before  # the alias did not move
        assert audit_log(ws, f"g{i}:production")[0]["action"] == "promote-blocked"
    # once something is in production, nothing is exempt: a candidate without the metric is refused
    gate_config(ws, "candidate.accuracy < current.accuracy")
    hostile("a second promotion, of a candidate without the metric")
    v = reg.register("g2", {"w": torch.ones(2)}, parent="g2:v1")  # g2:v1 (accuracy 0.95) is in production
    before = alias_rows(ws)
    with pytest.raises(PromotionBlocked, match="the candidate g2:v2 has no metric 'accuracy'"):
        reg.promote(v.id, "production")
    assert alias_rows(ws) == before
    reg.register("g2", {"w": torch.zeros(2)}, parent="g2:v1", metrics={"accuracy": 0.99})
    assert reg.promote("g2:v3", "production").aliases == ["production"]


@pytest.mark.slow
@pytest.mark.hostile
def test_policies_with_a_wrong_typed_field_or_a_runaway_when_are_refused_clearly(tmp_path, hostile):
    ws = Workspace.open()
    monitor.raise_alert(ws, "seeded", "an open alert", sinks=["log"])
    alerts_before = monitor.alerts(ws, state=None)
    cases = [('message = 5', "`message` must be text"), ('template = 5', "`template` must be text"),
             ('severity = ["critical"]', "`severity` must be text"),
             ('action = "rollback"\ntarget = 5', "`target` must be text"),
             ('name = 5', "`name` must be text"), ('sinks = "log"', "`sinks` must be a list"),
             ('when = "' + "not " * 3000 + 'x"', "is 12,001 characters long"),
             ('when = "' + "-" * 5000 + 'x"', "characters long"), ('when = "' + "-" * 400 + 'x"', "levels deep"),
             ('when = "1' + " + 1" * 5000 + '"', "characters long"), ('when = "' + "not " * 200 + 'x"', "levels deep"),
             ('when = ["x"]', "`when` must be text")]
    for extra, says in cases:
        hostile(f"a policy with {extra[:60]!r}")
        body = '[monitor]\nsinks = ["log"]\n[[monitor.policies]]\n'
        keys = dict(line.split(" = ", 1) for line in extra.splitlines())
        body += "".join(f"{k} = {v}\n" for k, v in ({"name": '"p"', "when": '"x"'} | keys).items())
        ws.config_path.write_text(body); ws.reload()
        with pytest.raises(monitor.PolicyError) as e:
            monitor.policies(ws)
        assert says in str(e.value) and len(str(e.value)) < 1000, (extra[:60], str(e.value)[:300])
        with pytest.raises(monitor.PolicyError):
            monitor.check({"x": 1}, template="t", ws=ws, display=False)
        r = fmops("monitor", "ls", cwd=tmp_path)
        assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    pol = tmp_path / "policies.yaml"
    for text, says in ((bomb().replace("columns:", "policies:"), "uses the YAML anchor &a0"),
                       ("policies:\n  - {name: p, when: x, message: !!binary aGk=}\n", "uses the YAML tag !!binary"),
                       ("policies: [\n", "is not valid YAML")):
        hostile(f"a policy file holding {text[:40]!r}")
        pol.write_text(text)
        ws.config_path.write_text('[monitor]\nsinks = ["log"]\npolicy_file = "../policies.yaml"\n'); ws.reload()
        with pytest.raises(monitor.PolicyError) as e:
            monitor.policies(ws)
        assert str(e.value).startswith(f"Policy file {pol} {says}"), str(e.value)
        r = fmops("monitor", "ls", cwd=tmp_path)
        assert r.returncode == 1 and says in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    pol.write_text("policies:\n  - {name: gate, on: promote, when: candidate.a < 0.5, action: block}\n")
    assert [(p.name, p.on) for p in monitor.policies(ws)] == [("gate", "promote")]  # a bare `on:` still reads
    ws.config_path.write_text('[monitor]\nsinks = ["log"]\n'); ws.reload()
    for bad in (99999999999999999999999, -1, 0, 2 ** 63, True, "1; DROP TABLE alerts", 1.5, None):
        hostile(f"alerts ack {bad!r}")
        with pytest.raises(ValidationError, match="There is no alert .*fmops alerts ls"):
            monitor.acknowledge(bad, ws)
    r = fmops("alerts", "ack", "99999999999999999999999", cwd=tmp_path)
    assert r.returncode == 1 and "There is no alert 99999999999999999999999" in r.stderr
    assert "Traceback" not in r.stderr
    assert monitor.alerts(ws, state=None) == alerts_before  # nothing acknowledged, nothing lost
    assert monitor.acknowledge(str(alerts_before[0]["id"]), ws)["state"] == "acknowledged"  # as %fmops may pass it


CONTROL = ["\n", "\r", "\x0b", "\x0c", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\u00a0", "\u3000"]


@pytest.mark.hostile
def test_a_cron_expression_is_one_line_of_five_fields(tmp_path, hostile):
    tpl = tick(tmp_path)
    ws = Workspace.open()
    for ch in CONTROL:
        for cron in (f"0{ch}6 * * *", f"0 6 * * *{ch}* * * * * rm -rf ~", f"@daily{ch}"):
            hostile(f"cron {cron!r}")
            with pytest.raises(schedule.CronError, match="one line of five fields separated by spaces or tabs"):
                schedule.add("y", cron, str(tpl), ws=ws)
    r = fmops("schedule", "add", "y", "--cron", "0\n6 * * *", "--template", str(tpl), cwd=tmp_path)
    assert r.returncode == 1 and "one line of five fields" in r.stderr and "Traceback" not in r.stderr
    assert schedule.schedules(ws) == []
    s = schedule.add("tabs", "0\t6 * *  *", str(tpl), ws=ws)  # tabs and repeated spaces separate fields, as cron's
    assert s.next_due(dt.datetime(2026, 1, 1, 5)) == dt.datetime(2026, 1, 1, 6)
    # stored before (or by hand): reads never, is commented out in the crontab, is skipped by run-due
    hostile("a stored schedule whose cron holds a newline")
    with ws.transaction() as con:
        con.execute("INSERT INTO schedules VALUES (?,?,?,?,?,?,1)",
                    ("nl", "0\n6 * * *", str(tpl), "{}", "2026-01-01T00:00:00", "old"))
    nl = schedule.get("nl", ws)
    assert nl.next_due() is None and "one line of five fields" in nl.problem() and "never" in repr(nl)
    cron = schedule.crontab(ws)
    for line in cron.splitlines():  # every line is a comment or five time fields and a command
        assert line.startswith("#") or len(line.split(None, 5)) == 6 and schedule.Cron(" ".join(line.split()[:5]))
    assert "--only nl" not in cron and "# nl: Cron expression" in cron
    assert "0 6 * * * cd " in cron and "--only tabs" in cron  # written with single spaces
    done = {r["schedule"]: r for r in schedule.run_due(ws, now=dt.datetime(2026, 3, 1, 5, 0), log=False)}
    assert done["nl"]["status"] == "skipped" and "one line" in done["nl"]["why"]


def bomb(depth: int = 9) -> str:
    "A few hundred bytes of YAML whose `columns` expand to 10**depth strings."
    levels = ["&a0 [" + ",".join(["x"] * 10) + "]"] + [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]"
                                                        for i in range(1, depth)]
    return "columns: [" + ", ".join(levels) + "]\n"


@pytest.mark.slow
@pytest.mark.hostile
def test_report_parameters_are_read_by_one_yaml_reader_that_refuses_aliases_and_huge_values(tmp_path, hostile):
    import yaml
    tpl = template(tmp_path / "t.ipynb", "columns: list = []\nlimits: dict = {}\nn: int = 1", "print(columns)")
    ws = Workspace.open()
    cases = [(bomb(), "anchor"), ("a: &x [1]\nb: *x\n", "anchor &x"), ("a: [1]\nb: *x\n", "alias *x"),
             ("a: !!set {x: null}\n", "!!set"), ("a: !!binary aGVsbG8=\n", "!!binary"),
             ("a: !!omap [{x: 1}]\n", "!!omap"), ("a: !!pairs [{x: 1}]\n", "!!pairs"),
             ("a: !!python/object/apply:os.system [true]\n", "YAML tag !!python"), ("a: [1\n", "is not valid YAML"),
             ("n: " + "9" * 5000 + "\n", "too many digits"), ("a: " + "[" * 20000 + "\n", "nest"),
             ("1: a\n", "keys must be text"), (b"n: \xff\xfe\n", "is not UTF-8"),
             ("a: '" + "x" * 2_000_000 + "'\n", "more than 1 MB"), ("- a\n- b\n", "must hold a mapping")]
    for text, says in cases:
        hostile(f"parameter YAML {text[:50]!r}")
        with pytest.raises(ValidationError) as e:
            reports.read_yaml(text, "params.yaml", mapping=True)
        assert says in str(e.value) and str(e.value).count("params.yaml") == 1 and len(str(e.value)) < 600, \
            str(e.value)[:300]
    assert (reports.read_yaml("a: [1, x]\nd: 2026-01-01\n", "p", mapping=True)
            == {"a": [1, "x"], "d": dt.date(2026, 1, 1)})
    assert reports.read_yaml("", "p", mapping=True) == {}
    assert reports.read_yaml("*.csv", "-p glob", text_if_invalid=True) == "*.csv"  # as `-p NAME VALUE` reads a value
    assert reports.read_yaml("[&a [x], *a]", "-p", text_if_invalid=True) == "[&a [x], *a]"
    # a 1 GB list (given through the API, or by a YAML reader that expands aliases) is refused before it is written
    spec = reports.schema(tpl)
    huge = [("columns", ["x" * 1000] * 1_000_000), ("columns", yaml.safe_load(bomb())["columns"]),
            ("limits", {"a": ["y" * 600_000] * 2}), ("columns", ["x" * (1 << 30)])]
    for name, value in huge:
        hostile(f"a parameter {name} that is more than 1 MB as JSON")
        with pytest.raises(ValidationError, match=f"Parameter {name!r} is more than 1 MB .*pass a path"):
            reports.validate(spec, {name: value})
        with pytest.raises(ValidationError, match="more than 1 MB"):
            reports.run_report(tpl, {name: value}, ws=ws, log=False)
        with pytest.raises(ValidationError, match="more than 1 MB"):
            schedule.add("big", "0 6 * * *", str(tpl), {name: value}, ws=ws)
    cyc = []; cyc.append(cyc)
    hostile("a list that contains itself")
    with pytest.raises(ValidationError, match="more than 1 MB|nests"):
        reports.validate(spec, {"columns": cyc})
    hostile("parameters that are not a mapping")
    with pytest.raises(ValidationError, match="must be a mapping"):
        reports.validate(spec, ["columns"])
    assert not ws.reports_dir.exists() or not any(ws.reports_dir.iterdir())
    assert schedule.schedules(ws) == []
    (tmp_path / "bomb.yaml").write_text(bomb())
    for args in (["report", "run", str(tpl), "-f", "bomb.yaml", "--no-wandb"],
                 ["schedule", "add", "b", "--cron", "0 6 * * *", "--template", str(tpl), "-f", "bomb.yaml"]):
        hostile(f"fmops {args[0]} {args[1]} -f bomb.yaml")
        r = fmops(*args, cwd=tmp_path, timeout=300)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert "anchor" in r.stderr or "more than 1 MB" in r.stderr, r.stderr[-2000:]
    assert not ws.reports_dir.exists() or not any(ws.reports_dir.iterdir())
    assert schedule.schedules(ws) == []
    # a rerun reads its parameters from record.json: a damaged or swollen one is refused the same way
    d = ws.reports_dir / "t" / "20260101T000000000-abcd"; d.mkdir(parents=True)
    (d / "status.json").write_text('{"status": "finished"}')
    rec = {"template": str(tpl), "template_sha256": "0", "params": {}, "inputs": {}, "env": {}, "timeout": 60}
    for params, says in (({"columns": ["x" * 1000] * 2000}, "more than 1 MB"),
                         (["n"], "damaged \\(its parameters are not a mapping")):
        hostile(f"record.json params {str(params)[:40]}")
        (d / "record.json").write_text(json.dumps(rec | {"params": params}))
        with pytest.raises(ValidationError, match=says):
            reports.rerun(d, ws=ws, log=False)
    hostile("record.json without its inputs")
    (d / "record.json").write_text(json.dumps({k: v for k, v in rec.items() if k != "inputs"}))
    with pytest.raises(ValidationError, match="record.json .* is damaged"):
        reports.rerun(d, ws=ws, log=False)
    assert [p.name for p in (ws.reports_dir / "t").iterdir()] == [d.name]  # no rerun folder was made


@pytest.mark.hostile
def test_the_sanitizer_keeps_only_css_that_cannot_fetch(tmp_path, hostile):
    keep = {"text-align:left": "text-align:left", "color:#b00020;font-weight:bold": "color:#b00020;font-weight:bold",
            "border-left:4px solid #e65100;padding:4px 8px;margin:4px 0":
                "border-left:4px solid #e65100;padding:4px 8px;margin:4px 0",
            "background-color: rgb(1, 2, 3); font-family: 'DejaVu Sans', sans-serif":
                "background-color:rgb(1, 2, 3);font-family:'DejaVu Sans', sans-serif",
            "text-align: right;": "text-align:right",
            "white-space:pre-wrap;font-size:11px": "white-space:pre-wrap;font-size:11px"}
    for style, kept in keep.items():
        assert reports._inert(f'<div style="{style}">x</div>') == f'<div style="{html_attr(kept)}">x</div>'
    fetch = ["background-image:image-set('http://127.0.0.1:1/a.png' 1x)",
             "background-image:-webkit-image-set('http://127.0.0.1:1/a.png' 1x)",
             "background:image('http://127.0.0.1:1/a.png')", "background:cross-fade(url(http://x/a), red)",
             "background:url(http://127.0.0.1:1/a.png)", "background:u\\72 l(http://127.0.0.1:1/a.png)",
             "background:\\75\\72\\6c(http://127.0.0.1:1/a.png)", "list-style-image:url(http://x/a)",
             "cursor:url(http://x/a), auto", "border-image:url(http://x/a) 30", "mask-image:image-set('http://x/a' 1x)",
             "@import 'http://x/a.css'", "src:url(http://x/font.woff)", "width:expression(alert(1))",
             "behavior:url(x.htc)", "-moz-binding:url(http://x/a.xml#b)", "background:element(#x)",
             "background: /**/url(http://x/a)", "content:url(http://x/a)", "background:paint(x)",
             "color:red;background-image:image-set('http://127.0.0.1:1/a.png' 1x)", "position:fixed;top:0"]
    for style in fetch:
        hostile(f"style {style!r}")
        out = reports._inert(f'<div style="{style}">x</div>')
        assert "http" not in out and "(" not in out.replace("rgb(", "") and "binding" not in out, (style, out)
        assert "import" not in out and "position" not in out and "\\" not in out, (style, out)
    assert reports._inert("<div style=\"color:red;background-image:image-set('http://x/a' 1x)\">x</div>") \
        == '<div style="color:red">x</div>'  # what is safe stays
    for attr in ("mask=\"image-set('http://127.0.0.1:1/a.png' 1x)\"", "fill=\"u\\72 l(http://x/a)\"",
                 "cursor=\"image-set('http://x/a' 1x)\"", "filter=\"url(http://x/f.svg#f)\""):
        hostile(f"svg attribute {attr}")
        out = reports._inert(f"<svg><rect {attr} width='5'/></svg>")
        assert "http" not in out and "\\" not in out and "width" in out, (attr, out)


def html_attr(v: str) -> str:
    import html
    return html.escape(v)


@pytest.mark.slow
@pytest.mark.hostile
def test_a_saved_report_html_makes_no_request_in_chromium(tmp_path, hostile):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from lab import CHROMIUM, CHROMIUM_ARGS
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright
    hits, got = [], threading.Event()
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path); got.set()
            self.send_response(404); self.end_headers()
        def log_message(self, *a): pass
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    payloads = [f"<div style=\"background-image:image-set('{base}/leak-imageset.png' 1x);height:20px\">a</div>",
                f"<div style=\"background-image:-webkit-image-set('{base}/leak-webkit.png' 1x);height:20px\">b</div>",
                f"<div style=\"background-image:u\\72 l({base}/leak-escape.png);height:20px\">c</div>",
                f"<div style=\"list-style-image:url({base}/leak-list.png)\"><li>d</li></div>",
                f"<svg width='20' height='20'><rect width='20' height='20'"
                f" mask=\"image-set('{base}/leak-mask.png' 1x)\""
                f" fill=\"u\\72 l({base}/leak-fill.svg#p)\"/></svg>",
                f"<table background='{base}/leak-table.png'><tr><td>e</td></tr></table>"]
    hostile("CSS and attributes that fetch, in the HTML output of a report notebook")
    outs = [nbformat.v4.new_output("display_data", data={"text/html": p}) for p in payloads]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=outs)])
    page = tmp_path / "report.html"
    page.write_text(reports.report_html(nb, "t"))
    control = tmp_path / "control.html"  # the same payloads unsanitized, and one more: the harness sees a fetch
    control.write_text("<!doctype html><html><body>" + "".join(payloads)
                       + f"<div style=\"background-image:url({base}/control.png);height:20px\">z</div></body></html>")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                pg = browser.new_page()
                requested = []
                pg.on("request", lambda r: requested.append(r.url))
                pg.goto(page.as_uri(), wait_until="networkidle", timeout=120_000)
                from_page, seen = list(requested), list(hits)
                pg.goto(control.as_uri(), wait_until="networkidle", timeout=120_000)
                assert got.wait(120), "the harness saw no request from the control page"
            finally:
                browser.close()
    finally:
        srv.shutdown(); srv.server_close()
    assert seen == [] and from_page == [page.as_uri()], (seen, from_page)  # the report fetched nothing
    assert "/control.png" in hits and any(h.startswith("/leak-") for h in hits)  # the unsanitized page does fetch


@pytest.mark.slow
@pytest.mark.hostile
def test_a_damaged_schedule_row_reads_damaged_and_never_stops_the_others(tmp_path, hostile):
    tpl = tick(tmp_path)
    ws = Workspace.open()
    schedule.add("good", "* * * * *", str(tpl), {"n": 3}, ws=ws)
    rows = {"badjson": "{not json", "alist": "[1, 2]", "nullp": "null", "huge": json.dumps({"n": "x" * 2_000_000}),
            "../evil": "{}", "evil\n* * * * * touch /tmp/pwned": "{}"}
    with ws.transaction() as con:
        for name, params in rows.items():
            hostile(f"a schedules row named {name!r} with params {params[:30]!r}")
            con.execute("INSERT INTO schedules VALUES (?,?,?,?,?,?,1)",
                        (name, "* * * * *", str(tpl), params, "2026-01-01T00:00:00", "old"))
    ss = {s.name: s for s in schedule.schedules(ws)}
    assert set(ss) == {"good", *rows}
    for name in rows:
        s = ss[name]
        assert s.next_due() is None and "damaged" in s.problem() and "fmops schedule rm" in s.problem(), s.problem()
        assert "never" in repr(s) and len(repr(s)) < 2000
    assert "parameters cannot be read" in ss["badjson"].problem() and "not a mapping" in ss["alist"].problem()
    assert "name" in ss["../evil"].problem() and ss["good"].problem() == ""
    out = fmops("schedule", "ls", cwd=tmp_path)
    assert out.returncode == 0 and "Traceback" not in out.stderr and "good" in out.stdout, out.stderr[-2000:]
    assert out.stdout.count("damaged") >= len(rows)
    js = {s["name"]: s for s in json.loads(fmops("schedule", "ls", "--json", cwd=tmp_path).stdout)}
    assert "damaged" in js["badjson"]["problem"] and js["good"]["next_due"]
    cron = fmops("schedule", "crontab", cwd=tmp_path)
    assert cron.returncode == 0 and "Traceback" not in cron.stderr
    for line in cron.stdout.splitlines():
        assert line.startswith("#") or "--only good " in line, line  # the damaged ones are comments only
    assert "# 'badjson'" in cron.stdout or "# badjson:" in cron.stdout
    r = fmops("schedule", "run-due", cwd=tmp_path, timeout=600)
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr[-3000:])
    lines = r.stdout.splitlines()
    assert any("good: finished" in l for l in lines), r.stdout
    for name in ("badjson", "alist", "huge"):
        assert any(f"{name}: skipped" in l and "damaged" in l for l in lines), r.stdout
    h = schedule.history(ws)
    assert [x["schedule"] for x in h] == ["good"] and h[0]["status"] == "finished"
    assert not Path("/tmp/pwned").exists() and not (ws.root / "evil").exists()
    assert schedule.remove("badjson", ws).name == "badjson"  # a damaged one can be removed
    assert "badjson" not in {s.name for s in schedule.schedules(ws)}


@pytest.mark.hostile
def test_a_threshold_no_value_can_meet_or_a_flag_used_as_one_is_refused_when_the_policy_is_read(hostile):
    "`cost.kwh < True` ordered by 1, `< 1e999` compared with inf: both were taken and silently always true."
    ws = Workspace.open()
    for when, says in (("cost.kwh < True", "orders by True (as if it were 1)"),
                       ("metrics.accuracy >= False", "orders by False"),
                       ("cost.kwh < 1e999", "a number too large for a float (inf)"),
                       ("-1e999 < drift.share", "a number too large for a float")):
        hostile(f"a policy `when: {when}`")
        with pytest.raises(monitor.PolicyError, match=re.escape(says)):
            monitor.parse_expr(when)
        ws.config_path.write_text(f'[monitor]\nsinks = ["log"]\n[[monitor.policies]]\nname = "p"\nwhen = "{when}"\n')
        ws.reload()
        with pytest.raises(monitor.PolicyError, match=re.escape(says)):
            monitor.policies(ws)
    for fine in ("cost.kwh < 1e300", "alias == 'production' and metrics.accuracy < 0.8", "flag == True"):
        monitor.parse_expr(fine)  # finite thresholds, and a flag compared for equality, still read
