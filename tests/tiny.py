"""Small real things several tests train or run."""
import json
import struct
import textwrap
import time

TRAIN_SCRIPT = textwrap.dedent("""
    import torch
    from fmops_nb.finetune import report, save_model
    w = torch.zeros(2, requires_grad=True); opt = torch.optim.SGD([w], lr=0.1)
    for step in range(1, 4):
        loss = ((w - 1) ** 2).sum(); loss.backward(); opt.step(); opt.zero_grad()
        report(step=step, loss=loss.item())
    save_model({'w': w})
""")  # a user's training script: three SGD steps on a 2-vector, then save_model

BOW_SCRIPT = textwrap.dedent('''
    """A user's training script: a bag-of-words text classifier (hashed words, one hidden layer), trained through the
    whole fmops script contract: settings and data from run_spec(), stop, checkpoints, resume, eval, reference, result."""
    import argparse, os, sys, zlib
    import pyarrow.parquet as pq, torch
    from fmops_nb.finetune import (run_spec, report, report_eval, stop_requested, save_checkpoint, latest_checkpoint,
                                   load_checkpoint, reference, save_model)
    ap = argparse.ArgumentParser()
    ap.add_argument("--buckets", type=int, default=4096)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--no-reference", action="store_true", help="do not evaluate the reference version")
    ap.add_argument("--ignore-stop", action="store_true", help="never ask stop_requested(): SIGTERM ends the script")
    args = ap.parse_args()
    spec = run_spec()
    torch.manual_seed(spec["seed"]); torch.set_num_threads(1)

    def split(path):
        t = pq.read_table(path).to_pydict()
        return t[spec["text_column"]], t[spec["label_column"]]

    def features(texts):
        x = torch.zeros(len(texts), args.buckets)
        for i, t in enumerate(texts):
            for w in t.lower().split(): x[i, zlib.crc32(w.encode()) % args.buckets] += 1.0
        return x

    def net():
        return torch.nn.Sequential(torch.nn.Linear(args.buckets, args.hidden), torch.nn.ReLU(),
                                   torch.nn.Linear(args.hidden, len(labels)))

    (tx, ty), (ex, ey) = split(spec["train"]), split(spec["eval"])
    labels = sorted(set(ty))
    X, Y = features(tx), torch.tensor([labels.index(y) for y in ty])
    EX, EY = features(ex), torch.tensor([labels.index(y) if y in labels else -100 for y in ey])
    model = net()
    opt = torch.optim.AdamW(model.parameters(), lr=spec["learning_rate"])
    step = 0
    if latest_checkpoint() is not None:  # a resume: continue where the last checkpoint left off
        state, optim = load_checkpoint()
        model.load_state_dict({k: v for k, v in state.items() if isinstance(v, torch.Tensor)})
        opt.load_state_dict(optim); step = state["step"]
    total = int(os.environ["FMOPS_TOTAL_STEPS"])
    while step < total:
        if not args.ignore_stop and stop_requested():
            save_checkpoint(model.state_dict(), step, opt.state_dict()); sys.exit(0)
        g = torch.Generator().manual_seed(spec["seed"] * 100_003 + step)  # the batch of a step: the same after a resume
        idx = torch.randint(len(tx), (spec["batch_size"],), generator=g)
        loss = torch.nn.functional.cross_entropy(model(X[idx]), Y[idx])
        loss.backward(); opt.step(); opt.zero_grad()
        step += 1
        report(step, loss=loss.item())
        if step % spec["checkpoint_every"] == 0: save_checkpoint(model.state_dict(), step, opt.state_dict())

    def evaluate(m):
        with torch.no_grad(): out = m(EX)
        return {"accuracy": (out.argmax(-1) == EY).float().mean().item(),
                "eval_loss": torch.nn.functional.cross_entropy(out, EY).item()}

    report_eval(step, **evaluate(model))
    vid, folder = reference()
    if vid is not None and not args.no_reference:  # production (or the base) on the same eval data, for the gate
        from safetensors.torch import load_file
        ref = net(); ref.load_state_dict(load_file(str(folder / "model.safetensors")))
        report_eval(step, version=vid, **evaluate(ref))
    save_model(model.state_dict())
''')  # run as recipe script: `train` with text and label columns; `--hidden`, `--buckets` through script_args

