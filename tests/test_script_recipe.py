"""The user-script contract (recipe `script`), with real scripts: a bag-of-words text classifier trained on
standard-library docstrings is stopped, resumed, put through the eval gate and registered with its lineage, as one
W&B run; what a script is given (data as files, settings, base, command line); torchrun; one run per spec."""
import json
import math
import re
import shutil
import subprocess

import pandas as pd
import pytest

from stdlib_text import docstrings
from tiny import BOW_SCRIPT, DIST_SCRIPT, SEE_SCRIPT, WAIT_SCRIPT, steps, wait_for_step

from fmops_nb.data import load
from fmops_nb.errors import ValidationError
from fmops_nb.finetune import FinetuneSpec, get_run, launch, runs
from fmops_nb.registry import Registry
from fmops_nb.tracking import find_runs, read_run

slow = pytest.mark.slow  # training scripts in background processes: the full tier only

MODULES = ["json", "csv", "pathlib", "shutil", "asyncio.tasks", "asyncio.locks", "threading"]
DATA = pd.DataFrame(docstrings(MODULES, words=30), columns=["text", "label"])


@pytest.fixture
def bow(tmp_path):
    p = tmp_path / "train_bow.py"
    p.write_text(BOW_SCRIPT)
    return p


def bow_spec(script, **kw):
    # --hidden 1024: a step costs tens of milliseconds or more, so a run of 100 steps is still going when it is stopped
    return dict(base="", recipe="script", script=str(script), script_args=["--hidden", 1024], train=DATA, model="bow",
                batch_size=32, learning_rate=3e-3, checkpoint_every=10, seed=0) | kw




def fmops(*args):
    return subprocess.run([shutil.which("fmops"), *args], capture_output=True, text=True, timeout=300)


def wandb_segments(run):
    "The W&B run files this fine-tune wrote, oldest first: one per start of its process."
    return [r for r in map(read_run, find_runs()) if r.job_type == "finetune" and r.config.get("run_id") == run.id]


@slow
def test_a_script_run_stops_resumes_and_registers_with_lineage_gate_and_one_wandb_run(bow):
    reg = Registry(log=False)
    first = launch(**bow_spec(bow, max_steps=2, learning_rate=1e-4))  # a weak model, made production by hand
    assert first.wait(300) == "finished", first.tail(30)
    assert "comparison" not in first.info  # no production, no base: nothing to compare with
    reg.promote(first.version, to="production", reason="the first model")

    run = launch(**bow_spec(bow, max_steps=200, promote_if_better="accuracy"))
    wait_for_step(run, 3)
    stop = fmops("finetune", "stop", run.id)
    assert stop.returncode == 0 and stop.stdout.strip() == f"{run.id}: stopped", stop.stdout + stop.stderr
    ck = run.info["step"]
    assert run.info["reason"] == "stopped by request" and 3 <= ck < 200
    assert (run.dir / "checkpoints" / f"step-{ck:06d}").is_dir() and steps(run)[-1] == ck  # it checkpointed as it stopped
    (listed,) = [r for r in json.loads(fmops("finetune", "ls", "--json").stdout) if r["id"] == run.id]
    assert (listed["status"], listed["step"], listed["total_steps"]) == ("stopped", ck, 200)
    assert run.version is None and reg.get("bow:production").id == first.version

    resumed = fmops("finetune", "resume", run.id)
    assert resumed.returncode == 0 and f"Resumed {run.id} from step {ck}" in resumed.stdout, resumed.stderr
    assert run.wait(300) == "finished", run.tail(30)
    assert steps(run) == list(range(1, 201))  # every step once: the resume continued from the stop
    assert [e["step"] for e in run.events("resume")] == [ck] and run.info["step"] == 200

    # lineage, as a built-in recipe's result has it
    v = reg.get(run.version)
    assert v.id == "bow:v2" and v.meta["run_id"] == run.id and v.format == "safetensors"
    for split in ("train", "eval"):
        fp = v.meta["data"][split]
        assert fp["fingerprint"] == load(run.dir / f"{split}.parquet").fingerprint() == run.meta["fingerprints"][split]["fingerprint"]
    assert v.meta["data"]["train"]["rows"] + v.meta["data"]["eval"]["rows"] == len(DATA)
    cfg = v.meta["config"]
    assert (cfg["recipe"], cfg["learning_rate"], cfg["max_steps"], cfg["script_args"]) == ("script", 3e-3, 200, ["--hidden", "1024"])
    assert len(cfg["script_sha256"]) == 64
    (cand,) = [e for e in run.events("eval") if e["version"] == "candidate"]
    assert v.metrics["accuracy"] == {"value": cand["accuracy"], "direction": "higher"}
    assert v.metrics["eval_loss"] == {"value": cand["eval_loss"], "direction": "lower"}

    # the gate: the script evaluated production on the same eval data, and the better candidate was promoted
    cmp = run.info["comparison"]
    assert cmp["against"] == "bow:production"
    assert cmp["reference"]["accuracy"] == reg.get(first.version).metrics["accuracy"]["value"]  # the same data, the same model
    assert cmp["candidate"]["accuracy"] > cmp["reference"]["accuracy"] and run.info["promoted"] is True
    assert reg.get("bow:production").id == v.id and sorted(v.aliases) == ["candidate", "production"]

    # one W&B run across the stop and the resume: two run files (one per start) under one id
    seg = wandb_segments(run)
    assert len(seg) == 2 and {r.id for r in seg} == {run.meta["wandb_id"]}
    rows = [h for r in seg for h in r.history if "loss" in h]
    assert [h["_step"] for h in rows] == list(range(1, 201))
    assert [h["loss"] for h in rows] == [e["loss"] for e in run.events("step")]
    assert [r.exit_code for r in seg] == [0, 0] and seg[0].config["recipe"] == "script"
    assert seg[1].summary["candidate/accuracy"] == cand["accuracy"]
    assert seg[1].summary["reference/accuracy"] == cmp["reference"]["accuracy"]


