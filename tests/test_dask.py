"""Drift on a Dask cluster (issue 17, item 1): the same report as the single-process engine, and clear failures.

A `LocalCluster` with two workers (threads of this process that talk to the scheduler over TCP on 127.0.0.1) is shared
by the module. The tests of killed workers start their own cluster of worker processes, so that a worker really dies.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import cloudpickle
import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster

from fmops_nb.dask_drift import drift_dask
from fmops_nb.drift import drift
from fmops_nb.errors import ExecutionError, ValidationError

cloudpickle.register_pickle_by_value(sys.modules[__name__]) # the functions below travel to worker processes
SMALL = dict(embedder='hashing', cache=False, max_rows=200, n_permutations=20) # a text model is not what is tested
CHEAP = ['amount', 'n_items', 'plan', 'flag', 'ts', 'id', 'odometer'] # no text or vectors: quick to compare


def frame(n: int, shift: float, seed: int) -> pd.DataFrame:
    "Every kind of column the drift engine compares (and an id it skips), in time order."
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        'amount': rng.gamma(2, 10 + shift, n),  # numeric, binned on quantiles
        'n_items': rng.integers(0, 5 + int(shift), n),  # few whole numbers: binned exactly
        'plan': rng.choice(['free', 'pro', 'team'], n, p=[.5 - shift / 20, .3, .2 + shift / 20]),  # categorical
        'flag': rng.random(n) < .3 + shift / 20,  # boolean
        'ts': pd.Timestamp('2026-01-01') + pd.to_timedelta(np.sort(rng.integers(0, 86400 * 4, n)), unit='s'),
        'id': np.arange(n) + int(seed * 1e6),  # an identifier: skipped with the reason, on both engines
        'odometer': np.cumsum(rng.gamma(1, 1, n)),  # rises through every partition: skipped, known across borders
        'note': [f"the customer wrote about item {i % 37} and the {'late' if i % (5 + int(shift)) else 'fast'} "
                 f"shipping" for i in rng.integers(0, 1000, n)],  # text
        'vec': list(rng.normal(shift / 10, 1, (n, 4))),  # embedding
    })


@pytest.fixture(scope='module')
def data():
    return frame(1500, 0, 1), frame(1500, 2, 2)


def partitioned(df: pd.DataFrame, n: int):
    "`df` as a dask DataFrame of `n` partitions in row order, object columns kept as objects (as `as_dask` does)."
    with dask.config.set({'dataframe.convert-string': False}):
        return dd.from_pandas(df, npartitions=n, sort=False)


@pytest.fixture(scope='module')
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol='tcp', host='127.0.0.1',
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield c


def same(a, b, path='report'):
    "Assert two reports' dicts are equal, value for value (NaN equal to NaN)."
    if isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for k in a: same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)): same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b): pass
    else: assert a == b, f"{path}: {a!r} != {b!r}"


def test_the_report_and_timeline_equal_the_single_process_ones(client, data):
    "Every kind of column, the whole window and a timeline per day: value for value the single-process report."
    ref, cur = data
    one = drift(ref, cur, chunk_by='ts', **SMALL)
    on_dask = drift_dask(ref, cur, chunk_by='ts', scheduler=client, partitions=3, **SMALL)
    same(on_dask.to_dict(), one.to_dict())
    assert {c.kind for c in on_dask.columns.values()} == {'numeric', 'categorical', 'boolean', 'text', 'embedding'}
    skipped = {q['column'] for q in on_dask.to_dict()['quality'] if q['check'] == 'skipped'}
    assert on_dask.drifted and skipped >= {'id', 'odometer'}  # the ids and the rising column: known across borders
    assert len(on_dask.chunks) == 4 and all(c['drifted'] for c in on_dask.chunks)


def test_a_timeline_by_row_count_and_a_dask_frame_input(client, data):
    ref, cur = data
    one = drift(ref, cur, columns=CHEAP, chunk_size=400)
    on_dask = drift_dask(partitioned(ref, 4), partitioned(cur, 3), columns=CHEAP, chunk_size=400, scheduler=client)
    same(on_dask.to_dict(), one.to_dict())
    assert len(on_dask.chunks) == 4


def test_parquet_folders_globs_and_urls(client, data, tmp_path):
    ref, cur = (d[CHEAP] for d in data)
    for name, df in (('ref', ref), ('cur', cur)):
        (tmp_path / name).mkdir()
        for i, s in enumerate(range(0, len(df), 600)): df.iloc[s:s + 600].to_parquet(tmp_path / name / f'{i}.parquet')
    one = drift(ref, cur, chunk_by='ts').to_dict()
    same(drift_dask(str(tmp_path / 'ref'), str(tmp_path / 'cur'), chunk_by='ts', scheduler=client).to_dict(), one)
    same(drift_dask(str(tmp_path / 'ref' / '*.parquet'), f"file://{tmp_path / 'cur'}", chunk_by='ts',
                    scheduler=client).to_dict(), one)


def test_a_source_that_does_not_know_its_row_counts(client, data):
    "Rows counted on the workers: the count pass brings the first rows, or (partition 0 empty) they are read after it."
    ref, cur = (d[CHEAP] for d in data)
    one = drift(ref, cur, chunk_size=400).to_dict()
    def unknown(df, cuts):  # from delayed pieces: dask cannot tell their row counts without computing them
        return dd.from_delayed([dask.delayed(df.iloc[a:b]) for a, b in zip(cuts, cuts[1:])], meta=df.head(0),
                               verify_meta=False)
    for cuts in ([0, 700, 1500], [0, 0, 900, 1500]):
        same(drift_dask(unknown(ref, cuts), unknown(cur, [0, 500, 1500]), chunk_size=400, scheduler=client).to_dict(),
             one)




@pytest.mark.slow
def test_drift_engine_dask_in_python_and_on_the_command_line(client, data, tmp_path):
    ref, cur = (d[CHEAP] for d in data)
    one = drift(ref, cur, chunk_by='ts').to_dict()
    same(drift(ref, cur, chunk_by='ts', engine='dask', scheduler=client).to_dict(), one)
    ref.to_parquet(tmp_path / 'ref.parquet')
    (tmp_path / 'cur').mkdir()
    for i, s in enumerate(range(0, len(cur), 500)): cur.iloc[s:s + 500].to_parquet(tmp_path / 'cur' / f'{i}.parquet')
    address = client.scheduler.address  # the module's cluster, reached from another process over TCP
    r = subprocess.run([sys.executable, '-m', 'fmops_nb.cli', 'drift', str(tmp_path / 'ref.parquet'),
                        str(tmp_path / 'cur'), '--chunk-by', 'ts', '--engine', 'dask', '--scheduler', address,
                        '--json'], capture_output=True, text=True, timeout=300,
                       env=os.environ | {'FMOPS_HOME': str(tmp_path / 'home'), 'FMOPS_PROGRESS': '0'})
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got['drifted_columns'] == one['drifted_columns'] and got['chunks'] == json.loads(json.dumps(one['chunks']))


@pytest.mark.hostile
def test_an_unreachable_scheduler_is_a_fast_error_naming_it(data):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(ExecutionError, match=f"Cannot reach the Dask scheduler at tcp://127.0.0.1:{port}"):
        drift_dask(*data, scheduler=f'tcp://127.0.0.1:{port}')
    assert time.monotonic() - t < 5
    with pytest.raises(ValidationError, match="not a Dask scheduler address"):
        drift_dask(*data, scheduler='my-laptop')


@pytest.mark.hostile
def test_partitions_that_disagree_on_the_schema(client, data, tmp_path):
    ref, cur = data
    (tmp_path / 'ref').mkdir()
    ref.iloc[:1000].to_parquet(tmp_path / 'ref' / 'a.parquet')
    odd = ref.iloc[1000:].copy(); odd['amount'] = odd['amount'].map('{:.2f}'.format)  # another job wrote text
    odd.to_parquet(tmp_path / 'ref' / 'b.parquet')
    with pytest.raises(ValidationError, match=r"Partition 1 of .*'amount' is str.*elsewhere float64"):
        drift_dask(str(tmp_path / 'ref'), cur, columns=['amount', 'plan'], scheduler=client)
    parts = [dask.delayed(ref.iloc[:1000]), dask.delayed(ref.iloc[1000:].drop(columns='plan'))]
    ddf = dd.from_delayed(parts, meta=ref.head(0), verify_meta=False)
    with pytest.raises(ValidationError, match=r"Partition 1 of the dask DataFrame has columns"):
        drift_dask(ddf, cur, columns=['amount', 'plan'], scheduler=client)


def _fail_in_second_half(pdf):
    if len(pdf) and pdf.index[0] >= 1000: raise RuntimeError("disk read error")
    return pdf


@pytest.mark.hostile
def test_a_failing_partition_fails_the_whole_call(client, data):
    ref, cur = data
    ddf = partitioned(ref, 4).map_partitions(_fail_in_second_half, meta=ref.head(0))
    with pytest.raises(ExecutionError, match="RuntimeError: disk read error. Nothing was merged"):
        drift_dask(ddf, cur, columns=['amount', 'plan'], scheduler=client)


def _die(pdf, marker: str, always: bool):
    "Kill this worker's process: once (the first partition to get here), or on every partition."
    if len(pdf) and not always:
        try: os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError: return pdf
    if len(pdf): os.kill(os.getpid(), signal.SIGKILL)
    return pdf


@pytest.fixture(scope='module')
def processes():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol='tcp', host='127.0.0.1',
                      dashboard_address=None) as cluster, Client(cluster) as c:
        yield cluster, c


@pytest.mark.slow
@pytest.mark.hostile
def test_a_killed_worker_leaves_the_answer_exact(processes, data, tmp_path):
    cluster, c = processes
    ref, cur = data
    ddf = partitioned(ref, 4).map_partitions(_die, str(tmp_path / 'died'), False, meta=ref.head(0))
    on_dask = drift_dask(ddf, cur, columns=CHEAP, scheduler=c)
    assert (tmp_path / 'died').exists()  # a worker was killed mid-computation, and Dask ran its partition again
    same(on_dask.to_dict(), drift(ref, cur, columns=CHEAP).to_dict())


@pytest.mark.slow
@pytest.mark.hostile
def test_workers_that_keep_dying_fail_the_call_clearly(processes, data, tmp_path):
    cluster, c = processes
    ref, cur = data
    cluster.scheduler.allowed_failures = 0  # no retry: the first death is final
    ddf = partitioned(ref, 2).map_partitions(_die, '', True, meta=ref.head(0))
    with pytest.raises(ExecutionError, match="Dask workers died while .* nothing was merged"):
        drift_dask(ddf, cur, columns=['amount', 'plan'], scheduler=c)
