"""Causal-LM fine-tune benchmark (issue 15): recipe sft-lora on the small generative model fmops_nb builds (`base: tinylm`).

    python bench/finetune_lm.py              # about 10 minutes on 2 idle cores (more on a busy machine)
    python bench/finetune_lm.py --pairs 6 --steps 40 --sft-steps 120

1. throughput: tokens/s of sft-lora through `launch` (its own process, events, checkpoints, W&B history) against the
   same loop in this process (the worker's own `_build`, batches, optimizer and schedule, none of the bookkeeping), one
   torch thread each, interleaved in `--pairs` pairs (the order alternating). Each side is measured over the same steps
   (from the end of step `--skip` to the end of the last), on the same batches; each pair gives a ratio
   launcher/direct, and the figure is the median of the ratios. Target: within 3 % (ratio >= 0.97).
2. learning: one sft-lora run on prompt/response pairs (which standard-library module defines a name); the held-out
   loss of the response tokens of the candidate against its base's, on the same eval data. Target: at least 30 % lower.
3. generation diff: `fmops_nb.diff.generation_diff` of the base and the SFT result on 100 prompts (greedy,
   --tokens new tokens) against generating the same prompts with each version alone (`fmops_nb.lm.generate`, models
   loaded fresh each time), interleaved `--reps` times, medians. Target: at most 1.15x.

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
    from fmops_nb.finetune import launch
    t = time.time()
    run = launch(base='tinylm', train=questions(), recipe='sft-lora', model='modlm', max_steps=a.sft_steps,
                 batch_size=8, max_length=32, learning_rate=a.lr, threads=1, max_new_tokens=4, allow_duplicate=True)
    assert run.wait(1800) == 'finished', run.tail(30)
    cmp = run.info['comparison']
    before, after = cmp['reference']['eval_loss'], cmp['candidate']['eval_loss']
    doc['learning'] = {'seconds': round(time.time() - t, 1), 'steps': run.info['step'], 'learning_rate': a.lr,
                       'against': cmp['against'], 'eval_loss_before': before, 'eval_loss_after': after,
                       'drop': 1 - after / before, 'reference': cmp['reference'], 'candidate': cmp['candidate'],
                       'sequences': run.info['sequences'], 'version': run.version}
    return run.version


def generation(a, doc, version):
    from fmops_nb.diff import PromptProbe, _lm_folder, generation_diff
    from fmops_nb.embeddings import embed_texts
    from fmops_nb.lm import _LOADED, generate
    from fmops_nb.registry import Registry
    reg = Registry(log=False)
    va, vb = reg.get('tinylm:v1'), reg.get(version)
    q = questions()
    prompts = list(q.prompt[:100])
    probe = PromptProbe(prompts, [r.strip() for r in q.response[:100]], name='modules')
    embed_texts(['warm up the embedder'], 'minilm', cache=False)  # its import is once per process, in neither figure
    tmp = Path(tempfile.mkdtemp(prefix='fmops-bench-gen-'))
    folders = [_lm_folder(reg, va, tmp / 'a'), _lm_folder(reg, vb, tmp / 'b')]  # the adapter merged, as the diff does
    alone, diffs = [], []
    for i in range(a.reps):
        for side in (('alone', 'diff') if i % 2 == 0 else ('diff', 'alone')):
            t = time.perf_counter()
            if side == 'alone':
                for f in folders:
                    generate(f, prompts, a.tokens); _LOADED.pop(str(f.resolve()), None)
                alone.append(time.perf_counter() - t)
            else:
                g = generation_diff(reg, va, vb, probe, max_new_tokens=a.tokens)
                diffs.append(time.perf_counter() - t)
        print(f"rep {i + 1}: alone {alone[-1]:.1f} s, diff {diffs[-1]:.1f} s", file=sys.stderr, flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    doc['generation_diff'] = {'prompts': len(prompts), 'max_new_tokens': a.tokens, 'reps': a.reps,
                              'alone_s': alone, 'diff_s': diffs, 'ratio': statistics.median(diffs) / statistics.median(alone),
                              'agreement': g['agreement'], 'fixed': g['fixed'], 'broken': g['broken'],
                              'perplexity': g['perplexity']}


def main():
    os.environ.update(OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false', HF_HUB_OFFLINE='1')
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--pairs', type=int, default=6, help='interleaved launcher/direct pairs (at least 6 for the figure)')
    p.add_argument('--steps', type=int, default=40, help='steps of each throughput run')
    p.add_argument('--skip', type=int, default=5, help='steps left out at the start of each throughput run')
    p.add_argument('--sft-steps', type=int, default=120, help='steps of the learning run')
    p.add_argument('--lr', type=float, default=5e-3, help='learning rate of the learning run')
    p.add_argument('--tokens', type=int, default=32, help='new tokens per prompt in the generation diff (its default)')
    p.add_argument('--reps', type=int, default=3, help='interleaved repetitions of the generation timing')
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
    if 'learning' in parts or 'generation' in parts:
        version = learning(a, doc)
        if 'generation' in parts: generation(a, doc, version)
    doc['load_after'] = os.getloadavg()
    out = Path(a.out or Path(__file__).parent / 'results' / f"finetune_lm-{doc['date']}.json")
    out.write_text(json.dumps(doc, indent=1) + '\n')
    rows = []
    if 'throughput' in doc:
        rows.append(('sft-lora tokens/s, launcher / one process (median of pairs)', f"{doc['throughput']['median_ratio']:.3f}",
                     '>= 0.97'))
    if 'learning' in doc:
        L = doc['learning']
        rows.append((f"held-out loss drop after SFT ({L['eval_loss_before']:.2f} -> {L['eval_loss_after']:.2f})",
                     f"{L['drop']:.1%}", '>= 30%'))
    if 'generation_diff' in doc:
        rows.append(('generation diff time / generating alone (100 prompts x 2)', f"{doc['generation_diff']['ratio']:.3f}x",
                     '<= 1.15x'))
    w = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(w)}  {'value':>8}  target")
    for name, value, target in rows: print(f"{name.ljust(w)}  {value:>8}  {target}")
    print(f"written to {out}; load average {doc['load_before'][0]:.1f} before, {doc['load_after'][0]:.1f} after")


if __name__ == '__main__':
    main()
