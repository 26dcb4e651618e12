"""What work beside generation costs it, by where that work runs (issue 15: the generation diff's side thread).

The small LM (tinylm, one torch thread) generates 32 new tokens for 100 prompts, alone, then beside a loop of the
diff's own side work — perplexity passes over 100 texts, in the diff's old steps (batches of ~18 texts: six passes) or
its new ones (up to 16 MB of logits: two passes) — running in a second thread of the same process, or in a second
process forked from it (one torch thread too, no shared interpreter lock). A thread that only multiplies 512 x 512
matrices (long C calls, few lock handoffs) is the control. Each setting runs once per round, in the same order, for
`--reps` rounds; the figure is the median time of each, and its ratio to generating alone.
Run: FMOPS_HOME=... python bench/side_thread.py [--reps 7] [--version tinylm:v1] [--out FILE]
(any registered causal-LM version; `python bench/finetune_lm.py` registers tinylm:v1.)
"""
import argparse, json, multiprocessing as mp, os, statistics, sys, threading, time
from pathlib import Path

os.environ.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
sys.path.insert(0, str(Path(__file__).parent))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--version", default="tinylm:v1")
    p.add_argument("--out")
    a = p.parse_args()
    import torch
    from finetune_lm import questions
    from fmops_nb import diff as D
    from fmops_nb.lm import generate, perplexity
    from fmops_nb.registry import Registry
    torch.set_num_threads(1)
    lm = D._version_lm(Registry(log=False), Registry(log=False).get(a.version))
    q = questions()
    prompts = list(q.prompt[:100])
    texts = [x + " " + r.strip() for x, r in zip(q.prompt[:100], q.response[:100])]
    work = {"perplexity, six passes": lambda: perplexity(lm, texts),
            "perplexity, two passes (16 MB)": lambda: perplexity(lm, texts, logits_mb=16),
            "512 x 512 matmuls": lambda: [torch.randn(512, 512) @ torch.randn(512, 512) for _ in range(20)]}

    def loop(job, stop):
        while not stop.is_set(): job()

    def in_process(job, ready, stop):  # a forked child: one torch thread, like the parent
        torch.set_num_threads(1)
        ready.set()
        loop(job, stop)

    settings = [("alone", None, None)] + [(f"{w} in a thread", w, "thread") for w in work] + \
               [(f"{w} in a process", w, "process") for w in list(work)[:2]]
    generate(lm, prompts, 32)  # first call: allocations, in no figure
    times = {name: [] for name, _, _ in settings}
    load = [os.getloadavg()[0]]
    for _ in range(a.reps):
        for name, w, where in settings:
            if where == "thread":
                stop = threading.Event()
                side = threading.Thread(target=loop, args=(work[w], stop))
            elif where == "process":
                ctx = mp.get_context("fork")
                ready, stop = ctx.Event(), ctx.Event()
                side = ctx.Process(target=in_process, args=(work[w], ready, stop))
            if where:
                side.start()
                if where == "process": ready.wait()
                time.sleep(0.05)  # the side work under way
            t = time.perf_counter()
            generate(lm, prompts, 32)
            times[name].append(time.perf_counter() - t)
            if where: stop.set(); side.join()
        load.append(os.getloadavg()[0])
    alone = statistics.median(times["alone"])
    rows = {name: {"median_s": statistics.median(v), "ratio": statistics.median(v) / alone, "runs_s": v}
            for name, v in times.items()}
    for name, r in rows.items(): print(f"{name:45s} {r['median_s']:.3f} s  {r['ratio']:.3f}x", file=sys.stderr)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "version": a.version, "reps": a.reps,
           "prompts": len(prompts), "max_new_tokens": 32, "load_1min": load, "settings": rows}
    if a.out: Path(a.out).write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