SEE_SCRIPT = textwrap.dedent('''
    """A user's script that only looks: it writes what the contract gave it into seen.json, and saves a small model."""
    import json, os, sys
    import pyarrow.parquet as pq, torch
    from fmops_nb.finetune import run_spec, run_dir, report, report_eval, save_model
    spec = run_spec()
    env = {k: v for k, v in os.environ.items() if k.startswith("FMOPS_")}
    cols = {k: {f.name: str(f.type) for f in pq.read_schema(spec[k])} for k in ("train", "eval") if spec[k]}
    rows = {k: pq.read_metadata(spec[k]).num_rows for k in ("train", "eval") if spec[k]}
    base = sorted(os.listdir(env["FMOPS_BASE"])) if "FMOPS_BASE" in env else None
    (run_dir() / "seen.json").write_text(json.dumps({"argv": sys.argv[1:], "env": env, "spec": spec, "columns": cols,
                                                     "rows": rows, "base": base}))
    report(1, loss=0.5)
    report_eval(1, score=0.75, error_rate=0.25)
    save_model({"w": torch.ones(3)})
''')  # run as recipe script: what a script is given, as the script sees it

DIST_SCRIPT = textwrap.dedent('''
    """A user's script under torchrun (nproc 2): the ranks train one 2-vector together; rank 0 reports and saves."""
    import torch, torch.distributed as dist
    from fmops_nb.finetune import run_spec, report, report_eval, save_model
    dist.init_process_group("gloo"); rank, world = dist.get_rank(), dist.get_world_size()
    spec = run_spec()
    w = torch.zeros(2, requires_grad=True); opt = torch.optim.SGD([w], lr=0.1)
    for step in range(1, spec["max_steps"] + 1):
        loss = ((w - (rank + 1)) ** 2).sum(); loss.backward()
        dist.all_reduce(w.grad); w.grad /= world  # the ranks agree on the mean gradient
        opt.step(); opt.zero_grad()
        if rank == 0: report(step, loss=loss.item(), world=world)
    if rank == 0:
        report_eval(spec["max_steps"], w_mean=w.mean().item()); save_model({"w": w})
    dist.destroy_process_group()
''')  # run as recipe script with nproc 2

WAIT_SCRIPT = textwrap.dedent('''
    """A user's script that reports its first step and then waits, checking stop_requested(), until it is stopped."""
    import time
    from fmops_nb.finetune import report, save_checkpoint, stop_requested
    report(1, loss=1.0)
    while not stop_requested(): time.sleep(0.05)
    save_checkpoint({"step_seen": 1}, 1)
''')  # run as recipe script: an active run that costs no CPU


def weights(path, values=(0.0, 1.0)):
    "A real (tiny) safetensors file: one float32 tensor `w` holding `values`."
    data = struct.pack(f"<{len(values)}f", *values)
    head = json.dumps({"w": {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, len(data)]}}).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + data)
    return path


def steps(run) -> list:
    "The steps a fine-tune run has reported, in order."
    return [e["step"] for e in run.events("step")]


def wait_for_step(run, n, timeout=300):
    "Wait until the run has reported step `n` (an event, not a fixed time)."
    from fmops_nb.finetune import FINAL
    deadline = time.time() + timeout
    while max(steps(run) or [0]) < n:
        assert run.status not in FINAL, (run.status, run.info.get("reason"), run.tail(30))
        assert time.time() < deadline, run.tail(30)
        time.sleep(0.05)


def template_notebook(path, parameters: str, *cells: str):
    "A report template at `path`: a `parameters`-tagged cell, then code cells, with a python3 kernelspec."
    import nbformat
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, *[nbformat.v4.new_code_cell(c) for c in cells]])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def isolated_env(home, mp):
    "Point FMOPS_HOME and every WANDB_*_DIR under `home` (W&B offline) through the monkeypatch `mp`."
    mp.setenv("FMOPS_HOME", str(home / ".fmops"))
    mp.setenv("WANDB_MODE", "offline"); mp.setenv("WANDB_SILENT", "true"); mp.setenv("WANDB_CONSOLE", "off")
    for var, sub in [("WANDB_DIR", ""), ("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_CONFIG_DIR", "config"), ("WANDB_ARTIFACT_DIR", "artifacts")]:
        mp.setenv(var, str(home / "wandb-env" / sub))
