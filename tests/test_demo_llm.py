"""`fmops demo --llm` in parts, at tiny sizes (the whole loop takes minutes; run it by hand: `fmops demo --llm`): the
production model's real traffic, its drift, the fine-tune spec and policy the loop runs on, the gate, and a folder
that is never written over."""
import json

import pytest

from fmops_nb.demo_llm import prepare_llm_demo, llm_gate, NEW_TOPICS
from fmops_nb.errors import WorkspaceError
from fmops_nb.finetune import FinetuneSpec
from fmops_nb.lm import generate, tiny_lm
from fmops_nb.monitor import read_policies
from fmops_nb.registry import Registry
from stdlib_text import require_fm

require_fm()


def read_jsonl(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.mark.slow
def test_the_demo_logs_real_traffic_of_production_that_drifts_and_a_spec_the_policy_launches(tmp_path):
    import torch
    torch.set_num_threads(1)
    ws, paths = prepare_llm_demo(tmp_path / "demo", n=10, log=False)
    reg = Registry(ws, log=False)
    prod = reg.get("assistant:production")
    assert prod.id == "assistant:v1" and reg.manifest(prod)["config"]["architectures"] == ["LlamaForCausalLM"]
    ref, cur = read_jsonl(paths["reference"]), read_jsonl(paths["current"])
    assert len(ref) == 10 and len(cur) == 30
    assert set(cur[0]) == {"prompt", "response", "ts", "model_version"} and cur[0]["model_version"] == "assistant:v1"
    # the responses are what the production model says (greedy: the same prompt, the same answer)
    some = cur[:3] + ref[:2]
    assert generate(tiny_lm(), [r["prompt"] for r in some], 24) == [r["response"] for r in some]
    # the new questions grow day by day; the reference has none
    asks = lambda rows: sum(r["prompt"].startswith("Which module documents: ") for r in rows)
    days = [[r for r in cur if r["ts"] == d] for d in ("2026-11-01", "2026-11-02", "2026-11-03")]
    assert asks(ref) == 0 and [asks(d) for d in days] == [0, 5, 9]
    # the policy launches the spec the demo wrote, a LoRA SFT of production on the questions' training set
    (policy,) = read_policies(tmp_path / "demo" / "policies.yaml")
    assert (policy.template, policy.when, policy.action) == ("llm_report", "dataset_drift", "finetune")
    spec = FinetuneSpec.from_file(policy.spec).validate()
    assert (spec.recipe, spec.base, spec.model) == ("sft-lora", "assistant:production", "assistant")
    train, held, probe = (read_jsonl(paths[k]) for k in ("train", "eval", "probe"))
    assert spec.train == str(paths["train"]) and spec.eval == str(paths["eval"])
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}  # held out: never trained on
    answers = {m.split(".")[-1] for m in NEW_TOPICS}
    assert {r["response"].strip() for r in train} <= answers and {p["expected"] for p in probe} <= answers
    # a second demo in the same folder is refused, and what is there stays
    before = paths["current"].read_bytes()
    with pytest.raises(WorkspaceError, match="already holds"):
        prepare_llm_demo(tmp_path / "demo", n=10, log=False)
    assert paths["current"].read_bytes() == before


def test_the_gate_promotes_only_a_lower_held_out_loss_without_more_broken_than_fixed():
    better, same = {"candidate": {"eval_loss": 3.0}, "reference": {"eval_loss": 6.0}}, {
        "candidate": {"eval_loss": 6.0}, "reference": {"eval_loss": 6.0}}
    ok, why = llm_gate(better, {"fixed": 5, "broken": 1})
    assert ok and "50% lower" in why and "5 fixed, 1 broken" in why
    assert llm_gate(same, {"fixed": 5, "broken": 0}) == (False, "not promoted: held-out loss 6.000 is not below "
                                                                 "production's 6.000")
    assert not llm_gate(better, {"fixed": 1, "broken": 2})[0]
    assert not llm_gate({"candidate": {}, "reference": {"eval_loss": 6.0}}, {"fixed": 1, "broken": 0})[0]  # fails closed


@pytest.mark.hostile
def test_demo_llm_never_writes_over_a_users_files(tmp_path, hostile, capsys):
    from fmops_nb.cli import main
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "policies.yaml").write_text("policies: []  # mine\n")
    hostile("fmops demo --llm --dir into a project with its own policies.yaml")
    assert main(["demo", "--llm", "--dir", str(tmp_path / "proj"), "--no-wandb"]) == 1
    assert "policies.yaml, which the LLM demo would overwrite" in capsys.readouterr().err
    assert (tmp_path / "proj" / "policies.yaml").read_text() == "policies: []  # mine\n"
    assert not (tmp_path / "proj" / ".fmops").exists()
