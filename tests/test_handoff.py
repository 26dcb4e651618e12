"""`fmops report run` hands its run to a running `fmops schedule serve` of the same workspace and environment (issue 13,
target 4): the run happens in serve's warm kernel and the command shows it as its own; a serve that cannot run it the
same way, or is busy, leaves it to the command; Ctrl-C, a stopped serve and a killed serve each end the run `killed`
and say so. Real processes throughout (a serve, commands, kernels); every wait is for an event, with a generous cap."""
import json, os, queue, re, shutil, signal, subprocess, sys, tempfile, threading, time
from pathlib import Path

import nbformat
import pytest

from fmops_nb.handoff import socket_path
from fmops_nb.core import Workspace
from fmops_nb.reports import ReportRun
from fmops_nb.tracking import read_run

pytestmark = pytest.mark.slow  # a serve, kernels and commands: the full tier only

# waits until the test lets it go on (`gate` exists), after saying it is running (`started`)
GATE = """import os, time, pathlib
from fmops_nb.reports import record
if started: pathlib.Path(started).write_text(str(os.getpid()))
t = time.monotonic()
while gate and not os.path.exists(gate) and time.monotonic() - t < 300: time.sleep(0.02)
record('twice', 2 * n)
record('day', [type(day).__name__, str(day)])
record('cwd', os.getcwd())
record('wandb_dir', os.environ.get('WANDB_DIR'))"""

CAP = 120  # seconds: the most any event is waited for (a loaded machine is slow, never this slow)


def gate_template(folder: Path) -> Path:
    p = nbformat.v4.new_code_cell("from datetime import date\nn: int = 1\nday: date = None\ngate: str = ''\nstarted: str = ''")
    p.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[p, nbformat.v4.new_code_cell(GATE)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(folder / "gate.ipynb"))
    return folder / "gate.ipynb"


class Serve:
    "`fmops schedule serve` in a process of its own; its log lines are collected as they come."
    def __init__(self, cwd: Path, *args: str, env: dict | None = None):
        self.p = subprocess.Popen([sys.executable, "-m", "fmops_nb.cli", "schedule", "serve", "--interval", "60", *args],
                                  cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env=env or dict(os.environ))
        self.lines, self.q = [], queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n")); self.q.put(line)
        self.q.put(None)

    def wait_for(self, pattern: str) -> str:
        "The first log line (from now on, or already seen) matching `pattern`."
        for line in self.lines:
            if re.search(pattern, line): return line
        end = time.monotonic() + CAP
        while time.monotonic() < end:
            try: line = self.q.get(timeout=1)
            except queue.Empty: continue
            if line is None: break
            if re.search(pattern, line): return line
        raise AssertionError(f"serve never said {pattern!r}; its log:\n" + "\n".join(self.lines))

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(timeout=CAP)


@pytest.fixture
def serve(tmp_path):
    started = []
    def start(*args, env=None) -> Serve:
        s = Serve(tmp_path, *args, env=env)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


