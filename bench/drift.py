"""Drift checks side by side: fmops_nb against Evidently, NannyML and alibi-detect (issues 3 and 13).

    python bench/drift.py                       # everything once (about 15 minutes on 2 cores)
    python bench/drift.py --skip evidently      # leave a peer out
    python bench/drift.py --rows 100000         # smaller table
    python bench/drift.py --only fmops,scipy,alibi,fmops-big --runs 5   # issue 13's table: medians, paired ratios

With --runs N every planned measurement runs N times, interleaved (run 1 of every tool, then run 2, ...), so that each
run of fmops_nb has the peers' runs of the same round next to it; the summary gives medians and the median of the
paired ratios (peer seconds / fmops seconds, round by round), and the load average seen by each run.

Needs the peers in the same environment (a separate venv is easiest, see bench/README.md):
    pip install -e . "evidently>=0.7,<0.8" "nannyml>=0.13" "alibi-detect[torch]>=0.13"

Each tool runs in its own process on the same inputs (generated in the process from fixed seeds): time is the detector's fit + score (imports and reading the files
are not counted, for any tool); peak RSS is the process's high-water mark during fit + score (reset just before it),
minus the process's RSS after imports and before reading the data — the memory the data and the computation take;
data_mb is what the loaded inputs hold, extra_mb what fit + score added on top of them.
Prints a JSON document and a markdown table; --out writes the JSON.
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

N_NUM, N_CAT, N_LEVELS = 20, 5, 12
PLANTED = ['n0', 'n1', 'n2', 'c0']  # mean shift 0.05 sd, scale x1.1, 5% mixture, x1.5 boost of three categories
ALPHA = 0.05


# --------------------------------------------------------------------------------------------------- data
def make_table(n: int, seed: int, planted: bool):
    import pandas as pd
    r = np.random.default_rng(seed)
    d = {f'n{i}': r.normal(size=n) for i in range(N_NUM)}
    levels = [f'k{i:02d}' for i in range(N_LEVELS)]
    p = np.ones(N_LEVELS) / N_LEVELS
    cats = {f'c{j}': r.choice(N_LEVELS, n, p=p) for j in range(N_CAT)}
    if planted:
        d['n0'] = d['n0'] + 0.05
        d['n1'] = d['n1'] * 1.1
        mix = r.random(n) < 0.05
        d['n2'] = np.where(mix, r.normal(2.0, 0.5, n), d['n2'])
        q = np.ones(N_LEVELS); q[:3] *= 1.5
        cats['c0'] = r.choice(N_LEVELS, n, p=q / q.sum())
    for k, v in cats.items():
        d[k] = pd.Categorical.from_codes(v, levels)
    return pd.DataFrame(d)


def make_embeddings(n: int, dim: int, seed: int, shift: float):
    """Embedding-like vectors: 32 latent factors through a fixed random map plus noise; the shift moves the mean along
    a 2-dimensional subspace by `shift` (in units of the per-coordinate spread)."""
    fixed = np.random.default_rng(1234)
    load = fixed.normal(size=(32, dim)) / np.sqrt(32)
    sub = np.linalg.qr(fixed.normal(size=(dim, 2)))[0].T  # 2 orthonormal directions
    r = np.random.default_rng(seed)
    x = r.normal(size=(n, 32)) @ load + 0.5 * r.normal(size=(n, dim))
    if shift:
        x = x + shift * np.sqrt(1.25) * sub.sum(0)
    return x.astype(np.float32)


def write_data(folder: Path, rows: int, emb_rows: int, dim: int, shift: float):
    (folder / 'sizes.json').write_text(json.dumps({'rows': rows, 'emb_rows': emb_rows, 'dim': dim, 'shift': shift}))


# --------------------------------------------------------------------------------------------------- measuring
def _status_kb(key: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(key + ':'):
            return int(line.split()[1])
    return 0


class Measure:
    """Wall time and peak RSS (VmHWM, reset through /proc/self/clear_refs) of a block."""
    def __enter__(self):
        Path('/proc/self/clear_refs').write_text('5')
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t
        self.peak_mb = _status_kb('VmHWM') / 1024


# --------------------------------------------------------------------------------------------------- tools
def tool_fmops(case, data, mode):
    from fmops_nb.drift import drift, DecisionRule
    import scipy.stats as ss, pyarrow.compute  # noqa: F401  (imports are not timed, for any tool)
    rule = DecisionRule() if mode == 'default' else DecisionRule(mode='p_value', correction='bonferroni')
    ref, cur = data
    with Measure() as m:
        rep = drift(ref, cur, rule=rule)
    # not timed: the binned KS statistic against scipy's exact one, on every numeric column
    err = max(abs(rep.columns[c].stats['ks'] - ss.ks_2samp(ref[c].to_numpy(), cur[c].to_numpy()).statistic)
              for c in ref.columns if c.startswith('n'))
    return m, rep.drifted, {'rule': rep.rule, 'ks_max_abs_error': float(err)}


def tool_fmops_big(case, data, mode):
    """fit on the 1M-row reference + score a current table of many rows (case 'big-<rows>'), p-value mode."""
    return tool_fmops(case, data, 'p_value')


def tool_scipy(case, data, _):
    import scipy.stats as ss
    ref, cur = data
    cols = list(ref.columns)
    with Measure() as m:
        p = {}
        for c in cols:
            if c.startswith('n'):
                p[c] = ss.ks_2samp(ref[c].to_numpy(), cur[c].to_numpy()).pvalue
            else:
                a = np.bincount(ref[c].cat.codes.to_numpy(), minlength=N_LEVELS)
                b = np.bincount(cur[c].cat.codes.to_numpy(), minlength=N_LEVELS)
                p[c] = ss.chi2_contingency(np.vstack([a, b]))[1]
        flagged = [c for c in cols if p[c] < ALPHA / len(cols)]
    return m, flagged, {'rule': 'KS / chi-squared, Bonferroni'}


def _codes(df):
    return np.column_stack([df[c].to_numpy() if c.startswith('n') else df[c].cat.codes.to_numpy() for c in df.columns]).astype(np.float32)


def tool_alibi_tabular(case, data, _):
    from alibi_detect.cd import TabularDrift
    ref, cur = data
    xr, xc = _codes(ref), _codes(cur)
    cols = list(ref.columns)
    cats = {i: None for i, c in enumerate(cols) if c.startswith('c')}
    with Measure() as m:
        cd = TabularDrift(xr, p_val=ALPHA, categories_per_feature=cats, correction='bonferroni')
        out = cd.predict(xc, drift_type='feature', return_p_val=True)
        pv = np.asarray(out['data']['p_val'])
        flagged = [cols[i] for i in np.flatnonzero(pv < ALPHA / len(cols))]
    return m, flagged, {'rule': 'TabularDrift: KS / chi-squared, Bonferroni'}


def tool_nannyml(case, data, _):
    import nannyml as nml
    ref, cur = data
    cols = list(ref.columns)
    with Measure() as m:
        calc = nml.UnivariateDriftCalculator(column_names=cols, treat_as_categorical=[c for c in cols if c.startswith('c')])
        calc.fit(ref)
        res = calc.calculate(cur).filter(period='analysis').to_df()
        flagged = [c for c in cols if any(res[(c, meth, 'alert')].any() for meth in ('jensen_shannon',) if (c, meth, 'alert') in res.columns)]
    return m, flagged, {'rule': 'UnivariateDriftCalculator defaults (Jensen-Shannon, 10 chunks, alert in any chunk)'}


def tool_evidently(case, data, _):
    os.environ.setdefault('DO_NOT_TRACK', '1'); os.environ.setdefault('EVIDENTLY_DISABLE_TELEMETRY', '1')
    from evidently import Report
    from evidently.presets import DataDriftPreset
    ref, cur = data
    with Measure() as m:
        snap = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        d = snap.dict()
        flagged = []
        for met in d['metrics']:
            cfg = met['config']
            if not cfg.get('type', '').endswith('ValueDrift'):
                continue
            is_p = 'p_value' in cfg['method']
            if (met['value'] < cfg['threshold']) if is_p else (met['value'] >= cfg['threshold']):
                flagged.append(cfg['column'])
    html_path = Path(tempfile.mkdtemp()) / 'evidently.html'
    snap.save_html(str(html_path))
    return m, flagged, {'rule': 'DataDriftPreset defaults', 'html_mb': round(html_path.stat().st_size / 2**20, 2)}


def tool_fmops_mmd(case, data, _):
    from fmops_nb.drift import drift
    import scipy.stats  # noqa: F401
    x, y = data
    with Measure() as m:
        rep = drift(x, y, n_permutations=100)
    c = rep.columns['embedding']
    return m, rep.drifted, {'p_value': c.p_value, 'mmd2': c.statistic, 'auc': c.stats['auc'], 'n_permutations': 100}


def tool_fmops_mmd_test_only(case, data, _):
    """Only the MMD permutation test (bandwidth included), as alibi's predict: no classifier, no directions."""
    from fmops_nb.embeddings import median_bandwidth, mmd_test
    x, y = data
    with Measure() as m:
        t = mmd_test(x, y, median_bandwidth(x), n_permutations=100)
    return m, ['embedding'] if t['p_value'] < ALPHA else [], {'p_value': t['p_value'], 'mmd2': t['mmd2']}