@slow
def test_a_script_that_never_asks_is_still_stopped_and_resumable(bow):
    "A script that never calls stop_requested() is ended by the stop's SIGTERM: the run is stopped at its last checkpoint."
    run = launch(**bow_spec(bow, max_steps=100, checkpoint_every=5, script_args=["--hidden", 1024, "--ignore-stop"]))
    wait_for_step(run, 7)
    assert run.stop(120) == "stopped", run.tail(30)
    ck = run.info["step"]
    assert run.info["reason"] == "stopped by request" and ck % 5 == 0 and 5 <= ck <= steps(run)[-1]
    run.resume()
    assert run.wait(300) == "finished", run.tail(30)
    evs = run.events()
    at = next(i for i, e in enumerate(evs) if e["kind"] == "resume")
    before, after = ([e["step"] for e in part if e["kind"] == "step"] for part in (evs[:at], evs[at:]))
    assert before == list(range(1, len(before) + 1)) and after == list(range(ck + 1, 101))  # the steps after the checkpoint, again
    assert len({r.id for r in wandb_segments(run)}) == 1


@slow
def test_the_time_budget_stops_a_script_run(bow):
    run = launch(**bow_spec(bow, max_steps=1_000_000, time_budget_s=2, script_args=["--hidden", 64]))
    assert run.wait(300) == "stopped", run.tail(30)
    assert run.info["reason"] == "time budget spent" and run.info["step"] == steps(run)[-1] > 0
    assert run.version is None