def report_run(cwd: Path, *args: str, env: dict | None = None, interruptible: bool = False) -> subprocess.Popen:
    "`fmops report run ARGS` started; `interruptible`: Ctrl-C (SIGINT) raises in it, as in a terminal."
    pre = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
           "from fmops_nb.cli import main; sys.exit(main())")
    cmd = [sys.executable, "-c", pre] if interruptible else [sys.executable, "-m", "fmops_nb.cli"]
    return subprocess.Popen([*cmd, "report", "run", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or dict(os.environ))


def finished(p: subprocess.Popen) -> tuple[int, str, str]:
    out, err = p.communicate(timeout=CAP)
    return p.returncode, out, err


def wait_file(path: Path) -> str:
    end = time.monotonic() + CAP
    while time.monotonic() < end:
        if path.exists() and (text := path.read_text()): return text
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def run_of(out: str) -> ReportRun:
    "The run a command printed: its JSON (`--json`), or the folder its progress line named."
    if out.lstrip().startswith("{"): return ReportRun.load(json.loads(out)["dir"])
    return ReportRun.load(re.search(r"Running gate into (\S+) \.\.\.", out).group(1))


def ran_in(run: ReportRun) -> int:
    "The process that ran it (wrote its status)."
    return json.loads((run.dir / "status.json").read_text())["pid"]


def held_in_serve(tmp_path: Path, serve, interruptible: bool = False):
    "A serve, and a command whose run serve took and holds at the gate: (template, serve, command, the run's kernel)."
    tpl = gate_template(tmp_path)
    s = serve("--no-wandb")
    s.wait_for("is handed to it")
    started = tmp_path / "started"
    p = report_run(tmp_path, str(tpl), "--no-wandb", "-p", "gate", str(tmp_path / "never"), "-p", "started",
                   str(started), interruptible=interruptible)
    return tpl, s, p, int(wait_file(started))


def test_a_serve_runs_the_command_s_report_in_its_warm_kernel_and_the_command_shows_it(tmp_path, serve):
    tpl = gate_template(tmp_path)
    s = serve()
    s.wait_for("is handed to it")
    code, out, err = finished(report_run(tmp_path, str(tpl), "-p", "n", "21", "-p", "day", "2026-11-01"))
    assert code == 0, err
    assert out.startswith("Handed to fmops schedule serve (pid %d)" % s.p.pid), out
    assert re.search(r"Report gate/\S+: finished, 4 values", out) and "W&B run" in out, out
    run = run_of(out)
    # the run is the command's: its parameters (papermill injects a date as ISO text), its working directory
    assert run.values == {"twice": 42, "day": ["str", "2026-11-01"], "cwd": str(tmp_path),
                          "wandb_dir": os.environ["WANDB_DIR"]}
    # and serve ran it: its process wrote the status, in the kernel it had started before the command came
    status = json.loads((run.dir / "status.json").read_text())
    assert status["pid"] == s.p.pid and run.record["kernel"]["warm"] is True
    assert read_run(run.wandb_run).summary["twice"] == 42  # its W&B run, logged by serve, read back
    s.wait_for(r"report run from pid \d+: gate/\S+: finished")

    # the command's --cwd is the kernel's folder (serve's kernel waits in serve's: a new one starts there)
    (tmp_path / "data").mkdir()
    code, out, err = finished(report_run(tmp_path, str(tpl), "--cwd", "data", "--no-wandb", "--json"))
    assert code == 0 and ran_in(run_of(out)) == s.p.pid, (out, err)  # --json prints the run alone
    assert run_of(out).values["cwd"] == str(tmp_path / "data")
    # and its environment is still the command's: the W&B folders serve set for its own logging did not reach it
    assert run_of(out).values["wandb_dir"] == os.environ["WANDB_DIR"] != str(Workspace.open().root)

    # a run refused in serve fails the command as it fails when it runs the report itself
    code, out, err = finished(report_run(tmp_path, str(tpl), "-p", "n", "oops", "--no-wandb"))
    here = finished(report_run(tmp_path, str(tpl), "-p", "n", "oops", "--no-wandb", "--no-serve"))
    assert "Handed to" in out and (code, err) == (here[0], here[2]) == (1, here[2]), (out, err, here)
    assert "Parameter 'n' must be an int" in err and "Traceback" not in err, err


def test_a_serve_that_would_run_it_differently_or_is_busy_leaves_it_to_the_command(tmp_path, serve, hostile):
    tpl = gate_template(tmp_path)
    s = serve("--no-wandb")
    s.wait_for("is handed to it")

    hostile("the command's environment has a variable serve's has not (a setting the template could read)")
    code, out, err = finished(report_run(tmp_path, str(tpl), "--no-wandb",
                                         env={**os.environ, "FMOPS_TEST_SETTING": "x"}))
    assert code == 0, err
    assert "did not take the run: its environment differs in FMOPS_TEST_SETTING" in out.splitlines()[0], out
    assert run_of(out).status == "finished" and ran_in(run_of(out)) != s.p.pid

    code, out, err = finished(report_run(tmp_path, str(tpl), "--no-wandb", "--no-serve"))
    assert code == 0 and "fmops schedule serve" not in out and ran_in(run_of(out)) != s.p.pid, (out, err)

    # busy: while one handed-over run waits at its gate, a second command runs its report itself, at once
    gate, started = tmp_path / "gate-open", tmp_path / "started"
    first = report_run(tmp_path, str(tpl), "--no-wandb", "-p", "gate", str(gate), "-p", "started", str(started))
    wait_file(started)
    code, out, err = finished(report_run(tmp_path, str(tpl), "--no-wandb"))
    assert code == 0 and "did not take the run: it is running a report" in out, (out, err)
    assert ran_in(run_of(out)) != s.p.pid
    gate.write_text("go")
    code, out, err = finished(first)
    assert code == 0 and out.startswith("Handed to") and "finished" in out, (out, err)


def test_ctrl_c_in_the_command_kills_the_run_in_serve_which_goes_on(tmp_path, serve):
    tpl, s, p, kernel = held_in_serve(tmp_path, serve, interruptible=True)
    p.send_signal(signal.SIGINT)
    code, out, err = finished(p)
    assert code == 130 and "interrupted" in err and "Traceback" not in err, (out, err)
    run = run_of(out)
    assert (run.status, run.error) == ("killed", "interrupted (Ctrl-C)")
    assert not Path(f"/proc/{kernel}").exists()  # its kernel was killed (and reaped)
    s.wait_for(r"report run from pid \d+: killed, interrupted \(Ctrl-C\)")
    # serve goes on: the next command's run is handed over and finishes, in a kernel started ahead again
    code, out, err = finished(report_run(tmp_path, str(tpl), "--no-wandb", "--json"))
    assert code == 0 and run_of(out).status == "finished" and run_of(out).record["kernel"]["warm"], (out, err)
    assert ran_in(run_of(out)) == s.p.pid


def test_stopping_serve_during_a_run_ends_it_killed_and_tells_the_command(tmp_path, serve):
    tpl, s, p, kernel = held_in_serve(tmp_path, serve)
    s.p.send_signal(signal.SIGTERM)
    code, out, err = finished(p)
    assert code == 1 and "was stopped: fmops schedule serve stopped during the run" in err, (out, err)
    assert "Traceback" not in err
    assert s.p.wait(timeout=CAP) == 0 and not Path(f"/proc/{kernel}").exists()
    run = run_of(out)
    assert run.status == "killed"
    assert not socket_path(Workspace.open().root).exists()  # serve removed its socket


def test_a_killed_serve_fails_its_command_clearly_and_its_socket_is_replaced(tmp_path, serve, hostile):
    tpl, s, p, _ = held_in_serve(tmp_path, serve)
    hostile("serve is killed (SIGKILL) in the middle of a run it was handed")
    s.p.kill(); s.p.wait(timeout=CAP)
    code, out, err = finished(p)
    assert code == 1 and f"fmops schedule serve (pid {s.p.pid}) ended during the run of gate" in err, (out, err)
    assert "the run's folder reads `killed`" in err
    assert "--no-serve" in err and "Traceback" not in err
    run = run_of(out)
    assert run.status == "killed"  # its process is gone: the folder reads `killed`, not `running`
    sock = socket_path(Workspace.open().root)
    assert sock.exists()  # left behind by the killed serve
    code, out, err = finished(report_run(tmp_path, str(tpl), "--no-wandb"))
    assert code == 0 and run_of(out).status == "finished" and "Handed" not in out, (out, err)  # ran in the command
    s2 = serve("--no-wandb")
    s2.wait_for("is handed to it")  # the stale socket was replaced
    code, out, err = finished(report_run(tmp_path, str(tpl), "--no-wandb"))
    assert code == 0 and f"(pid {s2.p.pid})" in out, (out, err)


def test_a_socket_folder_others_may_enter_is_not_used(tmp_path, serve, hostile, request):
    hostile("the socket's folder is open to every user (mode 777)")
    runtime = Path(tempfile.mkdtemp(dir="/tmp"))  # short: a socket's path must fit in ~107 bytes
    request.addfinalizer(lambda: shutil.rmtree(runtime, ignore_errors=True))
    folder = runtime / f"fmops-{os.getuid()}"
    folder.mkdir(mode=0o777); folder.chmod(0o777)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    tpl = gate_template(tmp_path)
    s = serve("--no-wandb", env=env)
    line = s.wait_for("report runs are not handed to it")
    assert "others may enter" in line and "777" in line, line
    code, out, err = finished(report_run(tmp_path, str(tpl), "--no-wandb", env=env))
    assert code == 0 and run_of(out).status == "finished" and "fmops schedule serve" not in out, (out, err)
    assert list(folder.iterdir()) == []  # nothing was made there
    s.stop()

    if os.geteuid() != 0: return  # only root can give the folder to another user
    hostile("the socket's folder belongs to another user (made before serve could)")
    folder.chmod(0o700); os.chown(folder, 65534, 65534)
    s = serve("--no-wandb", env=env)
    assert "belongs to another user" in s.wait_for("report runs are not handed to it")
    code, out, err = finished(report_run(tmp_path, str(tpl), "--no-wandb", env=env))
    assert code == 0 and run_of(out).status == "finished" and "fmops schedule serve" not in out, (out, err)
