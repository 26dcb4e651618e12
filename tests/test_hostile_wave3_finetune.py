"""Hostile fine-tune and schedule input, third round: a user script that reports no evaluation, a script whose child
leaves the process group (`setsid`), a huge or secret `script_args` value in an error message, and a schedule whose
template was deleted, overwritten or replaced by a link after it was added."""
import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import nbformat
import pytest

from fmops_nb import schedule
from fmops_nb.core import Workspace, pid_alive, process_start
from fmops_nb.errors import PromotionBlocked, ValidationError
from fmops_nb.finetune import FinetuneSpec, launch
from fmops_nb.registry import Registry

pytestmark = pytest.mark.hostile


def until(check, what: str, limit: float = 120):
    "Wait for `check()` to hold (an event, polled); fail naming `what` if it has not after `limit` seconds."
    end = time.time() + limit
    while not (v := check()):
        if time.time() > end: pytest.fail(f"waited {limit} s for {what}")
        time.sleep(0.05)
    return v


def test_a_script_that_reports_no_evaluation_registers_a_version_no_gate_promotes(tmp_path, hostile):
    "No report_eval: the version is registered without metrics, tagged, the run says why; no gate lets it through."
    import torch
    ws = Workspace.open()
    reg = Registry(ws, log=False)
    prod = reg.register("scripted", {"w": torch.zeros(2)}, metrics={"accuracy": 0.5})
    reg.promote(prod.id, to="production")
    script = tmp_path / "train.py"
    script.write_text("from fmops_nb.finetune import report, save_model\nimport torch\n"
                      "report(step=1, loss=1.0)\nsave_model({'w': torch.ones(2)})\n")  # no report_eval
    hostile("a user script that saves a model and reports no evaluation, with promote_if_better")
    run = launch(FinetuneSpec(base="", recipe="script", script=str(script), max_steps=1, model="scripted",
                              promote_if_better="accuracy"), ws=ws)
    assert run.wait(120) == "finished", run.tail(30)
    v = reg.get(run.version)
    assert v.metrics == {} and "unevaluated" in v.tags and "not evaluated" in v.meta["description"]
    reason = run.info["reason"]
    assert "reported no evaluation" in reason and "report_eval(" in reason and v.id in reason, reason
    assert isinstance(run.info["promoted"], str) and run.info["promoted"].startswith("not promoted"), run.info
    assert reg.get("scripted:production").id == prod.id  # promote_if_better did not move production
    # an `on: promote` policy that reads a metric blocks the metric-less version
    (tmp_path / "policies.yaml").write_text(
        "policies:\n  - {name: no-worse, on: promote, when: candidate.accuracy < current.accuracy, action: block}\n")
    ws.config_path.write_text('[monitor]\nsinks = ["log"]\npolicy_file = "../policies.yaml"\n'); ws.reload()
    with pytest.raises(PromotionBlocked, match="has no metric 'accuracy'"):
        Registry(ws, log=False).promote(v.id, to="production")
    assert reg.get("scripted:production").id == prod.id


CHILD = textwrap.dedent("""
    import os, sys, time
    os.setsid()  # leaves the script's process group, as a daemon does
    out = sys.argv[1]
    with open(out + '.tmp', 'w') as f: f.write(str(os.getpid()))
    os.rename(out + '.tmp', out)
    while True: time.sleep(1)
""")

PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from fmops_nb.finetune import report, run_dir, stop_requested
    stop_requested()  # SIGTERM becomes a flag from here on
    subprocess.Popen([sys.executable, sys.argv[1], str(run_dir() / 'child.pid')])
    step = 0
    while not stop_requested():
        step += 1; report(step=step, loss=1.0); time.sleep(0.2)