def tool_alibi_mmd(case, data, _):
    import torch
    from alibi_detect.cd import MMDDrift
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', '2')))
    x, y = data
    with Measure() as m:
        cd = MMDDrift(x, backend='pytorch', p_val=ALPHA, n_permutations=100)
        out = cd.predict(y)
    return m, ['embedding'] if out['data']['is_drift'] else [], {'p_value': float(out['data']['p_val']), 'n_permutations': 100}


def tool_magic(case, data, _):
    """`%fmops drift ref cur` in an IPython shell: the cell's time against the engine's, and the size of its output."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from fmops_nb.drift import drift
    import ipywidgets, scipy.stats, pyarrow.compute  # noqa: F401
    ref, cur = data
    ip = InteractiveShell.instance()
    ip.run_line_magic('load_ext', 'fmops_nb')
    ip.user_ns.update(ref=ref, cur=cur)
    drift(ref, cur)  # warm up, as the cell below runs second
    t = time.perf_counter(); drift(ref, cur); engine = time.perf_counter() - t
    with Measure() as m, capture_output() as out:
        res = ip.run_cell('report = %fmops drift ref cur', store_history=True)
    assert res.success, res.error_in_exec
    panel_states = 0
    for w in list(ipywidgets.Widget.widgets.values()) if hasattr(ipywidgets.Widget, 'widgets') else []:
        panel_states += len(json.dumps(w.get_state(), default=str))
    size = sum(len(json.dumps(o.data, default=str)) for o in out.outputs) + panel_states
    return m, ip.user_ns['report'].drifted, {'engine_seconds': round(engine, 3), 'cell_overhead_seconds': round(m.seconds - engine, 3),
                                             'output_kb': round(size / 1024, 1)}


def calibration(case, data, mode):
    from fmops_nb.drift import calibrate, DecisionRule
    import scipy.stats  # noqa: F401
    rule = DecisionRule() if mode == 'default' else DecisionRule(mode='p_value', correction='bonferroni')
    with Measure() as m:
        cal = calibrate(data[0], splits=10, rule=rule)
    worst = max(cal.columns.items(), key=lambda kv: kv[1]['false_alarm_rate'])
    return m, [k for k, v in cal.columns.items() if v['false_alarm_rate'] > 0], {
        'dataset_false_alarm_rate': cal.dataset_false_alarm_rate, 'splits': cal.splits, 'rule': cal.rule,
        'worst_column': worst[0], 'worst_rate': worst[1]['false_alarm_rate']}


TOOLS = {'fmops': tool_fmops, 'fmops-big': tool_fmops_big, 'scipy': tool_scipy, 'alibi': tool_alibi_tabular, 'nannyml': tool_nannyml, 'evidently': tool_evidently,
         'fmops-mmd': tool_fmops_mmd, 'fmops-mmd-test': tool_fmops_mmd_test_only, 'alibi-mmd': tool_alibi_mmd,
         'fmops-magic': tool_magic, 'fmops-calibrate': calibration}


def load_case(folder: Path, case: str):
    """The inputs of a case, generated in this process from fixed seeds (the same for every tool): no reader's buffers
    are left in the process to blur the memory figures."""
    rows, emb_rows, dim, shift = (json.loads((folder / 'sizes.json').read_text())[k] for k in ('rows', 'emb_rows', 'dim', 'shift'))
    if case in ('table', 'table-null'):
        return make_table(rows, 1, False), make_table(rows, 2 if case == 'table' else 3, case == 'table')
    if case == 'table-ref':
        return (make_table(rows, 1, False),)
    if case.startswith('big-'):  # the reference of table (a), a current table of many more rows
        return make_table(rows, 1, False), make_table(int(case[4:]), 2, True)
    x = make_embeddings(emb_rows, dim, 11, 0)
    if case == 'emb-ref':
        return ({'embedding': x},)
    return x, make_embeddings(emb_rows, dim, 12 if case == 'emb-shift' else 13, shift if case == 'emb-shift' else 0)


IMPORTS = {'fmops': ['fmops_nb.drift', 'scipy.stats', 'pyarrow.compute'],
           'fmops-big': ['fmops_nb.drift', 'scipy.stats', 'pyarrow.compute'], 'scipy': ['scipy.stats'], 'alibi': ['alibi_detect.cd', 'torch'],
           'nannyml': ['nannyml'], 'evidently': ['evidently', 'evidently.presets'], 'fmops-mmd': ['fmops_nb.drift', 'scipy.stats'],
           'fmops-mmd-test': ['fmops_nb.embeddings'], 'alibi-mmd': ['alibi_detect.cd', 'torch'],
           'fmops-magic': ['fmops_nb.drift', 'fmops_nb.widgets', 'fmops_nb.magics', 'IPython', 'scipy.stats', 'pyarrow.compute'],
           'fmops-calibrate': ['fmops_nb.drift', 'scipy.stats', 'pyarrow.compute']}


def worker(tool: str, case: str, mode: str, folder: Path):
    import importlib
    import warnings
    warnings.filterwarnings('ignore')
    os.environ.setdefault('DO_NOT_TRACK', '1')
    for mod in ['pandas', 'pyarrow.parquet', *IMPORTS[tool]]:  # imports are not counted, in time or memory, for any tool
        importlib.import_module(mod)
    import gc
    import pyarrow as pa
    base = _status_kb('VmRSS') / 1024
    data = load_case(folder, case)
    gc.collect()
    loaded = _status_kb('VmRSS') / 1024
    m, flagged, extra = TOOLS[tool](case, data, mode)
    print(json.dumps({'tool': tool, 'mode': mode, 'case': case, 'seconds': round(m.seconds, 3),
                      'load': [float(x) for x in Path('/proc/loadavg').read_text().split()[:3]],
                      'peak_rss_mb': round(m.peak_mb - base, 1),
                      'data_mb': round(loaded - base, 1), 'extra_mb': round(m.peak_mb - loaded, 1),
                      'flagged': sorted(flagged), **extra}, default=float))


PLAN = [  # (tool, case, mode, peer?)
    ('fmops', 'table', 'p_value', False), ('fmops', 'table', 'default', False), ('scipy', 'table', '-', False),
    ('alibi', 'table', '-', True), ('nannyml', 'table', '-', True), ('evidently', 'table', '-', True),
    ('fmops', 'table-null', 'p_value', False), ('fmops', 'table-null', 'default', False), ('scipy', 'table-null', '-', False),
    ('alibi', 'table-null', '-', True), ('nannyml', 'table-null', '-', True),
    ('fmops-magic', 'table', 'default', False),
    ('fmops-calibrate', 'table-ref', 'default', False), ('fmops-calibrate', 'table-ref', 'p_value', False),
    ('fmops-mmd-test', 'emb-shift', '-', False), ('fmops-mmd-test', 'emb-control', '-', False),
    ('fmops-mmd', 'emb-shift', '-', False), ('fmops-mmd', 'emb-control', '-', False),
    ('alibi-mmd', 'emb-shift', '-', True), ('alibi-mmd', 'emb-control', '-', True),
    ('fmops-calibrate', 'emb-ref', 'default', False),
    ('fmops-big', 'big-2000000', 'p_value', False), ('fmops-big', 'big-5000000', 'p_value', False),
    ('fmops-big', 'big-10000000', 'p_value', False),
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--rows', type=int, default=1_000_000)
    p.add_argument('--emb-rows', type=int, default=5000)
    p.add_argument('--dim', type=int, default=384)
    p.add_argument('--shift', type=float, default=0.3, help='embedding mean shift along a 2-d subspace, in sds (default 0.3)')
    p.add_argument('--skip', default='', help='comma-separated tools to leave out, e.g. evidently,nannyml')
    p.add_argument('--only', default='', help='comma-separated tools to run (default: all but --skip)')
    p.add_argument('--runs', type=int, default=1, help='rounds of every measurement, interleaved (default 1)')
    p.add_argument('--out', help='write the JSON results here')
    p.add_argument('--worker', nargs=4, metavar=('TOOL', 'CASE', 'MODE', 'DIR'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a.worker[0], a.worker[1], a.worker[2], Path(a.worker[3]))
    skip = {s.strip() for s in a.skip.split(',') if s.strip()}
    only = {s.strip() for s in a.only.split(',') if s.strip()}
    import platform
    env = {'python': platform.python_version(), 'cpus': os.cpu_count(), 'rows': a.rows, 'emb_rows': a.emb_rows, 'dim': a.dim,
           'shift': a.shift, 'date': time.strftime('%Y-%m-%d')}
    for mod in ('fmops_nb', 'numpy', 'scipy', 'pandas', 'evidently', 'nannyml', 'alibi_detect', 'torch'):
        try:
            from importlib.metadata import version
            env[mod] = version(mod.replace('_', '-')) if mod != 'alibi_detect' else version('alibi-detect')
        except Exception:
            env[mod] = None
    results = []
    with tempfile.TemporaryDirectory(prefix='fmops-bench-') as d:
        write_data(Path(d), a.rows, a.emb_rows, a.dim, a.shift)
        for rnd, (tool, case, mode, _) in ((r, x) for r in range(a.runs) for x in PLAN):
            if tool in skip or tool.split('-')[0] in skip or (only and tool not in only):
                continue
            r = subprocess.run([sys.executable, __file__, '--worker', tool, case, mode, d], capture_output=True, text=True,
                               env={**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '2'),
                                    'ARROW_DEFAULT_MEMORY_POOL': 'system'})  # freed arrow buffers go back to the OS
            if r.returncode != 0:
                res = {'tool': tool, 'case': case, 'mode': mode, 'error': r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f'exit {r.returncode}'}
            else:
                res = json.loads(r.stdout.strip().splitlines()[-1])
            res['round'] = rnd
            print(json.dumps(res), file=sys.stderr, flush=True)
            results.append(res)
    doc = {'environment': env, 'planted': PLANTED, 'results': results, 'summary': summary(results)}
    if a.out:
        Path(a.out).write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    print(table(doc))
    print(summary_table(doc['summary']))


def summary(results) -> list:
    """Per (tool, case, mode): the median seconds over the rounds, the spread, the load seen, and for a peer the median
    of its paired ratios to fmops_nb in the same mode-free comparison (p-value mode: same flags as the peers)."""
    ok = [r for r in results if 'error' not in r]
    keys = list(dict.fromkeys((r['tool'], r['case'], r['mode']) for r in ok))
    ours = {(r['case'], r['round']): r['seconds'] for r in ok if r['tool'] == 'fmops' and r['mode'] == 'p_value'}
    out = []
    for tool, case, mode in keys:
        rs = [r for r in ok if (r['tool'], r['case'], r['mode']) == (tool, case, mode)]
        secs = [r['seconds'] for r in rs]
        row = {'tool': tool, 'case': case, 'mode': mode, 'runs': len(rs), 'median_s': float(np.median(secs)),
               'min_s': min(secs), 'max_s': max(secs), 'load_1min': [r['load'][0] for r in rs if 'load' in r],
               'flagged_every_run': sorted(set.intersection(*(set(r['flagged']) for r in rs))),
               'flagged_any_run': sorted(set.union(*(set(r['flagged']) for r in rs)))}
        pairs = [r['seconds'] / ours[(case, r['round'])] for r in rs if (case, r['round']) in ours]
        if tool != 'fmops' and pairs:
            row['paired_ratio_to_fmops_median'] = float(np.median(pairs))
            row['paired_ratios'] = [round(x, 2) for x in pairs]
        if 'ks_max_abs_error' in rs[0]:
            row['ks_max_abs_error'] = max(r['ks_max_abs_error'] for r in rs)
        if 'peak_rss_mb' in rs[0]:
            row['extra_mb_median'] = float(np.median([r['extra_mb'] for r in rs]))
        out.append(row)
    return out


def summary_table(rows) -> str:
    lines = ['| tool | mode | case | runs | median s (min–max) | peer / fmops, paired median | flagged | load (1 min) |',
             '|---|---|---|---|---|---|---|---|']
    for r in rows:
        ratio = f"{r['paired_ratio_to_fmops_median']:.1f}× ({min(r['paired_ratios'])}–{max(r['paired_ratios'])})" \
            if 'paired_ratio_to_fmops_median' in r else ''
        load = f"{min(r['load_1min']):.1f}–{max(r['load_1min']):.1f}" if r['load_1min'] else ''
        lines.append(f"| {r['tool']} | {r['mode']} | {r['case']} | {r['runs']} | {r['median_s']:.3f} ({r['min_s']:.3f}–"
                     f"{r['max_s']:.3f}) | {ratio} | {', '.join(r['flagged_every_run']) or 'none'} | {load} |")
    return '\n'.join(lines)


def table(doc) -> str:
    planted = set(doc['planted'])
    lines = ['| tool | mode | case | seconds | peak RSS MB (data + extra) | flagged | note |', '|---|---|---|---|---|---|---|']
    for r in doc['results']:
        if 'error' in r:
            lines.append(f"| {r['tool']} | {r['mode']} | {r['case']} | - | - | error | {r['error'][:80]} |"); continue
        f = set(r['flagged'])
        if r['case'].startswith('table') and r['tool'] not in ('fmops-calibrate',):
            want = planted if r['case'] == 'table' else set()
            verdict = 'exactly the planted' if f == want and want else ('none' if not f and not want else
                      f"{len(f & want)}/{len(want)} planted + {len(f - want)} false")
        else:
            verdict = ', '.join(sorted(f)) or 'none'
        note = ', '.join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()
                         if k not in ('tool', 'mode', 'case', 'seconds', 'peak_rss_mb', 'data_mb', 'extra_mb', 'flagged', 'rule'))
        lines.append(f"| {r['tool']} | {r['mode']} | {r['case']} | {r['seconds']} | {r['peak_rss_mb']} ({r['data_mb']} + {r['extra_mb']}) | {verdict} | {note} |")
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
