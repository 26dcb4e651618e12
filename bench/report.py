"""The overhead of `fmops report run` over the notebook's own compute (issue 6: at most 2 s; issue 13: at most 1.5 s,
median of seven, paired), and of a run inside `fmops schedule serve`, whose kernel was started ahead.

A template does a fixed amount of work (a drift check of two 10 x 20,000 tables, ~1 s). Each iteration runs:

- `fmops report run` as a shell command, a fresh process (imports, parameter validation, kernel start, parameter
  injection, execution, HTML export, W&B logging in offline mode). Its overhead is its wall time minus the time the
  notebook's cells took (papermill's per-cell durations in the output notebook), so each run is paired with its own
  compute. The split comes from the run's record.json: `prepare_s` (run_report's start to the execution: starting the
  kernel, the checks, the run's folder), `execute_minus_cells_s` (papermill's import, waiting for the kernel to finish
  booting, papermill's bookkeeping), `after_execute_s` (HTML, W&B), and `cli_outside_run_report_s` (interpreter start,
  the CLI's imports, the exit).
- the same cells as one plain `python -c` (no kernel, no papermill, no W&B): the floor. `wall - floor` is a second
  paired overhead, measured next to the run. It is the conservative one on a busy machine: the W&B start and the
  imports the run's end needs run in threads while the kernel computes, and where no core is free they slow the cells
  (papermill's durations grow, so `wall - cells` shrinks), but not the floor.

The 1-minute load average is read before each run. The first iteration warms the file cache and is dropped.

The CPU a run costs the machine: the busy CPU seconds of all cores (`/proc/stat`) from the command's start to 0.3 s
after its end (the W&B service, a process of its own, ends then), minus the cells (`cpu_outside_cells_s`). On an idle
machine, that is the CPU the run adds; with `--busy-cores N` (N processes spinning `while 1: pass` through every
iteration, to measure under load) the figure counts the spinning processes too and is left out.

Then, in one process that does what `schedule serve` does each round (a `KernelPool` of one kernel, refilled after
each run, and `schedule.run_due`), the same template runs as a schedule `runs + 1` times: from the trigger (the call
of `run_due`, the kernel ready as it is between two due schedules) to the finished run (its final status written).
The first of those imports papermill, wandb and pandas into the process and is reported apart.

Variants, each run in the same iterations as the command (so every figure is paired with the others):
- `--freeze-at-exit`: the command as `fmops_nb.cli.main` with `atexit.register(gc.freeze)` — what the proposed change
  to `cli.main` does — instead of `python -m fmops_nb.cli`;
- `--baseline DIR`: the command from another copy of the package (`DIR/fmops_nb`, e.g. the last commit's reports.py
  and schedule.py over this tree's other modules), for a before/after ratio measured under the same load;
- `--handoff`: a real `fmops schedule serve` of the bench's workspace runs through all iterations, and the command is
  run twice per iteration: as before but with `--no-serve` (`run`: the command runs the report itself), then as a
  user types it (`handoff`: serve takes the run, its kernel started ahead). Before the next iteration the bench waits
  until serve's new kernel has finished booting (its CPU time stops growing), as it has between two commands a person
  types.

Run: python bench/report.py [--runs N] [--out FILE] [--freeze-at-exit] [--baseline DIR] [--no-serve] [--busy-cores N]
                            [--handoff]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

PARAMS = "rows: int = 20000\nseed: int = 0"
CELLS = [
    "import sys\nfrom fmops_nb.reports import record, uses\nimport numpy as np\nfrom fmops_nb.drift import drift",
    "rng = np.random.default_rng(seed)\nref = {f'x{i}': rng.normal(size=rows) for i in range(10)}\n"
    "cur = {f'x{i}': rng.normal(0.1 * (i % 3), size=rows) for i in range(10)}\nrep = drift(ref, cur)",
    "record('n_drifted', len(rep.drifted))\nrecord('drift', [{'column': k, 'statistic': c.statistic} for k, c in rep.columns.items()])\n"
    "record('nbformat_in_kernel', 'nbformat' in sys.modules)\nrep",
]
FREEZE_ENTRY = "import atexit, gc, sys; atexit.register(gc.freeze); from fmops_nb.cli import main; sys.exit(main(sys.argv[1:]))"
BASELINE_ENTRY = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]; "
                  "sys.path.insert(0, sys.argv.pop(1)); from fmops_nb.cli import main; sys.exit(main(sys.argv[1:]))")

SERVE = r'''
import datetime as dt, json, sys, time
from fmops_nb.core import Workspace
from fmops_nb import schedule
from fmops_nb.reports import KernelPool, get_report
from jupyter_core.utils import run_sync
template, n = sys.argv[1], int(sys.argv[2])

def ready(pool):
    "Wait until the pool's kernel answers: between two due schedules, serve's kernel has long finished booting."
    kc = pool.ready[0].client(); kc.start_channels()
    try: run_sync(kc.wait_for_ready)(timeout=60)
    finally: kc.stop_channels()

ws = Workspace.open()
schedule.add("bench", "* * * * *", template, {"seed": 0}, ws=ws, replace=True)
first = dt.datetime.now().replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
rows = []
with KernelPool(ws) as pool:
    pool.refill()
    for i in range(n + 1):
        ready(pool)
        load = float(open("/proc/loadavg").read().split()[0])
        t = time.perf_counter()
        done = schedule.run_due(ws, now=first + dt.timedelta(minutes=i), kernels=pool)
        wall = time.perf_counter() - t
        assert [r["status"] for r in done] == ["finished"], done
        rec = get_report(done[0]["report"], ws).record
        tm = rec["timings"]
        rows.append({"trigger_to_finished_s": wall, "cells_s": tm["cells_s"], "overhead_s": wall - tm["cells_s"],
                     "prepare_s": tm["prepare_s"], "execute_minus_cells_s": tm["execute_s"] - tm["cells_s"], "html_s": tm["html_s"],
                     "wandb_s": tm["wandb_s"], "outside_run_report_s": wall - tm["total_s"] - tm["prepare_s"],
                     "warm_kernel": rec["kernel"]["warm"], "load_1min": load})
    started = list(pool.started)
print(json.dumps({"rows": rows, "kernels_started": len(started)}))
'''


def make_template(path: Path):
    import nbformat
    p = nbformat.v4.new_code_cell(PARAMS)
    p.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[p] + [nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def busy_cpu_s() -> float:
    "The machine's busy CPU seconds so far, every core (`/proc/stat`: all but idle and iowait)."
    v = list(map(int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]))
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def fresh(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def cli_run(d: Path, env: dict, seed: int, entry: list, extra: tuple = ()) -> dict:
    "One `fmops report run` (a fresh process), timed from outside; its overhead and its split from record.json."
    load, cpu = load_1min(), busy_cpu_s()
    t = time.perf_counter()
    r = subprocess.run([sys.executable, *entry, "report", "run", str(d / "bench_report.ipynb"), "-p", "seed", str(seed), "--json", *extra],
                       capture_output=True, text=True, env=env, cwd=d)
    wall = time.perf_counter() - t
    time.sleep(0.3)
    cpu = busy_cpu_s() - cpu
    if r.returncode: sys.exit(r.stderr)
    out = json.loads(r.stdout)
    rec, tm = out["record"], out["record"]["timings"]
    in_run = tm["total_s"] + tm.get("prepare_s", 0.0)  # an older run_report has no prepare_s: its total_s began there
    return {"wall_s": wall, "cells_s": tm["cells_s"], "overhead_s": wall - tm["cells_s"], "in_run_report_s": in_run,
            "prepare_s": tm.get("prepare_s"), "execute_minus_cells_s": tm["execute_s"] - tm["cells_s"], "html_s": tm["html_s"],
            "wandb_s": tm["wandb_s"], "after_execute_s": tm["total_s"] - tm["execute_s"],
            "cli_outside_run_report_s": wall - in_run,
            "cpu_machine_s": cpu, "cpu_outside_cells_s": cpu - tm["cells_s"], "nbformat_in_kernel": out["values"]["nbformat_in_kernel"], "load_1min": load,
            "status_pid": json.loads((Path(out["dir"]) / "status.json").read_text()).get("pid"), "warm_kernel": rec["kernel"]["warm"]}


def cpu_ticks(pid: int) -> int:
    "utime + stime of a process, in clock ticks (0 once it is gone)."
    try: return sum(map(int, Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13]))
    except (OSError, ValueError): return 0


def kernels_of(pid: int) -> list[int]:
    "The ipykernel processes whose parent is `pid`."
    out = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit(): continue
        try: stat, cmd = (p / "stat").read_text(), (p / "cmdline").read_bytes()
        except OSError: continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"ipykernel_launcher" in cmd: out.append(int(p.name))
    return out


def settle(serve_pid: int, timeout: float = 60.0):
    "Wait until serve has a kernel started ahead whose CPU time has stopped growing (its boot is over)."
    end, last, still = time.monotonic() + timeout, None, 0
    while time.monotonic() < end:
        ks = kernels_of(serve_pid)
        now = sum(cpu_ticks(k) for k in ks) if ks else None
        still = still + 1 if now is not None and now == last else 0
        if still >= 3: return
        last = now
        time.sleep(0.1)
    sys.exit("serve's kernel never settled")


def floor_run(seed: int) -> dict:
    "The cells alone in a fresh `python -c`: interpreter start, the same imports, the same compute."
    code = "\n".join([f"rows = 20000\nseed = {seed}", *CELLS])
    load = load_1min()
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return {"wall_s": time.perf_counter() - t, "load_1min": load}


def packages() -> dict:
    "The versions of what a report run imports and starts (the 12-02 figures did not record them)."
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for p in ("fmops_nb", "papermill", "nbformat", "nbclient", "jupyter_client", "ipykernel", "pyzmq", "wandb",
              "numpy", "pandas", "jsonschema"):
        try: out[p] = version(p)
        except PackageNotFoundError: out[p] = None
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out")
    ap.add_argument("--freeze-at-exit", action="store_true", help="also run the command with gc.freeze at exit (the proposed cli.main change)")
    ap.add_argument("--baseline", metavar="DIR", help="also run the command from DIR/fmops_nb (an older version), paired")
    ap.add_argument("--no-serve", action="store_true", help="skip the runs inside a serve-like process")
    ap.add_argument("--busy-cores", type=int, default=0, metavar="N", help="keep N processes spinning through every iteration")
    ap.add_argument("--handoff", action="store_true", help="a real `fmops schedule serve` runs; the command with and without --no-serve")
    a = ap.parse_args()
    spinners = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(a.busy_cores)]
    try: run(a)
    finally:
        for p in spinners: p.kill(); p.wait()


def run(a):
    d = Path(tempfile.mkdtemp(prefix="fmops-bench-report-"))
    make_template(d / "bench_report.ipynb")
    env = {**os.environ, "FMOPS_HOME": str(d / ".fmops"), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           **{v: str(d / "wandb" / s) for v, s in [("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                                                   ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")]}}
    variants = {"run": ["-m", "fmops_nb.cli"]}
    if a.freeze_at_exit: variants["freeze_at_exit"] = ["-c", FREEZE_ENTRY]
    if a.baseline: variants["baseline"] = ["-c", BASELINE_ENTRY, str(Path(a.baseline).resolve())]
    extra = {"run": ("--no-serve",)} if a.handoff else {}
    if a.handoff: variants["handoff"] = ["-m", "fmops_nb.cli"]
    serve = None
    if a.handoff:
        serve = subprocess.Popen([sys.executable, "-m", "fmops_nb.cli", "schedule", "serve", "--interval", "3600"], env=env,
                                 cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = serve.stdout.readline() + serve.stdout.readline()
        if "is handed to it" not in line: sys.exit(f"serve does not take runs: {line}")
    rows, floors = {k: [] for k in variants}, []
    load_start = Path("/proc/loadavg").read_text().split()[:3]
    for i in range(a.runs + 1):  # the first iteration warms the file cache and is dropped
        if serve is not None: settle(serve.pid)
        floors.append(floor_run(i))
        for kind, entry in variants.items():
            r = cli_run(d, env, i, entry, extra.get(kind, ()))
            if kind == "handoff" and r.get("status_pid") != serve.pid: sys.exit(f"run {i} was not handed to serve")
            r["minus_floor_s"] = r["wall_s"] - floors[-1]["wall_s"]
            rows[kind].append(r)
            print(f"{kind} {i}: wall {r['wall_s']:.2f} cells {r['cells_s']:.2f} overhead {r['overhead_s']:.2f} "
                  f"(floor {floors[-1]['wall_s']:.2f}, load {r['load_1min']})", file=sys.stderr)
    rows, floors = {k: v[1:] for k, v in rows.items()}, floors[1:]
    med = lambda xs, k: round(statistics.median(x[k] for x in xs), 3)
    keys = ("wall_s", "cells_s", "overhead_s", "minus_floor_s", "in_run_report_s", "prepare_s", "execute_minus_cells_s", "html_s",
            "wandb_s", "after_execute_s", "cli_outside_run_report_s", "load_1min", *(() if a.busy_cores else ("cpu_outside_cells_s",)))
    summary = lambda xs: {"median": {k: med(xs, k) for k in keys if all(x.get(k) is not None for x in xs)},
                          "overhead_s_range": [round(min(x["overhead_s"] for x in xs), 3), round(max(x["overhead_s"] for x in xs), 3)]}
    res = {"runs": a.runs, "busy_cores": a.busy_cores, "template": "drift check, 10 columns x 20,000 rows per side", "target_overhead_s": 1.5,
           "command": "python -m fmops_nb.cli report run bench_report.ipynb -p seed I --json (WANDB_MODE=offline)",
           **summary(rows["run"]), "floor_wall_s_median": med(floors, "wall_s"),
           "nbformat_in_kernel": sorted({x["nbformat_in_kernel"] for x in rows["run"]}), "per_run": rows["run"], "floor_per_run": floors}
    if "freeze_at_exit" in rows:
        res["freeze_at_exit"] = {"command": f"python -c {FREEZE_ENTRY!r} report run ...", **summary(rows["freeze_at_exit"]),
                                 "per_run": rows["freeze_at_exit"]}
    if "baseline" in rows:
        b = rows["baseline"]
        res["baseline"] = {"package": str(Path(a.baseline).resolve()), **summary(b), "per_run": b,
                           "paired_overhead_ratio_run_over_baseline_median": round(statistics.median(
                               x["overhead_s"] / y["overhead_s"] for x, y in zip(rows["run"], b)), 3),
                           "paired_overhead_difference_s_median": round(statistics.median(
                               x["overhead_s"] - y["overhead_s"] for x, y in zip(rows["run"], b)), 3)}
        if "freeze_at_exit" in rows:
            res["baseline"]["paired_overhead_ratio_freeze_over_baseline_median"] = round(statistics.median(
                x["overhead_s"] / y["overhead_s"] for x, y in zip(rows["freeze_at_exit"], b)), 3)
    if serve is not None:
        serve.terminate(); serve.wait(timeout=120)
        h = rows["handoff"]
        res["handoff"] = {"how": "the same command without --no-serve, a real `fmops schedule serve` of the workspace running; "
                                 "`run` above is the command with --no-serve, in the same iterations",
                          **summary(h), "warm_kernel": [x["warm_kernel"] for x in h], "per_run": h,
                          "paired_overhead_ratio_handoff_over_run_median": round(statistics.median(
                              x["overhead_s"] / y["overhead_s"] for x, y in zip(h, rows["run"])), 3),
                          "paired_overhead_difference_s_median": round(statistics.median(
                              x["overhead_s"] - y["overhead_s"] for x, y in zip(h, rows["run"])), 3)}
    if not a.no_serve:
        r = subprocess.run([sys.executable, "-c", SERVE, str(d / "bench_report.ipynb"), str(a.runs)], capture_output=True, text=True,
                           env=env, cwd=d)
        if r.returncode: sys.exit(r.stderr)
        s = json.loads(r.stdout.strip().splitlines()[-1])
        res["serve"] = {"how": "one process: KernelPool(ws) of one kernel, refilled after each run, and schedule.run_due per round "
                               "(what `fmops schedule serve` does), timed from the call of run_due to its return",
                        "first_run": s["rows"][0], "median": {k: med(s["rows"][1:], k) for k in s["rows"][0] if k != "warm_kernel"},
                        "warm_kernel": [x["warm_kernel"] for x in s["rows"]], "kernels_started": s["kernels_started"],
                        "per_run": s["rows"][1:]}
    imp = [fresh("import time; t = time.perf_counter(); import nbformat; print(time.perf_counter() - t)") for _ in range(5)]
    base = [fresh("import time; t = time.perf_counter(); import fmops_nb.reports; print(time.perf_counter() - t)") for _ in range(5)]
    res |= {"import_nbformat_s_median": round(statistics.median(imp), 4), "import_fmops_nb_reports_s_median": round(statistics.median(base), 4),
            "load_avg_start": load_start, "load_avg_end": Path("/proc/loadavg").read_text().split()[:3], "cpus": os.cpu_count(),
            "python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M"), "packages": packages()}
    print(json.dumps(res, indent=2))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