@slow
def test_without_a_reference_report_the_gate_uses_productions_metrics_on_the_same_eval_data(bow):
    reg = Registry(log=False)
    first = launch(**bow_spec(bow, max_steps=2, learning_rate=1e-4, script_args=["--hidden", 64]))
    assert first.wait(300) == "finished", first.tail(30)
    reg.promote(first.version, to="production", reason="the first model")
    better = launch(**bow_spec(bow, max_steps=60, promote_if_better="accuracy",
                               script_args=["--hidden", 64, "--no-reference"]))
    assert better.wait(300) == "finished", better.tail(30)
    cmp = better.info["comparison"]
    recorded = {k: m["value"] for k, m in reg.get(first.version).metrics.items()}
    assert cmp["reference"] == recorded and not [e for e in better.events("eval") if e["version"] != "candidate"]
    assert better.info["promoted"] is True and reg.get("bow:production").id == better.version
    # eval data of its own: production's metrics were measured on other data, so nothing is compared or promoted
    other = launch(**bow_spec(bow, max_steps=60, eval=DATA.head(20), promote_if_better="accuracy",
                              script_args=["--hidden", 64, "--no-reference"]))
    assert other.wait(300) == "finished", other.tail(30)
    assert other.info["comparison"]["reference"] == {}
    assert other.info["promoted"] == "not promoted: bow:production has no 'accuracy' to compare"
    assert reg.get("bow:production").id == better.version and reg.get("bow:candidate").id == other.version


@slow
def test_what_a_script_is_given(tmp_path):
    "Data as parquet files with every column as given, the settings, the base as files, the command line."
    import torch
    script = tmp_path / "see.py"
    script.write_text(SEE_SCRIPT)
    reg = Registry(log=False)
    base = reg.register("tinybase", {"w": torch.zeros(3)})
    rows = [{"prompt": f"question {i}", "response": f"answer {i}", "when": f"2026-01-{i + 1:02d}T00:00:00",
             "messages": [{"role": "user", "content": f"q{i}"}]} for i in range(10)]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = launch(FinetuneSpec(base=base.id, recipe="script", script=str(script), train=str(tmp_path / "chat.jsonl"),
                              script_args=["--epochs", 2, "--name", "x y"], epochs=2, batch_size=4, model="seen"))
    assert run.wait(300) == "finished", run.tail(30)
    seen = json.loads((run.dir / "seen.json").read_text())
    assert seen["argv"] == ["--epochs", "2", "--name", "x y"]
    assert seen["rows"] == {"train": 8, "eval": 2}  # eval_fraction (0.2) of train held out
    assert seen["columns"]["train"]["messages"].startswith("list<") and set(seen["columns"]["eval"]) == {"prompt", "response", "when", "messages"}
    env = seen["env"]
    assert env["FMOPS_TRAIN"] == seen["spec"]["train"] == str(run.dir / "train.parquet")
    assert env["FMOPS_EVAL"] == seen["spec"]["eval"] == str(run.dir / "eval.parquet")
    assert env["FMOPS_TOTAL_STEPS"] == "4" and env["FMOPS_RESUME"] == "0"  # 2 epochs of 8 rows in batches of 4
    assert env["FMOPS_BASE"] == str(run.dir / "base") and seen["base"] == ["README.md", "model.safetensors"]  # the weights and their model card
    assert seen["spec"]["batch_size"] == 4 and seen["spec"]["recipe"] == "script"
    v = reg.get(run.version)
    assert v.id == "seen:v1" and v.parent == base.id  # a child of its base, as a built-in recipe's result is
    assert v.metrics["error_rate"]["direction"] == "lower" and v.metrics["score"]["value"] == 0.75
    assert set(v.meta["data"]) == {"train", "eval"} and v.meta["data"]["train"]["rows"] == 8
    # a later spec names that data by its fingerprint, as with a built-in recipe's
    again = launch(FinetuneSpec(base="", recipe="script", script=str(script), model="seen",
                                train=run.meta["fingerprints"]["train"]["fingerprint"]))
    assert again.wait(300) == "finished", again.tail(30)
    assert json.loads((again.dir / "seen.json").read_text())["rows"]["train"] + 2 == 8  # 8 rows: 6 train, 2 held out


@slow
def test_a_script_under_torchrun(tmp_path):
    script = tmp_path / "dist.py"
    script.write_text(DIST_SCRIPT)
    run = launch(FinetuneSpec(base="", recipe="script", script=str(script), max_steps=3, nproc=2, model="dist"))
    assert run.wait(400) == "finished", run.tail(40)
    ev = run.events("step")
    assert [e["step"] for e in ev] == [1, 2, 3] and {e["world"] for e in ev} == {2.0}  # rank 0 alone reports
    (w,) = [e["w_mean"] for e in run.events("eval")]
    assert math.isclose(w, 1.5 * (1 - 0.8 ** 3), rel_tol=1e-5)  # the mean gradient of both ranks: they trained together
    assert Registry(log=False).get(run.version).metrics["w_mean"]["value"] == w


