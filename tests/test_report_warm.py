"""Kernels started ahead of their runs (issue 13): `fmops report run` starts its kernel before it checks the request,
`schedule serve` keeps one kernel started for the next run. Each kernel serves one run, gets the run's environment
before papermill runs anything, and is stopped; none is left when a run or serve ends. Checked by process ids and the
runs' own records, never by timing."""
import os, signal, subprocess, sys, time
from pathlib import Path

import nbformat
import pytest

from fmops_nb import schedule
from fmops_nb.core import Workspace
from fmops_nb.errors import ValidationError
from fmops_nb.reports import KernelPool, report_runs, run_report

pytestmark = pytest.mark.slow  # kernels and subprocesses: the full tier only

# what a kernel shows its template: a variable an earlier run defined, its own process, the run's variables as the
# kernel and a subprocess of it see them, its working directory
PROBE = """import os, subprocess, sys
from fmops_nb.reports import record
record('leaked', 'secret' in globals())
record('pid', os.getpid())
record('env', {k: os.environ.get(k)
              for k in ('FMOPS_REPORT_DIR', 'FMOPS_TEMPLATE', 'FMOPS_DRY_RUN', 'FMOPS_PINS', 'FMOPS_HOME')})
record('child_report_dir', subprocess.run([sys.executable, '-c', 'import os; print(os.environ["FMOPS_REPORT_DIR"])'],
                                          capture_output=True, text=True).stdout.strip())
record('cwd', os.getcwd())
secret = n"""


def template(path: Path, *cells: str) -> Path:
    p = nbformat.v4.new_code_cell("n: int = 1")
    p.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[p, *[nbformat.v4.new_code_cell(c) for c in cells]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def gone(pid: int) -> bool:
    "The process has ended and been reaped: no /proc entry, not even a zombie."
    return not Path(f"/proc/{pid}").exists()


def kernel_children(parent: int) -> set[int]:
    "Running ipykernel processes whose parent is `parent`."
    out = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit(): continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes()
        except OSError: continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z" and b"ipykernel_launcher" in cmd: out.add(int(p.name))
    return out


def check_bound(run, ws, cwd: Path):
    "The run's kernel saw the run's own variables, in itself and in a subprocess, in the run's working directory."
    v = run.values
    assert v["env"] == {"FMOPS_REPORT_DIR": str(run.dir), "FMOPS_TEMPLATE": run.dir.parent.name, "FMOPS_DRY_RUN": "",
                        "FMOPS_PINS": "{}", "FMOPS_HOME": str(ws.root)}
    assert v["child_report_dir"] == str(run.dir) and v["cwd"] == str(cwd)
    assert run.record["kernel"]["pid"] == v["pid"]
    # binding the kernel ran nothing papermill counts: the cells are numbered from 1, as in a kernel of its own
    counts = [c.execution_count for c in nbformat.read(str(run.notebook), as_version=4).cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), counts


def heartbeats() -> int:
    "Heartbeat threads of kernel clients in this process."
    import threading
    return sum(type(t).__name__ == "HBChannel" for t in threading.enumerate())


def test_report_run_binds_its_kernel_and_leaves_none(tmp_path):
    tpl = template(tmp_path / "probe.ipynb", PROBE)
    ws = Workspace.open()
    # what earlier tests in this worker process left (a kernel still ending) is theirs: only this test's must be gone
    before, kernels_before = heartbeats(), kernel_children(os.getpid())
    for n in (5, 6):
        run = run_report(tpl, {"n": n}, log=False)
        assert run.status == "finished" and run.values["leaked"] is False, (run.status, run.error)
        assert run.record["kernel"]["warm"] is False
        check_bound(run, ws, tmp_path)
        assert gone(run.values["pid"])  # stopped before run_report returned
    assert kernel_children(os.getpid()) - kernels_before == set()
    assert heartbeats() <= before  # papermill's client's channels were stopped with the kernel


def outputs(path: Path) -> list:
    """Each code cell's execution count and outputs, without the timing metadata: each stream's text whole (stdout and
    stderr are two pipes, and the kernel does not order one against the other: under load 'to stderr' can arrive
    before a 'first' printed earlier, in a plain papermill run too), then the other outputs in order."""
    nb = nbformat.read(str(path), as_version=4)
    def one(c):
        streams = {}
        for o in c.outputs:
            if o.output_type == "stream": streams[o.name] = streams.get(o.name, "") + o.text
        return c.execution_count, streams, [o for o in c.outputs if o.output_type != "stream"]
    return [one(c) for c in nb.cells if c.cell_type == "code"]


def test_outputs_match_a_plain_papermill_run_fresh_and_warm(tmp_path):
    "A kernel bound by a silent execution, and a client that skips jupyter_client's last 0.2 s: the same outputs."
    import papermill as pm
    tpl = template(tmp_path / "talk.ipynb",
                   "print('first', n)\nimport sys; print('to stderr', file=sys.stderr)",
                   "from IPython.display import HTML, display\ndisplay(HTML('<b>bold</b>'))\nfor i in range(50): print(i)",
                   "n * 2")
    pm.execute_notebook(str(tpl), str(tmp_path / "plain.ipynb"), parameters={"n": 3}, kernel_name="python3",
                        progress_bar=False, cwd=str(tmp_path))
    fresh = run_report(tpl, {"n": 3}, log=False)
    ws = Workspace.open()
    with KernelPool(ws) as pool:
        pool.refill()
        warm = run_report(tpl, {"n": 3}, log=False, kernels=pool)
    assert warm.record["kernel"]["warm"] is True and fresh.record["kernel"]["warm"] is False
    assert outputs(fresh.notebook) == outputs(tmp_path / "plain.ipynb") == outputs(warm.notebook)
    # after the parameters and the injected cell, the first cell's output is there, on both pipes
    assert outputs(fresh.notebook)[2][1] == {"stdout": "first 3\n", "stderr": "to stderr\n"}


def test_a_request_refused_after_its_kernel_started_leaves_no_kernel(tmp_path, monkeypatch, hostile):
    import tempfile
    tpl = template(tmp_path / "probe.ipynb", PROBE)
    kernels_dir = tmp_path / "k"
    kernels_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(kernels_dir))  # where the runs' private kernel folders go
    hostile("a parameter the schema refuses, found after the run's kernel was started")
    with pytest.raises(ValidationError, match="Parameter 'n' must be an int"):
        run_report(tpl, {"n": "many"}, log=False)
    assert kernel_children(os.getpid()) == set() and list(kernels_dir.iterdir()) == []
    assert not (Workspace.open().reports_dir / "probe").exists()  # nothing ran, no folder


