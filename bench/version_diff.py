"""Weight diff of two ~500 MB checkpoints: fmops' streamed diff against the read floor and against loading both
(issues 4 and 13).

    python bench/version_diff.py --rounds 7 --out bench/results/version_diff-2026-12-02.json   # ~9 minutes
    python bench/version_diff.py --tensors 10 --rounds 3 --no-naive   # smaller, quicker (not for quoting)

Two float32 checkpoints of `--tensors` tensors of 1024 x 3072 (12 MB each), registered as big:v1 and big:v2.
Scenarios: 10% of the tensors changed (the rest identical, so skipped by hash), and every tensor changed; each in two
page-cache states: cold (both blob files evicted with posix_fadvise just before the run, so they come from the disk)
and warm (read once just before).
Contestants, each run in its own process (imports not counted):
  floor         read both files once, sequentially, and throw the bytes away
  fmops         fmops_nb.diff.diff(a, b): config/metrics/data + per-tensor weights diff, every tensor read checked
                against its recorded BLAKE3 digest
  fmops_sha256  the same, checked against SHA-256 instead (what a version registered before BLAKE3 was recorded gets)
  naive         load both files fully (safetensors.numpy.load_file) and compute the same per-tensor statistics
A scenario runs `--rounds` rounds. In a round each contestant runs right after a floor run it is paired with, and that
floor run right after another (unmeasured) one: floor, floor, fmops, floor, floor, fmops_sha256, ... On this
project's VM a cold read of the files right after another read of them was up to 3x faster than one right after a
different contestant (the host's cache, presumably), so every paired floor is the fast kind: the ratios are not
flattered by a slow floor. Reported: per run the seconds, the peak RSS during the work (VmHWM, reset just before it,
minus the RSS after imports) and the 1-minute load average before it; per contestant the median seconds and the
median of the paired ratios (its run / the floor run just before it).
Prints JSON and markdown tables; --out writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE = (1024, 3072)
HOWS = ('floor', 'fmops', 'fmops_sha256', 'naive')


def _kb(key):
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key + ':'):
            return int(line.split()[1])
    return 0


def load():
    "The 1-minute load average."
    return float(Path('/proc/loadavg').read_text().split()[0])


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
    t = time.perf_counter()
    va = reg.register('big', folder / 'a.safetensors')
    vb = reg.register('big', folder / 'b.safetensors', parent=va.id)
    register_s = time.perf_counter() - t
    recorded = {t.get('blake3') is not None for v in (va, vb) for t in reg.tensors(v).values()}
    assert recorded == {True}, 'registration did not record a BLAKE3 digest for every tensor'
    paths = [str(reg.blobs.path(v.files['model.safetensors']['sha256'])) for v in (va, vb)]
    return {'changed': len(changed), 'tensors': n, 'paths': paths, 'bytes': sum(os.path.getsize(p) for p in paths),
            'register_both_s': round(register_s, 3)}


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
        x, y = a[k].astype(np.float64).ravel(), b[k].astype(np.float64).ravel()
        d = y - x
        stats = (x @ x, y @ y, d @ d, x @ y, np.count_nonzero(d))
        changed += stats[4] > 0
    return {'changed_tensors': int(changed)}


def run_fmops(folder, paths):
    from fmops_nb.core import Workspace
    from fmops_nb.diff import diff
    from fmops_nb.registry import Registry
    d = diff('big:v1', 'big:v2', Registry(Workspace.open(folder / 'ws'), log=False))
    return {'changed_tensors': len(d.changed_tensors), 'skipped_by_hash': d.cost['skipped_by_hash'],
            'bytes_read_by_fmops': d.cost['bytes_read']}


def run_fmops_sha256(folder, paths):
    "fmops as it runs on versions registered before BLAKE3 was recorded: every tensor checked with SHA-256."
    import fmops_nb.diff as D
    check = D._check
    D._check = lambda t: check({k: v for k, v in t.items() if k != 'blake3'})
    try:
        return run_fmops(folder, paths)
    finally:
        D._check = check


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
    extra = globals()['run_' + how](folder, paths)
    sec = time.perf_counter() - t
    print(json.dumps({'how': how, 'seconds': round(sec, 4), 'peak_rss_mb': round(_kb('VmHWM') / 1024 - base, 1),
                      **extra}))


def run_once(how: str, folder: str, info: dict, cache: str) -> dict:
    "One run of one contestant in a fresh process, with the load average just before it."
    before = load()
    r = subprocess.run([sys.executable, __file__, '--worker', how, folder, json.dumps(info['paths']), cache],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1]) | {'load_before': before}


def scenario(folder: str, info: dict, cache: str, rounds: int, hows) -> dict:
    "`rounds` rounds of every contestant, each after its paired floor run (itself after an unmeasured one)."
    runs = []
    for i in range(rounds):
        got = {}
        for how in hows[1:]:
            run_once('floor', folder, info, cache)  # unmeasured: the paired floor run below follows a floor run
            floor = run_once('floor', folder, info, cache) | {'round': i, 'paired_with': how}
            got[how] = run_once(how, folder, info, cache) | {'round': i, 'paired_floor_s': floor['seconds']}
            runs += [floor, got[how]]
        print(json.dumps({'cache': cache, 'changed': info['changed'], 'round': i, 'load': got[hows[1]]['load_before'],
                          **{h: [r['paired_floor_s'], r['seconds']] for h, r in got.items()}}),
              file=sys.stderr, flush=True)
    out = {}
    for how in hows:
        mine = [r for r in runs if r['how'] == how]
        ratios = [r['seconds'] / r['paired_floor_s'] for r in mine] if how != 'floor' else [1.0]
        out[how] = {'median_s': round(statistics.median(r['seconds'] for r in mine), 3),
                    'median_paired_ratio': round(statistics.median(ratios), 2),
                    'paired_ratios': [round(x, 2) for x in ratios] if how != 'floor' else [],
                    'median_peak_rss_mb': round(statistics.median(r['peak_rss_mb'] for r in mine), 1)}
        out[how] |= {k: mine[0][k] for k in ('changed_tensors', 'skipped_by_hash', 'bytes_read_by_fmops')
                     if k in mine[0]}
    loads = [r['load_before'] for r in runs]
    return {'summary': out, 'load_min': min(loads), 'load_median': statistics.median(loads), 'load_max': max(loads),
            'runs': runs}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--tensors', type=int, default=40)
    p.add_argument('--rounds', type=int, default=5, help='rounds per scenario (at least 5 for a figure to quote)')
    p.add_argument('--no-naive', action='store_true', help='leave out the naive contestant (2 s and 1.4 GB a run)')
    p.add_argument('--out')
    p.add_argument('--worker', nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker[0], Path(a.worker[1]), json.loads(a.worker[2]), a.worker[3])
    import blake3
    hows = tuple(h for h in HOWS if not (a.no_naive and h == 'naive'))
    doc = {'date': time.strftime('%Y-%m-%d'), 'cpus': os.cpu_count(), 'python': platform.python_version(),
           'numpy': np.__version__, 'blake3': blake3.__version__, 'tensor_shape': SHAPE,
           'tensor_mb': round(np.prod(SHAPE) * 4 / 2**20, 1), 'rounds': a.rounds, 'scenarios': []}
    for share in (0.1, 1.0):
        with tempfile.TemporaryDirectory(prefix='fmops-bench-diff-', dir=os.environ.get('BENCH_TMP')) as d:
            info = make(Path(d), a.tensors, share)
            for cache in ('cold', 'warm'):
                s = scenario(d, info, cache, a.rounds, hows)
                doc['scenarios'].append({'changed_share': share, 'cache': cache, 'changed_tensors': info['changed'],
                                         'tensors': info['tensors'], 'total_mb': round(info['bytes'] / 2**20, 1),
                                         'register_both_s': info['register_both_s'], **s})
    if a.out:
        Path(a.out).write_text(json.dumps(doc, indent=1) + '\n')
    print(json.dumps(doc, indent=1))
    for s in doc['scenarios']:
        print(f"\n{s['changed_tensors']} of {s['tensors']} tensors changed, {s['total_mb']} MB in both files, "
              f"{s['cache']} page cache, load {s['load_min']}–{s['load_max']} (median {s['load_median']})")
        print('| how | median s | median paired ratio to the floor | paired ratios | peak RSS MB |\n|---|---|---|---|---|')
        for how, r in s['summary'].items():
            print(f"| {how} | {r['median_s']} | {r['median_paired_ratio']} | {r['paired_ratios']} | "
                  f"{r['median_peak_rss_mb']} |")


if __name__ == '__main__':
    main()