@slow
def test_one_run_per_spec_unless_a_duplicate_is_allowed(tmp_path):
    script = tmp_path / "wait.py"
    script.write_text(WAIT_SCRIPT)
    spec = dict(base="", recipe="script", script=str(script), train=DATA, model="waiter")
    first = launch(**spec)
    started = []
    try:
        wait_for_step(first, 1)
        with pytest.raises(ValidationError, match=f"Run {first.id} is already running with this very spec") as e:
            launch(**spec)
        assert "--allow-duplicate" in str(e.value) and f"fmops finetune stop {first.id}" in str(e.value)
        assert [r.id for r in runs()] == [first.id]  # nothing left of the refused launch
        started.append(launch(**spec | {"learning_rate": 1e-3}))  # another setting: another spec
        started.append(launch(**spec, allow_duplicate=True))
        # the same spec as a YAML file, with the data as a csv file: the same data (by fingerprint), the same run
        DATA.to_csv(tmp_path / "docs.csv", index=False)
        (tmp_path / "spec.yaml").write_text(f"base: ''\nrecipe: script\nscript: {script}\ntrain: docs.csv\nmodel: waiter\n")
        cli = fmops("finetune", "run", str(tmp_path / "spec.yaml"))
        assert cli.returncode == 1 and f"Run {first.id} is already running" in cli.stderr, cli.stdout + cli.stderr
        assert "--allow-duplicate" in cli.stderr and "Traceback" not in cli.stderr
        from IPython.core.error import UsageError
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_line_magic("load_ext", "fmops_nb")
        with pytest.raises(UsageError, match="allow-duplicate"):
            ip.run_line_magic("fmops", f"finetune {tmp_path / 'spec.yaml'}")
        started.append(ip.run_line_magic("fmops", f"finetune {tmp_path / 'spec.yaml'} --allow-duplicate"))
        allowed = fmops("finetune", "run", str(tmp_path / "spec.yaml"), "--allow-duplicate", "--json")
        assert allowed.returncode == 0, allowed.stderr
        started.append(get_run(json.loads(allowed.stdout)["id"]))
        assert len(runs()) == 5 and len({r.meta["spec_key"] for r in runs()}) == 2
    finally:
        for r in runs():
            r.stop(120)
    assert {r.status for r in runs()} == {"stopped"}


def test_the_help_documents_the_script_contract(tmp_path):
    "`%fmops help finetune` and `fmops finetune --help` print the contract, and what it names is what a script gets."
    import fmops_nb.finetune as ft
    text = ft.SCRIPT_CONTRACT
    imported = re.search(r"import \(([^)]*)\)", text)[1].replace("\n", " ").split(", ")
    called = set(re.findall(r"\b([a-z_]+)\(", text))
    assert {n.strip() for n in imported} == called == {"run_spec", "report", "report_eval", "stop_requested", "save_checkpoint",
                                                        "latest_checkpoint", "load_checkpoint", "reference", "save_model"}
    assert called <= set(ft.__all__)
    (tmp_path / "train.parquet").write_bytes(b""); (tmp_path / "eval.parquet").write_bytes(b""); (tmp_path / "base").mkdir()
    env = ft._script_env(ft._Script(tmp_path, FinetuneSpec(base=""), {"total_steps": 7}), resume=True)
    assert set(re.findall(r"\$(FMOPS_[A-Z_]+)", text)) <= set(env) and env["FMOPS_TOTAL_STEPS"] == "7"
    cli = fmops("finetune", "--help")
    assert cli.returncode == 0 and text.strip() in cli.stdout
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fmops_nb")
    shown = ip.run_line_magic("fmops", "help finetune")
    assert text.strip() in repr(shown) and "Your own training script (recipe: script)" in repr(shown)
