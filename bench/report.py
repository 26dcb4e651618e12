"""The overhead of `fmops report run` over the notebook's own compute (issue 6; target: at most 2 s, median of several runs).

A template does a fixed amount of work (a drift check of two 20,000-row tables, ~1 s). For each run we take the wall
time of the whole `fmops report run` command (a fresh process: imports, parameter validation, kernel start, parameter
injection, execution, HTML export, W&B logging in offline mode) and subtract the time the notebook's cells took
(papermill's per-cell durations in the output notebook). The split of the overhead comes from the run's record.json.
Also measured: the cost of `import nbformat` in a fresh interpreter, and whether the template's kernel ever imports it.

Run: python bench/report.py [--runs N] [--out FILE]
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, time
from pathlib import Path

CELLS = [
    "import sys\nfrom fmops_nb.reports import record, uses\nimport numpy as np\nfrom fmops_nb.drift import drift",
    "rng = np.random.default_rng(seed)\nref = {f'x{i}': rng.normal(size=rows) for i in range(10)}\n"
    "cur = {f'x{i}': rng.normal(0.1 * (i % 3), size=rows) for i in range(10)}\nrep = drift(ref, cur)",
    "record('n_drifted', len(rep.drifted))\nrecord('drift', [{'column': k, 'statistic': c.statistic} for k, c in rep.columns.items()])\n"
    "record('nbformat_in_kernel', 'nbformat' in sys.modules)\nrep",
]


def make_template(path: Path):
    import nbformat
    p = nbformat.v4.new_code_cell("rows: int = 20000\nseed: int = 0")
    p.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[p] + [nbformat.v4.new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


def fresh(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--out")
    a = ap.parse_args()
    d = Path(tempfile.mkdtemp(prefix="fmops-bench-report-"))
    make_template(d / "bench_report.ipynb")
    env = {**os.environ, "FMOPS_HOME": str(d / ".fmops"), "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           **{v: str(d / "wandb" / s) for v, s in [("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"),
                                                   ("WANDB_DATA_DIR", "data"), ("WANDB_ARTIFACT_DIR", "artifacts")]}}
    rows = []
    for i in range(a.runs + 1):  # the first run warms the file cache and is dropped
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "fmops_nb.cli", "report", "run", str(d / "bench_report.ipynb"), "-p", "seed", str(i), "--json"],
                           capture_output=True, text=True, env=env, cwd=d)
        wall = time.perf_counter() - t
        if r.returncode: sys.exit(r.stderr)
        rec = json.loads(r.stdout)["record"]
        tm = rec["timings"]
        rows.append({"wall_s": wall, "cells_s": tm["cells_s"], "overhead_s": wall - tm["cells_s"],
                     "in_run_report_s": tm["total_s"], "execute_minus_cells_s": tm["execute_s"] - tm["cells_s"],
                     "html_s": tm["html_s"], "wandb_s": tm["wandb_s"], "cli_outside_run_report_s": wall - tm["total_s"],
                     "nbformat_in_kernel": json.loads(r.stdout)["values"]["nbformat_in_kernel"]})
    rows = rows[1:]
    med = lambda k: round(statistics.median(x[k] for x in rows), 3)
    imp = [fresh("import time; t = time.perf_counter(); import nbformat; print(time.perf_counter() - t)") for _ in range(5)]
    base = [fresh("import time; t = time.perf_counter(); import fmops_nb.reports; print(time.perf_counter() - t)") for _ in range(5)]
    res = {"runs": a.runs, "template": "drift check, 10 columns x 20,000 rows per side",
           "median": {k: med(k) for k in ("wall_s", "cells_s", "overhead_s", "in_run_report_s", "execute_minus_cells_s", "html_s", "wandb_s",
                                           "cli_outside_run_report_s")},
           "target_overhead_s": 2.0, "nbformat_in_kernel": sorted({x["nbformat_in_kernel"] for x in rows}),
           "import_nbformat_s_median": round(statistics.median(imp), 4), "import_fmops_nb_reports_s_median": round(statistics.median(base), 4),
           "per_run": rows, "python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(res, indent=2))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