def test_serve_runs_each_report_in_its_own_warm_kernel_and_stops_the_last(tmp_path):
    tpl = template(tmp_path / "probe.ipynb", PROBE)
    ws = Workspace.open()
    schedule.add("a", "* * * * *", str(tpl), {"n": 1}, ws=ws)
    schedule.add("b", "* * * * *", str(tpl), {"n": 2}, ws=ws)
    pool, lines = KernelPool(ws), []
    schedule.serve(ws, interval=1, max_loops=1, log=False, out=lines.append, kernels=pool)
    assert any("a: finished" in l for l in lines) and any("b: finished" in l for l in lines), lines
    a, b = sorted(report_runs(ws, "probe"), key=lambda r: r.params["n"])
    # each ran in a kernel the pool had started before it, a different one each: the first started when serve
    # began, the second while the first run wrote its files; a third waited for the next run
    assert a.record["kernel"] == {"pid": pool.started[0], "warm": True}
    assert b.record["kernel"] == {"pid": pool.started[1], "warm": True}
    assert len(pool.started) == 3 and a.values["pid"] != b.values["pid"]
    # the second run cannot see what the first defined
    assert a.values["leaked"] is False and b.values["leaked"] is False
    check_bound(a, ws, tmp_path)
    check_bound(b, ws, tmp_path)
    # serve stopped: the kernels the runs used, and the one no run took, are all gone
    assert pool.ready == [] and all(gone(pid) for pid in pool.started), pool.started
    assert kernel_children(os.getpid()) == set()


def test_a_warm_kernel_started_for_another_environment_or_folder_is_not_used(tmp_path, monkeypatch):
    tpl = template(tmp_path / "probe.ipynb", PROBE)
    ws = Workspace.open()
    with KernelPool(ws) as pool:
        pool.refill()
        first = pool.started[0]
        monkeypatch.setenv("FMOPS_TEST_CHANGED", "1")  # the environment changed since the kernel started
        run = run_report(tpl, log=False, kernels=pool)
        assert run.status == "finished" and run.record["kernel"]["warm"] is False and run.values["pid"] != first
        assert gone(first)  # stopped, not handed out and not left behind
        other = tmp_path / "elsewhere"
        other.mkdir()
        refilled = pool.started[-1]  # started after that run, with the changed environment
        run = run_report(tpl, log=False, kernels=pool, cwd=other)
        assert run.record["kernel"]["warm"] is False and gone(refilled)
        check_bound(run, ws, other)
    assert all(gone(pid) for pid in pool.started)


def test_a_warm_kernel_that_died_while_it_waited_is_replaced(tmp_path, hostile):
    tpl = template(tmp_path / "probe.ipynb", PROBE)
    ws = Workspace.open()
    with KernelPool(ws) as pool:
        pool.refill()
        dead = pool.started[0]
        hostile("the kernel serve started ahead is killed before a run takes it")
        os.kill(dead, signal.SIGKILL)
        run = run_report(tpl, log=False, kernels=pool)
        assert run.status == "finished" and run.record["kernel"]["warm"] is False and run.values["pid"] != dead
        assert gone(dead)
    assert all(gone(pid) for pid in pool.started)