""")


def test_stop_ends_a_child_of_the_script_that_left_its_process_group(tmp_path, hostile):
    "A script's child that calls setsid() is not in the script's group: stop still ends it."
    (tmp_path / "child.py").write_text(CHILD)
    (tmp_path / "train.py").write_text(PARENT)
    hostile("a user script whose child process calls os.setsid() and never exits")
    run = launch(FinetuneSpec(base="", recipe="script", script=str(tmp_path / "train.py"),
                              script_args=[str(tmp_path / "child.py")], max_steps=1_000_000, model="daemon"))
    pid_file = run.dir / "child.pid"
    until(lambda: pid_file.exists() or run.status in ("failed", "finished", "killed"), "the child's pid file")
    assert pid_file.exists(), run.tail(30)
    pid = int(pid_file.read_text()); start = process_start(pid)
    try:
        assert os.getpgid(pid) == pid  # it really left the script's group
        assert run.stop(timeout=300) == "stopped", run.tail(30)
        until(lambda: not pid_alive(pid, start), "the setsid child to end after the stop", limit=60)
    finally:
        if pid_alive(pid, start): os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("value,kind", [
    (["--hidden", {"api_token": "sk-live-" + "x" * 40}], "dict"),
    (["--hidden", 64, ["a"] * 100_000], "list"),
    ("--password=hunter2-" + "y" * 100_000, "str"),
])
def test_a_bad_script_args_value_is_shown_short_and_masked(tmp_path, value, kind, hostile):
    "The message names the expected shape and shows a short prefix of the bad value, never a secret or all of it."
    hostile(f"script_args holding a {kind} ({len(repr(value)):,} characters)")
    (tmp_path / "train.py").write_text("print('hi')\n")
    ws = Workspace.open()
    with pytest.raises(ValidationError) as e:
        launch(FinetuneSpec(base="", recipe="script", script=str(tmp_path / "train.py"), script_args=value), ws=ws)
    msg = str(e.value)
    assert msg.startswith("script_args must be a list") and "[--hidden, 64]" in msg, msg[:300]
    assert len(msg) < 400, msg[:500]
    assert "sk-live" not in msg and "hunter2" not in msg and "xxxxxxxx" not in msg, msg[:300]
    assert not list(ws.runs_dir.iterdir())


def tick(folder):
    p = nbformat.v4.new_code_cell("n: int = 1")
    p.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[p, nbformat.v4.new_code_cell("from fmops_nb.reports import record\n"
                                                                        "record('twice', n * 2)")])
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, folder / "tick.ipynb")
    return folder / "tick.ipynb"


def test_a_schedule_whose_template_was_deleted_or_replaced_reports_it(tmp_path, hostile):
    "Deleted, not a notebook, a link out of the template folders: `problem()`, `ls` and a due run all say so."
    ws = Workspace.open()
    by_path = tick(tmp_path / "mine")
    named = tick(tmp_path / "templates")  # ./templates: found by name
    schedule.add("bypath", "0 6 * * *", str(by_path), ws=ws)
    schedule.add("named", "0 6 * * *", "tick", ws=ws)
    assert [s.problem() for s in schedule.schedules(ws)] == ["", ""]
    outside = tmp_path / "elsewhere" / "evil.ipynb"
    outside.parent.mkdir()
    outside.write_bytes(named.read_bytes())  # a valid notebook, but outside every template folder
    cases = [("deleted", lambda p: p.unlink(), "its template .tick. is gone"),
             ("not a notebook", lambda p: p.write_text("#!/bin/sh\nrm -rf ~\n"), "is not a Jupyter notebook"),
             ("a FIFO", lambda p: (p.unlink(), os.mkfifo(p)), r"is not a file"),  # never opened: no hang
             ("a link out of the template folders", lambda p: (p.unlink(), p.symlink_to(outside)),
              "is a link to .*evil.ipynb, outside the template folders")]
    for what, do, says in cases:
        hostile(f"a schedule's template {what} after `schedule add`")
        do(named)
        s = schedule.get("named", ws)
        assert re.search(says, s.problem()), (what, s.problem())
        assert "fmops schedule add named --replace" in s.problem()
        assert schedule.get("bypath", ws).problem() == ""  # the other schedule is untouched
        assert "\n  ! its template" in repr(s)  # as `fmops schedule ls` prints it
        if named.is_symlink() or named.exists(): named.unlink()
        tick(tmp_path / "templates")
    # a due run of a broken template fails with the sentence, and runs nothing through the link
    named.unlink(); named.symlink_to(outside)
    out = subprocess.run([sys.executable, "-m", "fmops_nb.cli", "schedule", "ls", "--json"], capture_output=True,
                         text=True, cwd=tmp_path)
    js = {x["name"]: x for x in json.loads(out.stdout)}
    assert "is a link to" in js["named"]["problem"] and js["bypath"]["problem"] == "", out.stdout + out.stderr
    by_path.unlink(); by_path.symlink_to(outside)  # a path template replaced by a link that leads out
    assert "is a link to" in schedule.get("bypath", ws).problem()
    done = {r["schedule"]: r for r in schedule.run_due(ws, now=dt.datetime.now().replace(hour=6, minute=1) +
                                                       dt.timedelta(days=1), only=None, log=False)}
    for name in ("named", "bypath"):
        assert done[name]["status"] == "failed" and "is a link to" in done[name]["error"], done
        assert "Traceback" not in done[name]["error"]
    assert not (ws.reports_dir / "evil").exists() and not (ws.reports_dir / "tick").exists()
    assert {r["status"] for r in schedule.history(ws)} == {"failed"}
