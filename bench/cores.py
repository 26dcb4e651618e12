"""What a second core gives on this machine: the ceiling for every "2 workers vs 1" or "work beside generation" target.

    python bench/cores.py --pairs 7 --out bench/results/cores-DATE.json

Runs the same fixed piece of work in one process alone, then in two processes at once (each with one thread), in
interleaved pairs (alone then both, then both then alone, ...), for three kinds of work: pure Python (the interpreter,
as a Dask scheduler or a tokenizer loop), numpy (drawing normals and counting them into a grid, as the drift engine
does) and torch (a small float32 matmul chain on one thread, as generating with a small model does). Reports, per kind,
the throughput of two processes over one (2 x seconds alone / seconds of the pair: 2.0 is a perfect second core) and
how much the work alone slows when another process runs beside it (seconds in the pair / seconds alone), medians of
the paired ratios with their spread, and the 1-minute load average before and after. Prints JSON; --out writes it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORK = { # kind -> (setup, the timed work)
    'python': ("", "s = 0\nfor i in range(8_000_000): s += i * i"),
    'numpy': ("import numpy as np\nr = np.random.default_rng(0)",
              "for _ in range(10):\n"
              "    x = r.standard_normal(4_000_000)\n"
              "    np.bincount(((x + 5) * 100).astype(np.int32).clip(0, 999), minlength=1000)"),
    'torch': ("import torch\ntorch.set_num_threads(1)\nw = torch.randn(256, 256)\nx = torch.randn(64, 256)",
              "for _ in range(6000): x = torch.tanh(x @ w); x = x / (x.norm() + 1)"),
}


def _child(kind: str) -> list[str]:
    "A child interpreter that times its own work (start and imports left out) and prints the seconds."
    setup, work = WORK[kind]
    return [sys.executable, '-c', f"import time\n{setup}\nt = time.perf_counter()\n{work}\nprint(time.perf_counter() - t)"]


def run(kind: str, n: int) -> list[float]:
    "Start `n` processes doing the work at once; the seconds each took for its work."
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'OPENBLAS_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    ps = [subprocess.Popen(_child(kind), stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    return [float(p.communicate()[0]) for p in ps]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--pairs', type=int, default=7, help='interleaved pairs per kind of work (at least 5)')
    ap.add_argument('--kinds', nargs='*', default=list(WORK), choices=list(WORK))
    ap.add_argument('--out', help='write the JSON document here')
    a = ap.parse_args(argv)
    doc = {'bench': 'cores', 'cpus': os.cpu_count(), 'pairs': a.pairs, 'load_before': os.getloadavg()[0],
           'started': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), 'kinds': {}}
    for kind in a.kinds:
        throughput, slowdown, alone_s = [], [], []
        for i in range(a.pairs):
            order = (1, 2) if i % 2 == 0 else (2, 1)
            got = {n: run(kind, n) for n in order}
            alone, both = got[1][0], got[2]
            throughput.append(2 * alone / max(both)); slowdown.append(statistics.mean(both) / alone)
            alone_s.append(alone)
            print(f"{kind} pair {i + 1}: alone {alone:.2f} s, two at once {both[0]:.2f} / {both[1]:.2f} s",
                  file=sys.stderr)
        doc['kinds'][kind] = {
            'seconds_alone_median': round(statistics.median(alone_s), 3),
            'throughput_2_vs_1_median': round(statistics.median(throughput), 3),
            'throughput_2_vs_1': [round(x, 3) for x in throughput],
            'slowdown_beside_another_median': round(statistics.median(slowdown), 3),
            'slowdown_beside_another': [round(x, 3) for x in slowdown]}
    doc['load_after'] = os.getloadavg()[0]
    text = json.dumps(doc, indent=1)
    print(text)
    if a.out: open(a.out, 'w').write(text + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