def test_fmops_schedule_serve_leaves_no_kernel_after_sigterm(tmp_path):
    tpl = template(tmp_path / "probe.ipynb", PROBE)
    r = subprocess.run([sys.executable, "-m", "fmops_nb.cli", "schedule", "add", "tick", "--cron", "* * * * *",
                        "--template", str(tpl)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    p = subprocess.Popen([sys.executable, "-m", "fmops_nb.cli", "schedule", "serve", "--interval", "1", "--no-wandb"],
                         cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        waiting = set()
        for _ in range(1200):  # until the run has finished and the next kernel is started (at most 2 minutes)
            runs = report_runs(template="probe")
            if runs and runs[-1].status == "finished" and (waiting := kernel_children(p.pid)): break
            time.sleep(0.1)
        assert runs and runs[-1].status == "finished" and waiting, (runs, waiting)
        used = runs[-1].record["kernel"]
        assert used["warm"] is True and used["pid"] not in waiting and gone(used["pid"])
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=120)
    assert p.returncode == 0 and "tick: finished" in out and out.rstrip().endswith("stopped."), (out, err)
    assert all(gone(pid) for pid in waiting), waiting  # the kernel no run took went with serve


def test_a_pool_started_once_gives_its_kernel_and_starts_no_other(tmp_path):
    "The command line's pool: its kernel boots while the parameters are read; after the run took it, none follows."
    tpl = template(tmp_path / "probe.ipynb", PROBE)
    ws = Workspace.open()
    with KernelPool(ws, once=True) as pool:
        pool.refill()
        run = run_report(tpl, {"n": 2}, log=False, kernels=pool)
        pool.refill()  # what a run does after it took the kernel: nothing, for a pool started once
        assert run.status == "finished" and run.record["kernel"]["warm"] is True
        assert pool.started == [run.record["kernel"]["pid"]] and pool.ready == []
    assert kernel_children(os.getpid()) == set()


def test_the_command_line_runs_a_report_in_the_kernel_it_started_first_and_refuses_bad_parameters(tmp_path, capsys):
    from fmops_nb.cli import main
    tpl = template(tmp_path / "probe.ipynb", PROBE)
    assert main(["report", "run", str(tpl), "-p", "n", "4", "--no-wandb", "--json"]) == 0
    run = report_runs(Workspace.open())[-1]
    assert run.status == "finished" and run.record["kernel"]["warm"] is True and run.params == {"n": 4}
    capsys.readouterr()
    # a parameter the schema refuses: a clear error, and the kernel started for it is stopped
    assert main(["report", "run", str(tpl), "-p", "n", "many", "--no-wandb"]) != 0
    assert "Parameter 'n'" in capsys.readouterr().err
    assert kernel_children(os.getpid()) == set() and len(report_runs(Workspace.open())) == 1


def test_a_report_run_records_its_package_versions_in_wandb_and_a_parameter_of_that_name_wins(tmp_path):
    "The W&B config holds the parameters and `fmops_packages`; a template parameter named so is kept as given."
    from fmops_nb.tracking import read_run
    plain = template(tmp_path / "plain.ipynb", "from fmops_nb.reports import record\nrecord('n', n)")
    run = run_report(plain, {"n": 3})
    cfg = read_run(run.wandb_run).config
    assert cfg["n"] == 3 and cfg["fmops_packages"] == run.record["env"] and "fmops_nb" in cfg["fmops_packages"]
    named = tmp_path / "named.ipynb"
    p = nbformat.v4.new_code_cell("fmops_packages: str = 'none'")
    p.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[p, nbformat.v4.new_code_cell("x = fmops_packages")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(named))
    run = run_report(named, {"fmops_packages": "mine"})
    assert run.status == "finished" and read_run(run.wandb_run).config["fmops_packages"] == "mine"


def test_a_killed_kernel_is_waited_for_every_10_ms_and_is_gone_when_stop_returns(tmp_path, monkeypatch):
    "jupyter_client looks for a killed kernel's end every 0.1 s; a report's kernel manager looks every 10 ms."
    from jupyter_client.manager import AsyncKernelManager
    from fmops_nb.reports import _kernel_classes, _start_kernel, _stop_kernel, _base_env
    looks = []
    original = AsyncKernelManager._async_wait
    async def recorded(self, pollinterval=0.1):
        looks.append(pollinterval)
        return await original(self, pollinterval)
    monkeypatch.setattr(AsyncKernelManager, "_async_wait", recorded)
    km = _start_kernel(tmp_path, _base_env(Workspace.open()))
    assert isinstance(km, _kernel_classes()[0])
    pid = km.fmops_pid
    _stop_kernel(km)
    assert looks and all(x <= 0.01 for x in looks), looks
    assert gone(pid)
