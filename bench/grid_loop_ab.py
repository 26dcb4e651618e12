#!/usr/bin/env python
"""Fresh-process A/B of the drift check with the compiled grid loop and with the numpy loop (drift._compiled = None),
as bench/drift.py's fmops worker times it: fit + score of table (a), p-value mode, imports and data not timed.

    python bench/grid_loop_ab.py "$(which python)" > bench/results/drift-loop-ab-DATE.json

Ten interleaved pairs (compiled first, then numpy first, ...), each check in its own process.
"""
import json, os, subprocess, sys, statistics
BENCH = os.path.dirname(os.path.abspath(__file__))
CODE = f"BENCH = {BENCH!r}\n" + r'''
import sys, time, json, os
sys.path.insert(0, BENCH)
import drift as B
import fmops_nb.drift as D
import scipy.stats, pyarrow.compute
if sys.argv[1] == "numpy": D._compiled = None
ref, cur = B.make_table(1_000_000, 1, False), B.make_table(1_000_000, 2, True)
import gc; gc.collect()
rule = D.DecisionRule(mode="p_value", correction="bonferroni")
t = time.perf_counter(); rep = D.drift(ref, cur, rule=rule); s = time.perf_counter() - t
print(json.dumps({"loop": sys.argv[1], "seconds": s, "flagged": sorted(rep.drifted), "load": os.getloadavg()[0]}))
'''
out = []
for i in range(10):
    for loop in (("compiled", "numpy") if i % 2 == 0 else ("numpy", "compiled")):
        r = subprocess.run([sys.argv[1], "-c", CODE, loop], capture_output=True, text=True, check=True)
        out.append(json.loads(r.stdout.strip().splitlines()[-1]))
c = [o["seconds"] for o in out if o["loop"] == "compiled"]; n = [o["seconds"] for o in out if o["loop"] == "numpy"]
ratios = [a / b for a, b in zip(c, n)]
doc = {"python": sys.argv[1], "compiled_s": c, "numpy_s": n, "median_compiled": statistics.median(c),
       "median_numpy": statistics.median(n), "ratios": ratios, "median_ratio": statistics.median(ratios),
       "flagged": sorted({tuple(o["flagged"]) for o in out}), "load": [o["load"] for o in out]}
print(json.dumps(doc, indent=1))
