"""Causal-LM fine-tune benchmark (issue 15): recipe sft-lora on the small generative model fmops_nb builds (`base: tinylm`).

    python bench/finetune_lm.py              # about 10 minutes on 2 idle cores (more on a busy machine)
    python bench/finetune_lm.py --pairs 6 --steps 40 --sft-steps 120
    python bench/finetune_lm.py --only learning --only generation --seeds 0 1 2 3 4   # issue 15's last two figures

1. throughput: tokens/s of sft-lora through `launch` (its own process, events, checkpoints, W&B history) against the
   same loop in this process (the worker's own `_build`, batches, optimizer and schedule, none of the bookkeeping), one
   torch thread each, interleaved in `--pairs` pairs (the order alternating). Each side is measured over the same steps
   (from the end of step `--skip` to the end of the last), on the same batches; each pair gives a ratio
   launcher/direct, and the figure is the median of the ratios. Target: within 3 % (ratio >= 0.97).
2. learning: one sft-lora run on prompt/response pairs (which standard-library module defines a name); the held-out
   loss of the response tokens of the candidate against its base's, on the same eval data. Target: at least 30 % lower.
   With --seeds 0 1 2 ... one run per seed, and the figure is the median drop.
3. generation diff: `fmops_nb.diff.generation_diff` of the base and the SFT result on 100 prompts (greedy,
   --tokens new tokens) against generating the same prompts with each version alone (`fmops_nb.lm.generate` on the
   versions loaded by the diff's own loader, the adapter merged in memory), `--reps` interleaved pairs, two ways:
   cold (every side starts with nothing loaded: both load the two versions) and warm (both find them loaded, as a
   second diff in a notebook does). Figure: the median of the paired ratios diff/alone, each way. Target: at most
   1.15x.

Writes bench/results/finetune_lm-<date>.json (or --out) and prints a table. Records the machine's load average.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

QUESTION_MODULES = ['json', 'csv', 'shutil', 'textwrap', 'random', 'string', 'heapq', 'bisect', 'base64', 'fnmatch',
                    'glob', 'copy', 'os.path', 'pathlib', 'tempfile', 'functools', 'itertools', 'statistics', 'zlib',
                    'hashlib', 'difflib', 'calendar', 'datetime', 'decimal', 'fractions', 'operator', 'pprint']


def questions():
    "Which module defines each public name: prompt 'Which module defines NAME? Answer:', response ' MODULE'."
    import pandas as pd
    rows = []
    for m in QUESTION_MODULES:
        mod = importlib.import_module(m)
        rows += [{'prompt': f"Which module defines {n}? Answer:", 'response': f" {m}"} for n, o in sorted(vars(mod).items())
                 if not n.startswith('_') and callable(o) and getattr(o, '__module__', '') == mod.__name__]
    return pd.DataFrame(rows).sample(frac=1, random_state=0).reset_index(drop=True)


def texts(n: int = 800):
    "Plain text for the throughput runs: docstrings of the standard library (the small model's own corpus)."
    import pandas as pd
    from fmops_nb.lm import corpus
    return pd.DataFrame({'text': corpus()[:n]})


def step_times(events: list) -> dict:
    "step -> the time its event was written (the end of the step)."
    return {e['step']: e['time'] for e in events if e.get('kind') == 'step'}


def rate(times: dict, tokens: list, skip: int) -> float:
    "Tokens per second from the end of step `skip` to the end of the last step (tokens[k-1] is step k's)."
    last = max(times)
    return sum(tokens[skip:last]) / (times[last] - times[skip])


def direct(folder: Path, steps: int) -> tuple[dict, list]:
    "The worker's training loop run plainly in this process on the run in `folder`: step end times and tokens a step."
    import torch
    from fmops_nb.finetune import FinetuneSpec, _Job, _batches, _build
    spec = FinetuneSpec(**json.loads((folder / 'spec.json').read_text()))
    job = _Job(folder, spec, json.loads((folder / 'run.json').read_text()))
    torch.set_num_threads(spec.threads)
    _build(job)
    times, tokens = {}, []
    for step in range(steps):
        idx = _batches(len(job.train[0]), spec.batch_size, spec.seed, 0, 1, step)
        batch = job.recipe.inputs(job, idx)
        out = job.model(**batch)
        out.loss.backward(); job.opt.step(); job.sched.step(); job.opt.zero_grad(set_to_none=True)
        times[step + 1] = time.time(); tokens.append(int(batch['attention_mask'].sum()))
    return times, tokens


def throughput(a, doc):
    from fmops_nb.finetune import launch
    spec = dict(base='tinylm', train=texts(), recipe='sft-lora', model='bench', max_steps=a.steps, batch_size=8,
                max_length=128, learning_rate=1e-3, threads=1, register=False, allow_duplicate=True)
    first = launch(**spec)
    assert first.wait(1200) == 'finished', first.tail(30)
    pairs = []
    for i in range(a.pairs):
        order = ('launcher', 'direct') if i % 2 == 0 else ('direct', 'launcher')
        got = {}
        for side in order:
            if side == 'launcher':
                r = launch(**spec)
                assert r.wait(1200) == 'finished', r.tail(30)
                got['launcher_times'] = step_times(r.events())
            else: got['direct_times'], got['tokens'] = direct(first.dir, a.steps)
        pair = {k: rate(got[f'{k}_times'], got['tokens'], a.skip) for k in ('launcher', 'direct')}
        pair['ratio'] = pair['launcher'] / pair['direct']
        pairs.append(pair)
        print(f"pair {i + 1}: launcher {pair['launcher']:.0f} tok/s, direct {pair['direct']:.0f} tok/s, "
              f"ratio {pair['ratio']:.3f}", file=sys.stderr, flush=True)
    doc['throughput'] = {'pairs': pairs, 'median_ratio': statistics.median(p['ratio'] for p in pairs),
                         'steps': a.steps, 'skip': a.skip, 'batch': 8, 'max_length': 128, 'threads': 1,
                         'tokens_per_step': statistics.mean(got['tokens'])}


def learning(a, doc):
    "One sft-lora run per seed of --seeds; the figure is the median drop. Returns the first seed's version."
    from fmops_nb.finetune import launch
    runs = []
    for seed in a.seeds:
        t = time.time()
        run = launch(base='tinylm', train=questions(), recipe='sft-lora', model='modlm', max_steps=a.sft_steps,
                     batch_size=8, max_length=32, learning_rate=a.lr, threads=1, max_new_tokens=4, seed=seed,
                     allow_duplicate=True)
        assert run.wait(1800) == 'finished', run.tail(30)
        cmp = run.info['comparison']
        before, after = cmp['reference']['eval_loss'], cmp['candidate']['eval_loss']
        runs.append({'seed': seed, 'seconds': round(time.time() - t, 1), 'steps': run.info['step'],
                     'against': cmp['against'], 'eval_loss_before': before, 'eval_loss_after': after,
                     'drop': 1 - after / before, 'reference': cmp['reference'], 'candidate': cmp['candidate'],
                     'sequences': run.info['sequences'], 'version': run.version})
        print(f"seed {seed}: held-out loss {before:.3f} -> {after:.3f} ({1 - after / before:.1%})", file=sys.stderr,
              flush=True)
    drops = [r['drop'] for r in runs]
    doc['learning'] = {'learning_rate': a.lr, 'steps': a.sft_steps, 'runs': runs, 'median_drop': statistics.median(drops),
                       'min_drop': min(drops), 'max_drop': max(drops),
                       'eval_loss_before': statistics.median(r['eval_loss_before'] for r in runs),
                       'eval_loss_after': statistics.median(r['eval_loss_after'] for r in runs)}
    return runs[0]['version']


def generation(a, doc, version):
    """Generation diff against generating alone, both ways of loading: `cold` (each side starts with no version loaded,
    so both pay for loading the two versions, the adapter merged) and `warm` (both find the versions loaded). Alone is
    what a diff generates: each version's greedy answers to the same prompts with the same budget and batches, the
    versions loaded by the same function the diff uses; the diff adds the perplexity pass, the similarity and the rows.
    """
    from fmops_nb import diff as D
    from fmops_nb.embeddings import embed_texts
    from fmops_nb.lm import generate
    from fmops_nb.registry import Registry
    reg = Registry(log=False)
    va, vb = reg.get('tinylm:v1'), reg.get(version)
    q = questions()
    prompts = list(q.prompt[:100])
    probe = D.PromptProbe(prompts, [r.strip() for r in q.response[:100]], name='modules')
    embed_texts(['warm up the embedder'], 'minilm', cache=False)  # its import is once per process, in neither figure

    def alone():
        for v in (va, vb): generate(D._version_lm(reg, v), prompts, a.tokens)

    def gdiff(): return D.generation_diff(reg, va, vb, probe, max_new_tokens=a.tokens)

    alone(); g = gdiff()  # first calls (imports, allocations): in neither figure
    out = {}
    for regime in ('cold', 'warm'):
        times = {'alone': [], 'diff': []}
        for i in range(a.reps):
            for side in (('alone', 'diff') if i % 2 == 0 else ('diff', 'alone')):
                D._VERSION_LMS.clear()
                if regime == 'warm':
                    for v in (va, vb): D._version_lm(reg, v)
                t = time.perf_counter()
                if side == 'alone': alone()
                else: g = gdiff()
                times[side].append(time.perf_counter() - t)
            print(f"{regime} rep {i + 1}: alone {times['alone'][-1]:.2f} s, diff {times['diff'][-1]:.2f} s",
                  file=sys.stderr, flush=True)
        ratios = [d / x for d, x in zip(times['diff'], times['alone'])]
        out[regime] = {'alone_s': times['alone'], 'diff_s': times['diff'], 'ratios': ratios,
                       'median_ratio': statistics.median(ratios), 'median_alone_s': statistics.median(times['alone']),
                       'median_diff_s': statistics.median(times['diff'])}
    doc['generation_diff'] = {'prompts': len(prompts), 'max_new_tokens': a.tokens, 'reps': a.reps, **out,
                              'ratio': max(out['cold']['median_ratio'], out['warm']['median_ratio']),
                              'agreement': g['agreement'], 'fixed': g['fixed'], 'broken': g['broken'],
                              'perplexity': g['perplexity'], 'version': version}


def main():
    os.environ.update(OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false', HF_HUB_OFFLINE='1')
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--pairs', type=int, default=6, help='interleaved launcher/direct pairs (at least 6 for the figure)')
    p.add_argument('--steps', type=int, default=40, help='steps of each throughput run')
    p.add_argument('--skip', type=int, default=5, help='steps left out at the start of each throughput run')
    p.add_argument('--sft-steps', type=int, default=120, help='steps of the learning run')
    p.add_argument('--lr', type=float, default=5e-3, help='learning rate of the learning run')
    p.add_argument('--tokens', type=int, default=32, help='new tokens per prompt in the generation diff (its default)')
    p.add_argument('--reps', type=int, default=6, help='interleaved pairs of the generation timing, each way of loading')
    p.add_argument('--seeds', type=int, nargs='+', default=[0], help='seeds of the learning runs (median of the drops)')
    p.add_argument('--version', help='an sft-lora version already registered in $FMOPS_HOME to diff: no learning run')
    p.add_argument('--only', choices=['throughput', 'learning', 'generation'], action='append',
                   help='run only these parts (generation needs learning)')
    p.add_argument('--out')
    a = p.parse_args()
    own = None if os.environ.get('FMOPS_HOME') else tempfile.mkdtemp(prefix='fmops-bench-ftlm-')
    if own: os.environ['FMOPS_HOME'] = own + '/.fmops'  # removed at the end: runs, versions, W&B files
    try: run(a)
    finally:
        if own: shutil.rmtree(own, ignore_errors=True)


def run(a):
    os.environ.setdefault('WANDB_MODE', 'offline')
    import torch
    torch.set_num_threads(1)
    from fmops_nb.lm import tiny_lm
    tiny_lm(threads=1)  # built once (FMOPS_CACHE), outside every figure
    parts = a.only or ['throughput', 'learning', 'generation']
    doc = {'date': time.strftime('%Y-%m-%d'), 'cpus': os.cpu_count(), 'load_before': os.getloadavg()}
    if 'throughput' in parts: throughput(a, doc)
    learned = learning(a, doc) if 'learning' in parts or ('generation' in parts and not a.version) else None
    if 'generation' in parts: generation(a, doc, a.version or learned)
    doc['load_after'] = os.getloadavg()
    out = Path(a.out or Path(__file__).parent / 'results' / f"finetune_lm-{doc['date']}.json")
    out.write_text(json.dumps(doc, indent=1) + '\n')
    rows = []
    if 'throughput' in doc:
        rows.append(('sft-lora tokens/s, launcher / one process (median of pairs)', f"{doc['throughput']['median_ratio']:.3f}",
                     '>= 0.97'))
    if 'learning' in doc:
        L = doc['learning']
        rows.append((f"held-out loss drop after SFT ({L['eval_loss_before']:.2f} -> {L['eval_loss_after']:.2f}; median of "
                     f"{len(L['runs'])} seeds, {L['min_drop']:.1%}-{L['max_drop']:.1%})", f"{L['median_drop']:.1%}",
                     '>= 30%'))
    if 'generation_diff' in doc:
        for regime in ('cold', 'warm'):
            G = doc['generation_diff'][regime]
            rows.append((f"generation diff / generating alone, 100 prompts x 2, {regime} (median of {len(G['ratios'])} "
                         f"pairs, {min(G['ratios']):.2f}-{max(G['ratios']):.2f})", f"{G['median_ratio']:.3f}x",
                         '<= 1.15x'))
    w = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(w)}  {'value':>8}  target")
    for name, value, target in rows: print(f"{name.ljust(w)}  {value:>8}  {target}")
    print(f"written to {out}; load average {doc['load_before'][0]:.1f} before, {doc['load_after'][0]:.1f} after")


if __name__ == '__main__':
    main()
