"""Drift past one machine (issue 17, Targets): `drift(..., engine='dask')` on a `LocalCluster`.

    python bench/scale.py                              # the target: 100M rows x 25 columns per side (hours on 2 cores)
    python bench/scale.py --rows 4000000 --sample 1000000 --partition-rows 500000   # a smaller run (~5 min)
    python bench/scale.py --equality-only                                            # the 10M-row equality alone

The rows are generated per partition on the workers (`dask.dataframe.from_map`: nothing is generated on the client
or written to disk), 20 numeric and 5 categorical columns, reference and current from other seeds, four columns with
planted drift. It measures:

- throughput: rows per second (reference + current rows over the wall time of `drift_dask`) with 1 worker and with
  2 workers (one thread each, worker processes), the target being 2 workers >= 1.7x one;
- peak memory per worker: the high-water RSS of each worker process (a fresh cluster per measurement) at two row
  counts, the target being flat in the row count (a worker holds one partition at a time, not the data);
- equality: the flags (drifted columns, per-column status) of the Dask engine and of the single-process engine on a
  `--sample` of the same generator (the first partitions of both sides), the target being equal.

Prints a JSON document with the machine's load average before and after each measurement; --out writes it.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

N_NUM, N_CAT, N_LEVELS = 20, 5, 12
PLANTED = ['n0', 'n1', 'n2', 'c0']


def make_part(spec: tuple):
    "One partition of the table: (seed, partition number, rows, planted drift) -> pandas DataFrame."
    import pandas as pd
    seed, i, n, planted = spec
    r = np.random.default_rng([seed, i])
    d = {f'n{j}': r.normal(size=n) for j in range(N_NUM)}
    levels = [f'k{j:02d}' for j in range(N_LEVELS)]
    cats = {f'c{j}': r.choice(N_LEVELS, n) for j in range(N_CAT)}
    if planted:
        d['n0'] = d['n0'] + 0.05
        d['n1'] = d['n1'] * 1.1
        d['n2'] = np.where(r.random(n) < 0.05, r.normal(2.0, 0.5, n), d['n2'])
        q = np.ones(N_LEVELS); q[:3] *= 1.5
        cats['c0'] = r.choice(N_LEVELS, n, p=q / q.sum())
    for k, v in cats.items(): d[k] = pd.Categorical.from_codes(v, levels)
    return pd.DataFrame(d)


def specs(rows: int, part_rows: int, seed: int, planted: bool) -> list:
    return [(seed, i, min(part_rows, rows - s), planted) for i, s in enumerate(range(0, rows, part_rows))]


def table(rows: int, part_rows: int, seed: int, planted: bool):
    "The generated table as a dask DataFrame: each partition made on the worker that reads it."
    import dask.dataframe as dd
    sp = specs(rows, part_rows, seed, planted)
    return dd.from_map(make_part, sp, meta=make_part((seed, 0, 0, planted)), enforce_metadata=False)


def _watch_rss(dask_worker) -> float:
    "Start sampling this worker's RSS every 20 ms (its kernel high-water mark is inherited from the process that"
    " started it, so it cannot be used); returns the RSS now, in MB."
    import threading
    import psutil
    proc = psutil.Process()
    dask_worker.fmops_peak, dask_worker.fmops_watch = proc.memory_info().rss, True
    def loop():
        while dask_worker.fmops_watch:
            dask_worker.fmops_peak = max(dask_worker.fmops_peak, proc.memory_info().rss); time.sleep(0.02)
    threading.Thread(target=loop, daemon=True).start()
    return dask_worker.fmops_peak / 2**20


def _peak_rss(dask_worker) -> float:
    "Stop sampling; the highest RSS seen, in MB."
    dask_worker.fmops_watch = False
    return dask_worker.fmops_peak / 2**20


def run_dask(rows: int, part_rows: int, workers: int) -> dict:
    "drift_dask on a fresh LocalCluster of `workers` worker processes: seconds, rows/s, each worker's peak RSS."
    from distributed import Client, LocalCluster
    from fmops_nb.dask_drift import drift_dask
    load = os.getloadavg()[0]
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host='127.0.0.1',
                      dashboard_address=None, memory_limit=0) as cluster, Client(cluster) as client:
        client.run(lambda: __import__('fmops_nb.dask_drift')) # imports are not what is measured
        base = client.run(_watch_rss)
        t = time.perf_counter()
        rep = drift_dask(table(rows, part_rows, 1, False), table(rows, part_rows, 2, True), scheduler=client)
        secs = time.perf_counter() - t
        peak = client.run(_peak_rss)
    return {'rows': rows, 'workers': workers, 'seconds': round(secs, 2), 'rows_per_s': round(2 * rows / secs),
            'worker_peak_rss_mb': sorted(round(v) for v in peak.values()),
            'worker_rss_after_imports_mb': sorted(round(v) for v in base.values()),
            'drifted': rep.drifted, 'load_before': round(load, 2), 'load_after': round(os.getloadavg()[0], 2)}


def flags(rep) -> dict:
    return {'drifted': sorted(rep.drifted), 'status': {k: c.status for k, c in rep.columns.items()}}


def equality(rows: int, part_rows: int) -> dict:
    "Flags of the Dask engine and of the single-process engine on the same `rows` of the generator."
    import pandas as pd
    from distributed import Client, LocalCluster
    from fmops_nb.dask_drift import drift_dask
    from fmops_nb.drift import drift
    ref = pd.concat([make_part(s) for s in specs(rows, part_rows, 1, False)], ignore_index=True)
    cur = pd.concat([make_part(s) for s in specs(rows, part_rows, 2, True)], ignore_index=True)
    t = time.perf_counter(); one = drift(ref, cur); t_one = time.perf_counter() - t
    del ref, cur
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host='127.0.0.1', dashboard_address=None,
                      memory_limit=0) as cluster, Client(cluster) as client:
        t = time.perf_counter()
        on_dask = drift_dask(table(rows, part_rows, 1, False), table(rows, part_rows, 2, True), scheduler=client)
        t_dask = time.perf_counter() - t
    same_stats = all(on_dask.columns[k].statistic == c.statistic for k, c in one.columns.items())
    return {'rows': rows, 'flags_equal': flags(one) == flags(on_dask), 'statistics_equal': same_stats,
            'single_process_s': round(t_one, 2), 'dask_2_workers_s': round(t_dask, 2), 'flags': flags(on_dask),
            'planted': PLANTED}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rows', type=int, default=100_000_000, help='rows per side of the throughput runs')
    ap.add_argument('--sample', type=int, default=10_000_000, help='rows per side of the equality check')
    ap.add_argument('--partition-rows', type=int, default=1_000_000, help='rows per partition')
    ap.add_argument('--equality-only', action='store_true', help='only the equality check (on --sample rows)')
    ap.add_argument('--out', help='write the JSON document here')
    a = ap.parse_args()
    os.environ.setdefault('FMOPS_PROGRESS', '0')
    out = {'bench': 'scale-drift', 'columns': N_NUM + N_CAT, 'partition_rows': a.partition_rows,
           'cpus': os.cpu_count(), 'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    if not a.equality_only:
        runs = [run_dask(a.rows, a.partition_rows, 1), run_dask(a.rows, a.partition_rows, 2),
                run_dask(max(a.partition_rows, a.rows // 10), a.partition_rows, 2)]
        out['runs'] = runs
        out['speedup_2_vs_1'] = round(runs[1]['rows_per_s'] / runs[0]['rows_per_s'], 2)
        out['peak_rss_ratio_rows_vs_rows_over_10'] = round(max(runs[1]['worker_peak_rss_mb'])
                                                          / max(runs[2]['worker_peak_rss_mb']), 2)
    out['equality'] = equality(a.sample, a.partition_rows)
    text = json.dumps(out, indent=1)
    print(text)
    if a.out: open(a.out, 'w').write(text + '\n')


if __name__ == '__main__':
    main()
