"""Hostile inputs to monitoring policies and their alerts: what a teammate's policy file or a report's recorded
values can make `fmops alerts`, the log and a terminal show."""
import json
import os
import subprocess
import sys

import pytest

from fmops_nb import monitor
from fmops_nb.core import Workspace


def fmops(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "fmops_nb.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env=dict(os.environ))


ESCAPES = ["\x1b]0;owned\x07", "\x1b[2J\x1b[H", "\r\x1b[Kall clear", "\x9b31m", "\x08\x08\x08ok", "\x00"]


@pytest.mark.hostile
@pytest.mark.parametrize("esc", ESCAPES)
def test_terminal_escapes_in_a_policy_message_or_a_recorded_value_do_not_reach_the_terminal(esc, tmp_path, hostile):
    hostile(f"a policy message and a recorded value holding {esc!r}")
    ws = Workspace.open()
    ws.config_path.write_text('[monitor]\nsinks = ["log"]\n')
    ws.reload()
    import yaml
    pol = tmp_path / "policies.yaml"
    pol.write_text(yaml.safe_dump({"policies": [{"name": "said", "when": "drift > 0.1", "message": f"drift {esc}!"},
                                                {"name": "quoted", "when": "region == 'eu'"}]}))  # shows the value
    monitor.check({"drift": 0.5, "region": f"eu{esc}"}, "t", ws, path=pol, subject=f"reports/{esc}", display=False)
    monitor.check({"drift": 0.5, "region": "eu"}, "t", ws, path=pol, display=False)
    shown = [a["message"] + a["subject"] for a in monitor.alerts(ws)]
    assert len(shown) == 2 and "drift" in shown[-1]
    for s in shown:
        assert not any(c in s for c in "\x1b\x9b\x07\x08\x00\r"), repr(s)
    r = fmops("alerts", "ls", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not any(c in r.stdout for c in "\x1b\x9b\x07\x08\x00\r") and "said" in r.stdout, repr(r.stdout)
    log = (ws.root / "logs" / "alerts.jsonl").read_text()
    assert not any(c in log for c in "\x1b\x9b\x07\x08\x00\r")


INTERRUPTED = r"""
import json, signal, sys
# Ctrl-C raises KeyboardInterrupt, as in a notebook's kernel. A process started in the background by a shell without
# job control (`cmd &` in a script, as CI may be) inherits SIGINT ignored, and Python then installs no handler for it.
signal.signal(signal.SIGINT, signal.default_int_handler)
from fmops_nb import schedule
from fmops_nb.core import Workspace
ws = Workspace.open()
try:
    schedule.run_due(ws, log=False)
    print('not interrupted', flush=True)
except KeyboardInterrupt:
    print('interrupted', flush=True)
print(json.dumps([(r['status'], r['error']) for r in schedule.history(ws)]), flush=True)
sys.stdin.read()  # the process lives on, as a notebook kernel does after Ctrl-C, until the test is done
"""


@pytest.mark.hostile
def test_a_scheduled_run_interrupted_in_a_process_that_lives_on_does_not_read_running(tmp_path, hostile):
    "Ctrl-C in a notebook that ran `run_due`: the run's row says it was interrupted, not `running` for ever."
    hostile("a schedule's run interrupted (SIGINT) in the middle of its report, in a process that keeps running")
    import signal
    import time

    import nbformat
    from fmops_nb import schedule
    started, release = tmp_path / "started", tmp_path / "release"
    p = nbformat.v4.new_code_cell("n: int = 1")
    p.metadata["tags"] = ["parameters"]
    wait = (f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\nt = time.monotonic()\n"
            f"while not pathlib.Path({str(release)!r}).exists() and time.monotonic() - t < 120: time.sleep(0.05)")
    nb = nbformat.v4.new_notebook(cells=[p, nbformat.v4.new_code_cell(wait)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(tmp_path / "slow.ipynb"))
    ws = Workspace.open()
    schedule.add("slow", "* * * * *", str(tmp_path / "slow.ipynb"), ws=ws)
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    def stderr():
        "What the process said on stderr: read once it is gone (it waits on its stdin, so its stderr never ends)."
        proc.kill()
        return proc.stderr.read()

    try:
        deadline = time.monotonic() + 120
        while not started.exists():  # the report's cell is running
            assert proc.poll() is None, stderr()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        said = proc.stdout.readline().strip()
        assert said == "interrupted", (said, stderr())
        rows = json.loads(proc.stdout.readline())
        assert len(rows) == 1 and rows[0][0] != "running", rows  # while the process lives on
        assert rows[0][0] in ("failed", "killed") and "interrupted" in (rows[0][1] or ""), rows
    finally:
        release.touch()
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.hostile
def test_a_policy_naming_a_sink_that_does_not_exist_is_refused_when_read(tmp_path, hostile):
    "A typo in a critical policy's `sinks:` must not leave its alerts recorded but delivered nowhere."
    from fmops_nb.errors import PolicyError
    hostile("a critical policy with `sinks: [webhok]` (a typo)")
    ws = Workspace.open()
    pol = tmp_path / "policies.yaml"
    pol.write_text("policies:\n- name: drop\n  when: accuracy < 0.8\n  severity: critical\n  sinks: [log, webhok]\n")
    with pytest.raises(PolicyError, match=r"(?s)policy 'drop'.*webhok.*webhook"):
        monitor.check({"accuracy": 0.5}, "t", ws, path=pol, display=False)
    assert monitor.alerts(ws) == []  # nothing fired half-delivered
    pol.write_text("policies:\n- name: drop\n  when: accuracy < 0.8\n  severity: critical\n  sinks: [log]\n")
    assert [f.state for f in monitor.check({"accuracy": 0.5}, "t", ws, path=pol, display=False).firings] == ["fired"]


KILLED_FIRING = r"""
import os, signal, sys
from fmops_nb import monitor
from fmops_nb.core import Workspace
def die(*a, **k): os.kill(os.getpid(), signal.SIGKILL)  # the power goes out as the policy fires, before its alert
monitor.raise_alert = die
monitor.check({'drift': 0.5}, 'drift_report', Workspace.open(), path=sys.argv[1], display=False)
"""


@pytest.mark.hostile
def test_a_policy_firing_killed_before_its_alert_is_not_silently_counted_as_fired(tmp_path, hostile):
    "A report killed as its policy fired: the next report must not take the firing as done (`holding`) in silence."
    hostile("a scheduled report killed between its policy's streak reaching `for` and the policy's alert")
    ws = Workspace.open()
    ws.config_path.write_text('[monitor]\nsinks = ["log"]\n')
    ws.reload()
    pol = tmp_path / "policies.yaml"
    pol.write_text("policies:\n- name: drifted\n  when: drift > 0.1\n  severity: critical\n")
    p = subprocess.run([sys.executable, "-c", KILLED_FIRING, str(pol)], capture_output=True, text=True, timeout=120)
    assert p.returncode == -9, p.stderr
    assert monitor.alerts(ws) == []
    res = monitor.check({"drift": 0.6}, "drift_report", ws, path=pol, display=False)
    al = monitor.alerts(ws)
    assert len(al) == 1 and res.firings[0].alert_id == al[0]["id"], (res, al)
    assert al[0]["severity"] == "critical" and "drift > 0.1" in al[0]["message"]
    again = monitor.check({"drift": 0.7}, "drift_report", ws, path=pol, display=False)  # and only once
    assert again.firings[0].state == "holding" and len(monitor.alerts(ws)) == 1
