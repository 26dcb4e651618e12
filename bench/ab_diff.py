"""Paired A/B of register + diff (every tensor changed) between two source trees, interleaved subprocesses.
Run: git worktree add /tmp/old REV; python bench/ab_diff.py /tmp/old . 5"""
import json, statistics, subprocess, sys, tempfile
CODE = r'''
import sys, time, os, tempfile, numpy as np
sys.path.insert(0, sys.argv[1])
os.environ['FMOPS_USER'] = 'bench'
from safetensors.numpy import save_file
from fmops_nb.core import Workspace
from fmops_nb.registry import Registry
from fmops_nb.diff import diff
import fmops_nb.registry as R; assert R.__file__.startswith(sys.argv[1])
d = tempfile.mkdtemp(); g = np.random.default_rng(0)
a = {f"layer.{i}.weight": g.normal(size=(512, 512)).astype(np.float32) for i in range(40)}
b = {k: v + 0.01 for k, v in a.items()}
save_file(a, f"{d}/a.safetensors"); save_file(b, f"{d}/b.safetensors")
reg = Registry(Workspace.open(f"{d}/ws"), log=False)
t = time.perf_counter(); reg.register('m', f"{d}/a.safetensors"); reg.register('m', f"{d}/b.safetensors", parent='m:v1'); t1 = time.perf_counter() - t
t = time.perf_counter(); dd = diff('m:v1', 'm:v2', reg); t2 = time.perf_counter() - t
print(t1, t2, sum(1 for x in dd.tensors if x.change == 'changed'))
'''
def run(path):
    out = subprocess.run([sys.executable, '-c', CODE, path], capture_output=True, text=True)
    if out.returncode: raise SystemExit(out.stderr[-2000:])
    return [float(x) for x in out.stdout.split()]
old, new, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
A, B = [], []
for _ in range(runs): A.append(run(old)); B.append(run(new))
med = lambda xs: round(statistics.median(xs), 3)
print(json.dumps({'tensors': 40, 'mb_per_version': 40, 'runs': runs,
  'register_before_s': med([a[0] for a in A]), 'register_after_s': med([b[0] for b in B]), 'register_paired_ratio': med([b[0] / a[0] for a, b in zip(A, B)]),
  'diff_before_s': med([a[1] for a in A]), 'diff_after_s': med([b[1] for b in B]), 'diff_paired_ratio': med([b[1] / a[1] for a, b in zip(A, B)]),
  'changed_before': A[0][2], 'changed_after': B[0][2]}, indent=1))
