"""Reports, schedules and policies against hostile input: concurrent runs, inert reports, fail-closed gates, clear
errors. Each test names the hostile inputs it feeds (`hostile(...)`), asserts the error a user sees and that nothing
stored changed."""
import base64, datetime as dt, hashlib, json, math, os, shlex, socket, subprocess, sys, tempfile, threading, time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from fmops_nb import monitor, reports, schedule
from fmops_nb.core import Workspace, atomic_write
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
def test_a_template_file_name_that_is_not_a_safe_name_is_refused(tmp_path, hostile):
    for name in (f"{P}.ipynb", "...ipynb", "a b.ipynb"):  # '...ipynb' has the stem '..': reports/../ is the workspace
        hostile(f"template file named {name!r}")
        tpl = template(tmp_path / name, "n: int = 1", "print(n)")
        with pytest.raises(ValidationError, match="template name .* is not allowed"):
            reports.run_report(tpl, log=False)
    assert not any(Workspace.open().reports_dir.iterdir())


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
                       ("[!!set {a: null}]", "item [0] is {'a'}"), ("[.nan]", "item [0] is nan")):
        hostile(f"-p columns {value}")
        r = fmops("report", "run", str(tpl), "-p", "columns", value, "--no-wandb", cwd=tmp_path)
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = fmops("schedule", "add", "s", "--cron", "0 6 * * *", "--template", str(tpl), "-p", "columns", "[2026-01-01]",
              cwd=tmp_path)
    assert r.returncode == 1 and "item [0] is datetime.date" in r.stderr
    assert not any(Workspace.open().reports_dir.iterdir()) and schedule.schedules() == []


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


def set_metrics(ws, vid, metrics):
    "Store `metrics` on a version the way an older fmops (or another tool) may have: NaN, a string."
    with ws.transaction() as con:
        meta = json.loads(con.execute("SELECT meta FROM versions WHERE id=?", (vid,)).fetchone()["meta"])
        meta["metrics"] = metrics
        con.execute("UPDATE versions SET meta=? WHERE id=?", (json.dumps(meta), vid))


def alias_rows(ws):
    with ws.connect() as con:
        aliases = [tuple(r) for r in con.execute("SELECT * FROM aliases")]
        return aliases, con.execute("SELECT count(*) FROM alias_history").fetchone()[0]


@pytest.mark.hostile
def test_a_promotion_gate_that_cannot_be_evaluated_blocks(tmp_path, hostile):
    import torch
    from fmops_nb.monitor import PromotionBlocked, promotion_gate
    from fmops_nb.registry import Registry, audit_log
    ws = Workspace.open()
    ws.config_path.write_text(GATE); ws.reload()
    reg = Registry(ws, log=False)
    w = lambda k: {"w": torch.full((2,), float(k))}
    # a first promotion: there is no `current`, so the comparison does not apply (documented); the alert gate notes f1
    reg.register("m", w(1))
    assert reg.promote("m:v1", "production").aliases == ["production"]
    assert [a["policy"] for a in monitor.alerts(ws)] == ["floor"]
    assert "has no metric 'f1'" in monitor.alerts(ws)[0]["message"]
    before = alias_rows(ws)
    cases = [({}, "the candidate m:v2 has no metric 'accuracy'", "--metric accuracy=VALUE"),
             ({"accuracy": {"value": float("nan"), "direction": "higher"}},
              "metric 'accuracy' is nan, not a usable number", "usable value"),
             ({"accuracy": {"value": "high", "direction": "higher"}}, "is str 'high', not comparable with",
              "--metric accuracy=VALUE"),
             ({"accuracy": {"value": float("inf"), "direction": "higher"}}, "metric 'accuracy' is inf",
              "--metric accuracy=VALUE")]
    set_metrics(ws, "m:v1", {"accuracy": {"value": 0.9, "direction": "higher"}})  # a current accuracy to compare with
    for i, (metrics, why, fix) in enumerate(cases):
        hostile(f"candidate metrics {metrics!r}")
        v = reg.register("m", w(i + 2), parent="m:v1")
        set_metrics(ws, v.id, metrics)
        with pytest.raises(PromotionBlocked) as e:
            reg.promote(v.id, "production")
        msg = str(e.value)
        assert "Policy 'no-regression' blocks promoting" in msg and "cannot be evaluated" in msg, msg
        assert why.replace("m:v2", v.id) in msg, msg
        assert fix in msg and "--force" in msg and "audited" in msg
        assert alias_rows(ws) == before  # the alias did not move
        last = audit_log(ws, "m:production")[0]
        assert last["action"] == "promote-blocked" and last["after"]["version"] == v.id
        assert "cannot be evaluated" in last["after"]["why"]
    # a current version whose metric is missing blocks too: nothing to compare with is not "no regression"
    hostile("the current version without the gate's metric")
    set_metrics(ws, "m:v1", {})
    good = reg.register("m", w(9), parent="m:v1", metrics={"accuracy": 0.99, "f1": 0.9})
    with pytest.raises(PromotionBlocked, match=r"the current m:production \(m:v1\) has no metric 'accuracy'"):
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
        assert con.execute("SELECT version FROM schema_versions WHERE component='monitor'").fetchone()[0] == 2


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
    stop, seen, errors, start = threading.Event(), set(), [], reports._proc_start(os.getpid())
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
    check_inert(runs["diff"], [f"{P} first {M}", f"{M} second {P}", f"model.{P}", (f"(most: {P}", f"(most: {M}")])
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
                        reports._proc_start(os.getpid())))
    assert [r["status"] for r in schedule.history(ws)] == ["running", "killed"]
