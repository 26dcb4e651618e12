"""Drift past one machine (issue 17, Targets): `drift(..., engine='dask')` on a `LocalCluster`.

    python bench/scale.py --runs 5 --out bench/results/scale-drift-DATE-100M.json   # the target: 100M rows per side
    python bench/scale.py --rows 10000000 --sample 2000000 --runs 5                  # a smaller run (minutes)
    python bench/scale.py --equality-only                                             # the 10M-row equality alone

The rows are generated per partition on the workers (`dask.dataframe.from_map`: nothing is generated on the client
or written to disk): 20 numeric columns (one standard-normal draw per partition, held as one block) and 5 categorical
columns of 12 levels, reference and current from other seeds, four columns with planted drift. A generated source does
not know its row counts, so the engine reads the reference three times (count, fit the bins, summarize) and the
current data once, and each read generates the partition again (a parquet dataset or in-memory data skips the count).
It measures:

- throughput: rows per second (reference + current rows over the wall time of `drift_dask`) with 1 worker and with
  2 workers (one thread each, worker processes, a fresh cluster per measurement), `--runs` pairs interleaved (1 then
  2, then 2 then 1, ...) so that the load of a shared machine falls on both alike; reported: the median seconds and
  rows/s per worker count, the paired ratios (2 workers' rows/s over 1 worker's, in the same pair), their median and
  spread. The target: 2 workers >= 1.7x one;
- peak memory per worker: the high-water RSS of each worker process (sampled every 20 ms) in every measurement, and in
  one 2-worker measurement per pair at `--small-rows` (default a tenth): the target is flat in the row count (a worker
  holds the partition it works on and the next one or two queued for it, not the data);
- where the time goes: the wall seconds of each pass (`phases`, in call order), and the CPU seconds of the workers
  and of this process (client and scheduler) over the measurement: on a quiet machine 2 workers finish in about
  worker CPU / 2, on a loaded one the other processes take the second core;
- equality: the flags (drifted columns, per-column status) and statistics of the Dask engine and of the
  single-process engine on a `--sample` of the same generator (the first partitions of both sides); the target: equal.

Prints progress to stderr and a JSON document (the 1-minute load average before and after each measurement) to
stdout; --out writes it too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

N_NUM, N_CAT, N_LEVELS = 20, 5, 12
PLANTED = ['n0', 'n1', 'n2', 'c0']


def make_part(spec: tuple):
    "One partition of the table: (seed, partition number, rows, planted drift) -> pandas DataFrame."
    import pandas as pd
    seed, i, n, planted = spec
    r = np.random.default_rng([seed, i])
    x = r.standard_normal((N_NUM, n)) # one draw, one block: the frame holds it as it is (no copy per column)
    levels = [f'k{j:02d}' for j in range(N_LEVELS)]
    cats = {f'c{j}': r.choice(N_LEVELS, n) for j in range(N_CAT)}
    if planted:
        x[0] += 0.05
        x[1] *= 1.1
        x[2] = np.where(r.random(n) < 0.05, r.normal(2.0, 0.5, n), x[2])
        q = np.ones(N_LEVELS); q[:3] *= 1.5
        cats['c0'] = r.choice(N_LEVELS, n, p=q / q.sum())
    df = pd.DataFrame(x.T, columns=[f'n{j}' for j in range(N_NUM)], copy=False)
    for k, v in cats.items(): df[k] = pd.Categorical.from_codes(v, levels)
    return df


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


def _cpu_s(dask_worker=None) -> float:
    "CPU seconds (user + system) this process has used: with the wall time, how busy the workers were."
    import psutil
    t = psutil.Process().cpu_times()
    return t.user + t.system


PHASES = [] # (pass, partitions, seconds) of the measurement running


def _timed_passes():
    "Time every pass the Dask engine makes (its `_each`, on the client): where the time goes, not what it computes."
    import fmops_nb.dask_drift as dk
    each = dk._each
    def timed(client, ddf, fn, what, *a, **k):
        t, n = time.perf_counter(), 0
        for x in each(client, ddf, fn, what, *a, **k): n += 1; yield x
        PHASES.append({'pass': what, 'partitions': n, 'seconds': round(time.perf_counter() - t, 2)})
    dk._each = timed


def run_dask(rows: int, part_rows: int, workers: int) -> dict:
    "drift_dask on a fresh LocalCluster of `workers` worker processes: seconds, rows/s, each worker's peak RSS."
    from distributed import Client, LocalCluster
    from fmops_nb.dask_drift import drift_dask
    load = os.getloadavg()[0]
    PHASES.clear()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host='127.0.0.1',
                      dashboard_address=None, memory_limit=0) as cluster, Client(cluster) as client:
        client.run(lambda: __import__('fmops_nb.dask_drift')) # imports are not what is measured
        base = client.run(_watch_rss)
        cpu0, mine0 = client.run(_cpu_s), _cpu_s()
        t = time.perf_counter()
        rep = drift_dask(table(rows, part_rows, 1, False), table(rows, part_rows, 2, True), scheduler=client)
        secs = time.perf_counter() - t
        cpu1, mine1 = client.run(_cpu_s), _cpu_s()
        peak = client.run(_peak_rss)
    out = {'rows': rows, 'workers': workers, 'seconds': round(secs, 2), 'rows_per_s': round(2 * rows / secs),
           'worker_peak_rss_mb': sorted(round(v) for v in peak.values()),
           'worker_rss_after_imports_mb': sorted(round(v) for v in base.values()),
           'worker_cpu_s': round(sum(cpu1.values()) - sum(cpu0.values()), 1), 'client_cpu_s': round(mine1 - mine0, 1),
           'phases': list(PHASES), 'drifted': rep.drifted, 'load_before': round(load, 2),
           'load_after': round(os.getloadavg()[0], 2)}
    print(f"{time.strftime('%H:%M:%S')} {rows:,} rows, {workers} worker(s): {secs:.1f} s, peak RSS "
          f"{out['worker_peak_rss_mb']} MB, load {out['load_before']} -> {out['load_after']}", file=sys.stderr)
    return out


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
    out = {'rows': rows, 'flags_equal': flags(one) == flags(on_dask), 'statistics_equal': same_stats,
           'single_process_s': round(t_one, 2), 'dask_2_workers_s': round(t_dask, 2), 'flags': flags(on_dask),
           'planted': PLANTED}
    print(f"{time.strftime('%H:%M:%S')} equality on {rows:,} rows: flags equal {out['flags_equal']}, statistics "
          f"equal {same_stats}", file=sys.stderr)
    return out


def summary(runs: list, small: list) -> dict:
    "Medians per worker count, the paired ratios, and peak RSS per worker at the two row counts."
    med = lambda xs: round(statistics.median(xs), 2)
    by = {w: [r for r in runs if r['workers'] == w] for w in (1, 2)}
    ratios = [round(b['rows_per_s'] / a['rows_per_s'], 3) for a, b in zip(by[1], by[2])] # pair i: i-th of each
    big2 = [max(r['worker_peak_rss_mb']) for r in by[2]]
    small2 = [max(r['worker_peak_rss_mb']) for r in small]
    return {'seconds_median': {w: med([r['seconds'] for r in rs]) for w, rs in by.items()},
            'rows_per_s_median': {w: round(statistics.median([r['rows_per_s'] for r in rs])) for w, rs in by.items()},
            'paired_ratios_2_vs_1': ratios, 'speedup_2_vs_1_median_of_pairs': med(ratios),
            'speedup_spread': [min(ratios), max(ratios)],
            'peak_rss_per_worker_mb_median': {'rows': med([x for r in runs for x in r['worker_peak_rss_mb']]),
                                              'rows_2_workers_max': med(big2), 'small_rows_2_workers_max': med(small2)},
            'peak_rss_ratio_rows_vs_small_rows': round(statistics.median(big2) / statistics.median(small2), 2),
            'load_range': [min(r['load_before'] for r in runs + small), max(r['load_after'] for r in runs + small)]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rows', type=int, default=100_000_000, help='rows per side of the throughput runs')
    ap.add_argument('--small-rows', type=int, help='rows per side of the second memory point (default: rows / 10)')
    ap.add_argument('--runs', type=int, default=5, help='interleaved pairs of 1-worker and 2-worker measurements')
    ap.add_argument('--sample', type=int, default=10_000_000, help='rows per side of the equality check (0: none)')
    ap.add_argument('--partition-rows', type=int, default=1_000_000, help='rows per partition')
    ap.add_argument('--equality-only', action='store_true', help='only the equality check (on --sample rows)')
    ap.add_argument('--out', help='write the JSON document here')
    a = ap.parse_args()
    if a.runs < 1 or a.rows < 1 or a.partition_rows < 1: ap.error('--runs, --rows and --partition-rows must be >= 1')
    os.environ.setdefault('FMOPS_PROGRESS', '0')
    small_rows = a.small_rows or max(a.partition_rows, a.rows // 10)
    out = {'bench': 'scale-drift', 'columns': N_NUM + N_CAT, 'rows': a.rows, 'small_rows': small_rows,
           'partition_rows': a.partition_rows, 'cpus': os.cpu_count(), 'load_at_start': os.getloadavg(),
           'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}
    if not a.equality_only:
        _timed_passes()
        runs, small = [], []
        for i in range(a.runs): # 1 then 2, 2 then 1, ...: a trend in the load weighs on both
            for w in ((1, 2) if i % 2 == 0 else (2, 1)):
                runs.append(run_dask(a.rows, a.partition_rows, w) | {'pair': i})
            small.append(run_dask(small_rows, a.partition_rows, 2) | {'pair': i})
        out |= {'runs': runs, 'small_runs': small, 'summary': summary(runs, small)}
    if a.sample: out['equality'] = equality(a.sample, a.partition_rows)
    out['finished'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    text = json.dumps(out, indent=1)
    print(text)
    if a.out: open(a.out, 'w').write(text + '\n')


if __name__ == '__main__':
    main()
