"""Causal-LM fine-tunes (issue 15, item 3), the parts tests/test_sft.py leaves out: an sft-lora run launched under torchrun
(two processes training the small generative model together) registers its adapter like any run; and the eval gate on
an SFT run's held-out loss (lower is better) promotes the better candidate and refuses the worse one, with the promotion
in the audit log. One real run under torchrun, shared by the module, then one more that barely trains."""
import importlib

import pandas as pd
import pytest

from stdlib_text import require_fm

require_fm()

from fmops_nb.audit import audit_log  # noqa: E402
from fmops_nb.finetune import Run, launch  # noqa: E402
from fmops_nb.lm import tiny_lm  # noqa: E402
from fmops_nb.registry import Registry  # noqa: E402
from tiny import isolated_env, steps  # noqa: E402

pytestmark = pytest.mark.slow  # fine-tunes in background processes: the full tier only

MODULES = ["json", "csv", "shutil", "textwrap", "random", "string", "heapq", "bisect", "base64", "fnmatch"]


def questions() -> pd.DataFrame:
    "Which module defines a public function or class of the standard library: the prompt, and the module as response."
    rows = []
    for m in MODULES:
        mod = importlib.import_module(m)
        rows += [{"prompt": f"Which module defines {n}? Answer:", "response": f" {m}"} for n, o in sorted(vars(mod).items())
                 if not n.startswith("_") and callable(o) and getattr(o, "__module__", "") == m]
    return pd.DataFrame(rows).sample(frac=1, random_state=0).reset_index(drop=True)


Q = questions()
TRAIN, EVAL = Q.iloc[24:], Q.iloc[:24]  # the held-out questions: the same for every run, so the gate compares alike
SPEC = dict(base="tinylm", recipe="sft-lora", model="asst", train=TRAIN, eval=EVAL, batch_size=4, max_length=24,
            max_new_tokens=2, checkpoint_every=1000, threads=1, seed=0, promote_if_better="eval_loss")


@pytest.fixture(scope="module")
def torchrun_sft(tmp_path_factory):
    "One sft-lora run on tinylm under torchrun with two processes, to its end: (workspace folder, run)."
    home = tmp_path_factory.mktemp("sft-torchrun")
    with pytest.MonkeyPatch.context() as mp:
        isolated_env(home, mp)
        tiny_lm(threads=1)  # built once per session (FMOPS_CACHE)
        run = launch(max_steps=8, learning_rate=1e-2, nproc=2, **SPEC)
        assert run.wait(600) == "finished", run.tail(40)
        run._proc.wait(120)  # the launcher ends once the ranks have
    return home, run


@pytest.fixture
def shared(torchrun_sft, monkeypatch):
    "The shared run, with this test pointed at its workspace and W&B folders."
    home, run = torchrun_sft
    isolated_env(home, monkeypatch)
    return Run(run.dir)


def test_an_sft_lora_run_under_torchrun_trains_the_small_lm_and_registers_its_adapter(shared):
    run = shared
    assert run.info["cost"]["processes"] == 2  # both ranks worked for it, their costs added up
    assert steps(run) == list(range(1, 9))  # each step once, reported by rank 0 for both processes
    ev = run.events("step")
    assert all(e["tokens_per_s"] > 0 and e["loss"] > 0 for e in ev)
    reg = Registry(log=False)
    v = reg.get(run.version)
    assert (v.id, v.format, v.base) == ("asst:v1", "peft", "tinylm:v1") and v.meta["run_id"] == run.id
    assert v.meta["config"]["nproc"] == 2 and v.meta["config"]["recipe"] == "sft-lora"
    assert v.meta["data"]["eval"]["rows"] == len(EVAL) and v.meta["data"]["train"]["rows"] == len(TRAIN)
    (cand,) = [e for e in run.events("eval") if e["version"] == "candidate"]
    assert v.metrics["eval_loss"] == {"value": cand["eval_loss"], "direction": "lower"}
    cmp = run.info["comparison"]
    assert cmp["against"] == "tinylm:v1" and cmp["candidate"]["eval_loss"] < cmp["reference"]["eval_loss"], cmp


def test_the_gate_on_held_out_loss_promotes_the_better_sft_run_and_refuses_the_worse(shared):
    good = shared
    reg = Registry(log=False)
    assert good.info["promoted"] is True and reg.get("asst:production").id == good.version  # better than its base
    (entry,) = audit_log(reg.ws, "asst:production")
    assert entry["after"]["reason"].startswith("promote_if_better eval_loss") and "tinylm:v1" in entry["after"]["reason"]
    worse = launch(max_steps=1, learning_rate=1e-6, **SPEC)  # one step that changes next to nothing
    assert worse.wait(600) == "finished", worse.tail(40)
    cmp = worse.info["comparison"]
    assert cmp["against"] == "asst:production"  # production, measured again on the same held-out questions
    assert cmp["reference"]["eval_loss"] == pytest.approx(good.info["comparison"]["candidate"]["eval_loss"], rel=1e-4)
    assert cmp["candidate"]["eval_loss"] > cmp["reference"]["eval_loss"] and worse.info["promoted"] is False
    assert reg.get("asst:production").id == good.version  # refused: production stays
    assert reg.get("asst:candidate").id == worse.version == "asst:v2"  # registered, as the candidate only
    assert len(audit_log(reg.ws, "asst:production")) == 1  # one promotion to production, the audited one
