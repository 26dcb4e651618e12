"""Weight diff of two ~500 MB checkpoints: fmops' streamed diff against loading both and subtracting, and the read floor (issue 4).

    python bench/version_diff.py                 # two 503 MB float32 checkpoints, 40 tensors of 1024 x 3072
    python bench/version_diff.py --tensors 10    # smaller

Scenarios: 10% of the tensors changed (the rest identical, so skipped by hash), and every tensor changed.
Each measurement runs in its own process: seconds, and peak RSS during the work (VmHWM, reset just before it) minus
the RSS after imports. Two cache states, the same for every contestant: cold (the files evicted from the page cache
with posix_fadvise just before the run, so they come from the disk) and warm (read once just before).
  floor     read both files once, sequentially, and throw the bytes away
  naive     load both files fully (safetensors.numpy.load_file) and compute the same per-tensor statistics
  fmops     fmops_nb.diff.diff(a, b): config/metrics/data + per-tensor weights diff, hashes checked while reading
Prints JSON and a markdown table; --out writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (1024, 3072)


def _kb(key):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key + ':'):
            return int(line.split()[1])
    return 0


def make(folder: Path, n: int, changed_share: float):
    from safetensors.numpy import save_file
    from fmops_nb.core import Workspace
    from fmops_nb.registry import Registry
    rng = np.random.default_rng(0)
    a = {f"layers.{i}.weight": rng.standard_normal(SHAPE, dtype=np.float32) for i in range(n)}
    k = max(1, round(n * changed_share))
    changed = sorted(rng.choice(n, k, replace=False).tolist())
    b = dict(a)
    for i in changed:
        b[f"layers.{i}.weight"] = a[f"layers.{i}.weight"] + rng.standard_normal(SHAPE, dtype=np.float32) * 0.01
    save_file(a, str(folder / 'a.safetensors')); save_file(b, str(folder / 'b.safetensors'))
    del a, b
    reg = Registry(Workspace.open(folder / 'ws'), log=False)
    va = reg.register('big', folder / 'a.safetensors')
    vb = reg.register('big', folder / 'b.safetensors', parent=va.id)
    paths = [str(reg.blobs.path(v.files['model.safetensors']['sha256'])) for v in (va, vb)]
    return {'changed': len(changed), 'tensors': n, 'paths': paths, 'bytes': sum(os.path.getsize(p) for p in paths)}


def run_floor(folder, paths):
    total = 0
    for p in paths:
        with open(p, 'rb', buffering=0) as f:
            while chunk := f.read(1 << 23):
                total += len(chunk)
    return {'bytes_read': total}


def run_naive(folder, paths):
    from safetensors.numpy import load_file
    a, b = load_file(paths[0]), load_file(paths[1])
    changed = 0
    for k in a:
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        d = y - x
        stats = (x.ravel() @ x.ravel(), y.ravel() @ y.ravel(), d.ravel() @ d.ravel(), x.ravel() @ y.ravel(), np.count_nonzero(d))
        changed += stats[4] > 0
    return {'changed_tensors': int(changed)}


def run_fmops(folder, paths):
    from fmops_nb.core import Workspace
    from fmops_nb.diff import diff
    from fmops_nb.registry import Registry
    d = diff('big:v1', 'big:v2', Registry(Workspace.open(folder / 'ws'), log=False))
    return {'changed_tensors': len(d.changed_tensors), 'skipped_by_hash': d.cost['skipped_by_hash'], 'bytes_read_by_fmops': d.cost['bytes_read']}


def evict(paths):
    "Drop the files from the page cache (clean pages; no root needed): the next read comes from the disk."
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def worker(how: str, folder: Path, paths, cache: str):
    import fmops_nb.diff  # noqa: F401  (imports are not counted)
    import safetensors.numpy  # noqa: F401
    if cache == 'cold':
        evict(paths)
    else:
        run_floor(folder, paths)
    base = _kb('VmRSS') / 1024
    Path('/proc/self/clear_refs').write_text('5')
    t = time.perf_counter()
    extra = {'floor': run_floor, 'naive': run_naive, 'fmops': run_fmops}[how](folder, paths)
    sec = time.perf_counter() - t
    print(json.dumps({'how': how, 'seconds': round(sec, 3), 'peak_rss_mb': round(_kb('VmHWM') / 1024 - base, 1), **extra}))


def measure(how: str, folder: str, info: dict, cache: str, repeat: int, share: float) -> dict:
    "The median of `repeat` runs of one contestant, each in a fresh process."
    runs = []
    for _ in range(repeat):
        r = subprocess.run([sys.executable, __file__, '--worker', how, folder, json.dumps(info['paths']), cache], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    runs.sort(key=lambda x: x['seconds'])
    med = runs[len(runs) // 2] | {'seconds_all': [x['seconds'] for x in runs]}
    print(json.dumps({'changed_share': share, 'cache': cache, **med}), file=sys.stderr, flush=True)
    return med


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tensors', type=int, default=40)
    p.add_argument('--repeat', type=int, default=3, help='runs per contestant; the median is reported')
    p.add_argument('--out')
    p.add_argument('--worker', nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker[0], Path(a.worker[1]), json.loads(a.worker[2]), a.worker[3])
    doc = {'date': time.strftime('%Y-%m-%d'), 'cpus': os.cpu_count(), 'tensor_shape': SHAPE, 'tensor_mb': round(np.prod(SHAPE) * 4 / 2**20, 1), 'scenarios': []}
    for share in (0.1, 1.0):
        with tempfile.TemporaryDirectory(prefix='fmops-bench-diff-', dir=os.environ.get('BENCH_TMP')) as d:
            info = make(Path(d), a.tensors, share)
            for cache in ('cold', 'warm'):
                rows = [measure(how, d, info, cache, a.repeat, share) for how in ('floor', 'naive', 'fmops')]
                for r in rows:
                    r['vs_floor'] = round(r['seconds'] / rows[0]['seconds'], 2)
                doc['scenarios'].append({'changed_share': share, 'cache': cache, 'changed_tensors': info['changed'], 'tensors': info['tensors'],
                                         'total_mb': round(info['bytes'] / 2**20, 1), 'results': rows})
    if a.out:
        Path(a.out).write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    for s in doc['scenarios']:
        print(f"\n{s['changed_tensors']} of {s['tensors']} tensors changed, {s['total_mb']} MB in both files, {s['cache']} page cache")
        print('| how | seconds (median) | × read floor | peak RSS MB |\n|---|---|---|---|')
        for r in s['results']:
            print(f"| {r['how']} | {r['seconds']} | {r['vs_floor']} | {r['peak_rss_mb']} |")


if __name__ == '__main__':
    main()
