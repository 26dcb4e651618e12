"""How much `import fmops_nb` + `%load_ext fmops_nb` adds to `import IPython`: median over fresh interpreters.

Target (issue 2): under 0.3 s. Run: python bench/import_time.py [--runs N]
"""
import argparse, json, statistics, subprocess, sys, time

BASE = "import time; t=time.perf_counter(); import IPython; from IPython.core.interactiveshell import InteractiveShell; ip = InteractiveShell.instance(); print(time.perf_counter()-t)"
FMOPS = ("import time; t=time.perf_counter(); import IPython; from IPython.core.interactiveshell import InteractiveShell; "
         "ip = InteractiveShell.instance(); import fmops_nb; ip.run_line_magic('load_ext', 'fmops_nb'); print(time.perf_counter()-t)")
HEAVY = "import sys, fmops_nb; from IPython.core.interactiveshell import InteractiveShell; InteractiveShell.instance().run_line_magic('load_ext','fmops_nb'); print(sorted({'torch','wandb','papermill','transformers','nbformat','pandas','scipy'} & set(sys.modules)))"


def measure(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    a = ap.parse_args()
    measure(BASE); measure(FMOPS)  # warm the file cache
    base, fm = [], []
    for _ in range(a.runs):  # interleave so a busy neighbour hurts both alike
        base.append(measure(BASE)); fm.append(measure(FMOPS))
    extra = [f - b for f, b in zip(fm, base)]
    heavy = subprocess.run([sys.executable, "-c", HEAVY], capture_output=True, text=True, check=True).stdout.strip()
    res = {"runs": a.runs, "ipython_median_s": round(statistics.median(base), 4), "with_fmops_median_s": round(statistics.median(fm), 4),
           "fmops_extra_median_s": round(statistics.median(fm) - statistics.median(base), 4),
           "fmops_extra_paired_median_s": round(statistics.median(extra), 4), "heavy_modules_loaded": heavy,
           "target_s": 0.3, "python": sys.version.split()[0], "when": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
