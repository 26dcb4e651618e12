"""Paired A/B of the drift engine between two source trees (e.g. before and after a refactor), same inputs, interleaved
subprocesses. Run: git worktree add /tmp/old REV; python bench/ab_drift.py /tmp/old . 1000000 7"""
import json, statistics, subprocess, sys
CODE = r'''
import sys, time, numpy as np, pandas as pd
sys.path.insert(0, sys.argv[1])
import fmops_nb.drift as D
assert D.__file__.startswith(sys.argv[1]), D.__file__
g = np.random.default_rng(0); n = int(sys.argv[2])
def table(shift):
    cols = {f"n{i}": g.normal(size=n) for i in range(20)}
    cols |= {f"c{i}": g.choice(list("abcdefgh"), size=n) for i in range(5)}
    if shift: cols["n0"] = cols["n0"] + 0.05
    return pd.DataFrame(cols)
ref, cur = table(False), table(True)
D.drift(ref.head(1000), cur.head(1000))
t = time.perf_counter(); rep = D.drift(ref, cur, rule=D.DecisionRule(mode='p_value', correction='bonferroni')); dt = time.perf_counter() - t
print(dt, sorted(c for c, r in rep.columns.items() if r.status == 'drift') if hasattr(rep, 'columns') else '')
'''
def run(path, n):
    out = subprocess.run([sys.executable, '-c', CODE, path, str(n)], capture_output=True, text=True)
    if out.returncode: raise SystemExit(out.stderr[-2000:])
    t, *rest = out.stdout.strip().splitlines()[-1].split(' ', 1)
    return float(t), rest
old, new, n, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
a, b = [], []
for i in range(runs):
    ta, fa = run(old, n); tb, fb = run(new, n); a.append(ta); b.append(tb)
print(json.dumps({'rows': n, 'runs': runs, 'before_median_s': round(statistics.median(a), 3), 'after_median_s': round(statistics.median(b), 3),
                  'paired_ratio_median': round(statistics.median([y / x for x, y in zip(a, b)]), 3),
                  'before': [round(x, 3) for x in a], 'after': [round(x, 3) for x in b], 'flags_before': fa, 'flags_after': fb}, indent=1))
