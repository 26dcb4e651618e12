"""The MMD permutation test against alibi-detect's MMDDrift (issue 13, target 5), the 50,000-row case with its
subsample, the decision across seeds, and the power of the test against the sample size.

    python bench/mmd.py --runs 5 --threads 1 --out bench/results/mmd-2026-12-02.json   # speed, 50k, seeds (~45 min)
    python bench/mmd.py --power --threads 1 --figure F.png --out P.json                # power curves (~14 min)

Needs alibi-detect in the same environment (the peers' venv, /tmp/bench, see bench/README.md), so that both sides use
the same numpy; every run is a fresh process at BENCH_THREADS threads (default 2: OMP_NUM_THREADS for numpy's BLAS,
torch.set_num_threads for alibi). Inputs are those of bench/drift.py (its `make_embeddings`): 384-d
float32 vectors from 32 latent factors plus noise; the shifted set moves the current mean by 0.3 of the
per-coordinate spread along a 2-d subspace, the control set is another draw from the reference distribution. Time is
the test alone (bandwidth included, imports and data generation excluded), 100 permutations on both sides; the
paired ratio of a run is alibi's time over ours in the run next to it.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ itself, also when loaded from the tests
from drift import make_embeddings  # noqa: E402  (bench/drift.py: the same inputs as its embedding table)

ALPHA = 0.05
DIM, SHIFT = 384, 0.3


def case_data(case: str, n: int):
    "The benchmark's reference (seed 11) and its shifted (seed 12) or control (seed 13) current set, n rows each."
    return make_embeddings(n, DIM, 11, 0), make_embeddings(n, DIM, 12 if case == 'shift' else 13, SHIFT if case == 'shift' else 0)


# --------------------------------------------------------------------------------------------------- workers
def worker(tool: str, case: str, n: int) -> dict:
    threads = int(os.environ.get('BENCH_THREADS', '2'))
    if tool == 'alibi':
        import torch
        from alibi_detect.cd import MMDDrift
        torch.set_num_threads(threads)
    else:
        from fmops_nb.drift import drift
        from fmops_nb.embeddings import median_bandwidth, mmd_test
        import scipy.stats  # noqa: F401  (the full check's import, not timed)
    x, y = case_data(case, n)
    t = time.perf_counter()
    if tool == 'alibi':
        out = MMDDrift(x, backend='pytorch', p_val=ALPHA, n_permutations=100).predict(y)
        p, extra = float(out['data']['p_val']), {}
    elif tool == 'fmops':
        r = mmd_test(x, y, median_bandwidth(x), n_permutations=100)
        p, extra = r['p_value'], {'mmd2': r['mmd2'], 'sample': [r['sample_reference'], r['sample_current']]}
    else:  # the whole check: MMD + classifier + directions + examples, as `drift(x, y)`
        c = drift(x, y, n_permutations=100).columns['embedding']
        p, extra = c.p_value, {'auc': c.stats.get('auc'), 'sample': [c.stats['sample_reference'], c.stats['sample_current']]}
    secs = time.perf_counter() - t
    return {'tool': tool, 'case': case, 'n': n, 'seconds': secs, 'p_value': p, 'drift': p < ALPHA, 'threads': threads, **extra}


def worker_seeds(n: int, seeds: int) -> dict:
    "The decision of the subsampled test on the n-row shifted and control sets, for each of `seeds` seeds."
    from fmops_nb.embeddings import median_bandwidth, mmd_test
    out = {}
    for case in ('shift', 'control'):
        x, y = case_data(case, n)
        bw = median_bandwidth(x)
        out[case] = [mmd_test(x, y, bw, 100, seed=s)['p_value'] for s in range(seeds)]
    return out


def worker_power(n: int, shifts: list, reps: int) -> dict:
    "The share of `reps` fresh draws (n rows a side) on which the test finds each shift, at level ALPHA."
    from fmops_nb.embeddings import median_bandwidth, mmd_test
    found = {}
    for s in shifts:
        hits = 0
        for r in range(reps):
            x, y = make_embeddings(n, DIM, 1000 + r, 0), make_embeddings(n, DIM, 5000 + r, s)
            hits += mmd_test(x, y, median_bandwidth(x), 100, seed=r, max_rows=None)['p_value'] < ALPHA
        found[str(s)] = hits / reps
    return found


# --------------------------------------------------------------------------------------------------- driver
def sub(*args, threads: int) -> dict:
    env = {**os.environ, 'BENCH_THREADS': str(threads), 'OMP_NUM_THREADS': str(threads), 'OPENBLAS_NUM_THREADS': str(threads)}
    load = os.getloadavg()[0]
    r = subprocess.run([sys.executable, __file__, '--worker', *map(str, args)], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f'{args} failed:\n{r.stderr[-3000:]}')
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if isinstance(out, dict):
        out['load_before'] = load
    return out


def speed(a) -> dict:
    med = lambda xs: float(np.median(xs))
    doc = {}
    save = lambda: a.out and Path(a.out).write_text(json.dumps({'partial': True, **doc}, indent=2, default=float) + '\n')
    for case in ('shift', 'control'):
        runs = []
        for i in range(a.runs):
            ours, alibi = sub('fmops', case, 5000, threads=a.threads), sub('alibi', case, 5000, threads=a.threads)
            runs.append({'fmops': ours, 'alibi': alibi, 'ratio': alibi['seconds'] / ours['seconds']})
            print(json.dumps({'case': case, 'run': i, 'fmops_s': round(ours['seconds'], 3), 'alibi_s': round(alibi['seconds'], 2),
                              'ratio': round(runs[-1]['ratio'], 1), 'load': ours['load_before']}), file=sys.stderr, flush=True)
        doc[f'5000-{case}'] = {
            'fmops_seconds': med([r['fmops']['seconds'] for r in runs]), 'alibi_seconds': med([r['alibi']['seconds'] for r in runs]),
            'paired_ratio_median': med([r['ratio'] for r in runs]),
            'paired_ratio_range': [min(r['ratio'] for r in runs), max(r['ratio'] for r in runs)],
            'fmops_drift': sorted({r['fmops']['drift'] for r in runs}), 'alibi_drift': sorted({r['alibi']['drift'] for r in runs}),
            'fmops_p': sorted({r['fmops']['p_value'] for r in runs}), 'alibi_p': sorted({r['alibi']['p_value'] for r in runs}),
            'load_range': [min(r[t]['load_before'] for r in runs for t in ('fmops', 'alibi')),
                           max(r[t]['load_before'] for r in runs for t in ('fmops', 'alibi'))],
            'runs': runs}
        save()
    for case in ('shift', 'control'):
        for tool in ('fmops', 'fmops-drift'):
            runs = [sub(tool, case, 50_000, threads=a.threads) for _ in range(a.runs)]
            print(json.dumps({'case': f'50000-{case}', 'tool': tool, 'seconds': [round(r['seconds'], 3) for r in runs]}), file=sys.stderr, flush=True)
            doc[f'50000-{case}-{tool}'] = {'seconds_median': med([r['seconds'] for r in runs]), 'seconds_max': max(r['seconds'] for r in runs),
                                          'drift': sorted({r['drift'] for r in runs}), 'runs': runs}
            save()
    seeds = sub('seeds', 50_000, a.seeds, threads=a.threads)
    doc['50000-seeds'] = {case: {'p_values': seeds[case], 'drift': [p < ALPHA for p in seeds[case]]} for case in ('shift', 'control')}
    print(json.dumps(doc['50000-seeds']), file=sys.stderr, flush=True)
    return doc


def power(a) -> dict:
    sizes, shifts = [1000, 2000, 5000, 10000], [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4]
    curves, loads = {}, {}
    for n in sizes:
        t = time.perf_counter()
        curves[str(n)] = sub('power', n, ','.join(map(str, shifts)), a.reps, threads=a.threads)
        loads[str(n)] = curves[str(n)].pop('load_before')
        print(json.dumps({'n': n, 'power': curves[str(n)], 'seconds': round(time.perf_counter() - t, 1)}), file=sys.stderr, flush=True)
    # the smallest shift found at least 80% of the time, per size; at 50,000 by the 1/sqrt(n) rule from the largest size
    smallest = {n: next((s for s in shifts if curves[n][str(s)] >= 0.8), None) for n in curves}
    big = smallest[str(sizes[-1])]
    doc = {'sizes': sizes, 'shifts': shifts, 'reps': a.reps, 'power': curves, 'load_before': loads, 'smallest_shift_80': smallest,
           'smallest_shift_80_at_50000_by_sqrt_rule': None if big is None else big * np.sqrt(sizes[-1] / 50_000)}
    if a.figure:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=110)
        for n in sizes:
            ax.plot(shifts, [curves[str(n)][str(s)] for s in shifts], marker='o', label=f'{n:,} a side' + (' (the limit)' if n == 5000 else ''),
                    lw=2.5 if n == 5000 else 1.2)
        ax.axhline(0.8, color='grey', lw=0.8, ls=':'); ax.axhline(ALPHA, color='grey', lw=0.8, ls=':')
        ax.set_xlabel('mean shift along a 2-d subspace (per-coordinate spread)'); ax.set_ylabel(f'power at level {ALPHA}')
        ax.set_title(f'MMD permutation test (100 permutations), {a.reps} draws per point', fontsize=10)
        ax.legend(fontsize=8); fig.tight_layout(); fig.savefig(a.figure)
        doc['figure'] = a.figure
    return doc


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--threads', type=int, default=int(os.environ.get('BENCH_THREADS', '2')))
    p.add_argument('--seeds', type=int, default=10, help='seeds of the 50,000-row subsample decision (default 10)')
    p.add_argument('--power', action='store_true', help='the power study instead of the speed runs')
    p.add_argument('--reps', type=int, default=20, help='power: draws per point (default 20)')
    p.add_argument('--figure', help='power: write the figure (PNG) here')
    p.add_argument('--out')
    p.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        w = a.worker
        if w[0] == 'seeds':
            res = worker_seeds(int(w[1]), int(w[2]))
        elif w[0] == 'power':
            res = worker_power(int(w[1]), [float(s) for s in w[2].split(',')], int(w[3]))
        else:
            res = worker(w[0], w[1], int(w[2]))
        print(json.dumps(res, default=float))
        return
    from importlib.metadata import version
    env = {'python': sys.version.split()[0], 'cpus': os.cpu_count(), 'threads': a.threads, 'date': time.strftime('%Y-%m-%d'),
           'dim': DIM, 'shift': SHIFT, 'alpha': ALPHA, 'n_permutations': 100}
    for mod in ('fmops_nb', 'numpy', 'scipy', 'torch', 'alibi-detect'):
        try:
            env[mod] = version(mod)
        except Exception:
            env[mod] = None
    doc = {'environment': env, **(power(a) if a.power else speed(a))}
    if a.out:
        Path(a.out).write_text(json.dumps(doc, indent=2, default=float) + '\n')
    print(json.dumps({k: v for k, v in doc.items() if k != 'runs'}, indent=1, default=lambda o: float(o))[:6000])


if __name__ == '__main__':
    main()
