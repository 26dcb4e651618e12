"""Causal-LM fine-tunes (issue 15, item 3): recipe `sft-lora` trains a LoRA adapter on the small generative model
fmops_nb builds (`base: tinylm`) from prompt/response pairs, through the same launcher as every recipe. One real run,
shared by the module: stopped, resumed, finished, registered with its lineage; its held-out loss fell below its
base's. A second run, `sft-full` on plain text packed, trains every weight. Plus the loss mask on a batch, what is cut
to fit max_length, and the bad inputs refused at launch with nothing left behind."""
import importlib
import json
import shutil

import pandas as pd
import pytest

from stdlib_text import require_fm

require_fm()

from fmops_nb.errors import ValidationError  # noqa: E402
from fmops_nb.finetune import Run, _causal_lm, _collate, _sft_example, _sft_sequences, launch, runs  # noqa: E402
from fmops_nb.lm import tiny_lm  # noqa: E402
from fmops_nb.registry import Registry  # noqa: E402
from fmops_nb.tracking import find_runs, read_run  # noqa: E402
from tiny import isolated_env, steps, wait_for_step

MODULES = ["json", "csv", "shutil", "textwrap", "random", "string", "heapq", "bisect", "base64", "fnmatch", "glob", "copy"]
LONG = "Return a string of the text, wrapped and indented as the options say, every line of it at most width long. " * 3


def questions() -> pd.DataFrame:
    "Which module defines a public function or class of the standard library: prompt, and the module as the response."
    rows = []
    for m in MODULES:
        mod = importlib.import_module(m)
        rows += [{"prompt": f"Which module defines {n}? Answer:", "response": f" {m}"} for n, o in sorted(vars(mod).items())
                 if not n.startswith("_") and callable(o) and getattr(o, "__module__", "") == m]
    rows += [{"prompt": f"Describe wrap, part {i}:", "response": " " + LONG} for i in range(3)]  # over max_length
    return pd.DataFrame(rows).sample(frac=1, random_state=0).reset_index(drop=True)


SPEC = dict(base="tinylm", recipe="sft-lora", model="lm", max_steps=30, batch_size=8, max_length=32, learning_rate=5e-3,
            checkpoint_every=5, max_new_tokens=4, seed=0)




@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    "One sft-lora run on tinylm, stopped after a few steps and resumed to its end: (workspace folder, run, stop step)."
    home = tmp_path_factory.mktemp("sft")
    with pytest.MonkeyPatch.context() as mp:
        isolated_env(home, mp)
        tiny_lm(threads=1)  # built once per session (FMOPS_CACHE)
        run = launch(train=questions(), **SPEC)
        wait_for_step(run, 3)
        assert run.stop(300) == "stopped", run.tail(30)
        stopped_at = run.info["step"]
        run.resume()
        assert run.wait(600) == "finished", run.tail(30)
        run._proc.wait(120)  # the process closes its W&B run after it says finished
    return home, run, stopped_at


@pytest.fixture
def shared(sft, monkeypatch):
    "The shared run, with this test pointed at its workspace and W&B folders."
    home, run, stopped_at = sft
    isolated_env(home, monkeypatch)
    return Run(run.dir), stopped_at


@pytest.mark.slow
def test_a_stopped_sft_run_resumes_where_it_stopped_and_finishes(shared):
    run, ck = shared
    assert 3 <= ck < 30 and (run.dir / "checkpoints" / f"step-{ck:06d}").is_dir()
    assert steps(run) == list(range(1, 31))  # every step once: the resume continued from the stop
    assert [e["step"] for e in run.events("resume")] == [ck] and run.info["step"] == 30
    seg = [r for r in map(read_run, find_runs()) if r.job_type == "finetune" and r.config.get("run_id") == run.id]
    assert len(seg) == 2 and {r.id for r in seg} == {run.meta["wandb_id"]}  # one W&B run across the resume
    assert [h["_step"] for r in seg for h in r.history if "loss" in h] == list(range(1, 31))
    assert all(e["tokens_per_s"] > 0 for e in run.events("step"))


@pytest.mark.slow
def test_the_result_is_an_adapter_on_tinylm_with_lineage_and_a_lower_held_out_loss(shared, tmp_path):
    run, _ = shared
    reg = Registry(log=False)
    v = reg.get(run.version)
    assert (v.id, v.format, v.base) == ("lm:v1", "peft", "tinylm:v1") and v.meta["run_id"] == run.id
    assert "packaged:tinylm" in reg.get("tinylm:v1").tags
    for split in ("train", "eval"):
        assert v.meta["data"][split]["fingerprint"] == run.meta["fingerprints"][split]["fingerprint"]
    assert v.meta["data"]["train"]["rows"] + v.meta["data"]["eval"]["rows"] == len(questions())
    assert (v.meta["config"]["recipe"], v.meta["config"]["max_steps"]) == ("sft-lora", 30)
    (cand,) = [e for e in run.events("eval") if e["version"] == "candidate"]
    assert set(cand) >= {"eval_loss", "perplexity", "exact_match", "contains"}
    assert v.metrics["eval_loss"] == {"value": cand["eval_loss"], "direction": "lower"}
    assert v.metrics["perplexity"]["direction"] == "lower" and v.metrics["exact_match"]["direction"] == "higher"
    cmp = run.info["comparison"]
    assert cmp["against"] == "tinylm:v1"  # no production yet: compared with its base, on the same eval data
    assert cmp["candidate"]["eval_loss"] < 0.9 * cmp["reference"]["eval_loss"], cmp  # it learned the answers
    assert cmp["candidate"]["perplexity"] < cmp["reference"]["perplexity"]
    assert sorted(v.aliases) == ["candidate"]
    model, tok = _causal_lm(reg, v.id, tmp_path)  # as a later run compares with it once it is production
    assert type(model).__name__.startswith("PeftModel") and tok.chat_template


@pytest.mark.slow
def test_responses_over_max_length_are_cut_and_counted_not_dropped(shared):
    run, _ = shared
    seq = run.info["sequences"]
    assert seq["train_truncated"] + seq["eval_truncated"] == 3  # the three long descriptions
    assert seq["train_dropped"] == seq["eval_dropped"] == 0
    assert seq["train_sequences"] + seq["eval_sequences"] == len(questions())
    data = run.events("data")  # one per start of the run's process, the same counts
    assert [e["step"] for e in data] == [0, run.events("resume")[0]["step"]]
    assert all(e["train_truncated"] == seq["train_truncated"] for e in data)
    assert Registry(log=False).get(run.version).meta["config"]["sequences"] == seq


@pytest.mark.slow
def test_the_loss_falls_on_the_response_only_and_never_on_padding():
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_lm(threads=1))
    rows = [{"prompt": "Which module defines dumps? Answer:", "response": " json"},
            {"prompt": "Q:", "response": " " + LONG}]
    made = [_sft_example(tok, r, "pairs", 32) for r in rows]
    for (ids, labels, cut), r in zip(made, rows):
        p = len(tok(r["prompt"])["input_ids"])
        assert labels[:p] == [-100] * p and -100 not in labels[p:]  # no loss on the prompt, all of it on the response
        assert tok.decode(labels[p:]) == (r["response"] + "<|eos|>" if not cut else tok.decode(ids[p:]))
    assert [c for *_, c in made] == [False, True] and len(made[1][0]) == 32
    b = _collate([m[0] for m in made], [m[1] for m in made], tok.pad_token_id)
    short = len(made[0][0])
    assert b["labels"].shape == (2, 32) and (b["labels"][0, short:] == -100).all()
    assert b["attention_mask"][0].tolist() == [1] * short + [0] * (32 - short)
    chat = [{"role": "user", "content": "What does json.dumps do?"}, {"role": "assistant", "content": "Serialize obj."}]
    ids, labels, _ = _sft_example(tok, {"messages": chat}, "chat", 64)
    assert tok.decode([x for x in labels if x != -100]) == "Serialize obj.<|eos|>"  # the answer, not the role token
    assert tok.decode(ids) == "<|user|>What does json.dumps do?<|eos|><|assistant|>Serialize obj.<|eos|>"
    packed, plabels, stats = _sft_sequences(tok, rows * 3, "pairs", 16, pack=True)
    assert all(len(x) == 16 for x in packed[:-1]) and stats["examples"] == 6 and stats["sequences"] == len(packed)


@pytest.mark.slow
def test_sft_full_on_plain_text_packed_trains_every_weight_and_registers_a_whole_model(tmp_path, monkeypatch):
    "Recipe sft-full, on plain text (no prompts), packed into max_length sequences: a whole causal LM, not an adapter."
    import torch
    isolated_env(tmp_path, monkeypatch)
    tiny_lm(threads=1)
    q = questions()
    text = pd.DataFrame({"text": [p + r for p, r in zip(q["prompt"], q["response"])]})
    run = launch(base="tinylm", train=text, recipe="sft-full", model="lmfull", max_steps=12, batch_size=8, max_length=32,
                 learning_rate=1e-3, packing=True, seed=0)
    assert run.wait(600) == "finished", run.tail(30)
    run._proc.wait(120)
    reg = Registry(log=False)
    v = reg.get(run.version)
    assert v.id == "lmfull:v1" and v.format != "peft" and v.base is None and v.parent == "tinylm:v1"
    assert (v.meta["config"]["recipe"], v.meta["config"]["packing"]) == ("sft-full", True)
    seq = v.meta["config"]["sequences"]  # packed: the texts end to end, fewer sequences than texts
    assert seq["train_sequences"] < len(text) and seq["train_dropped"] == 0
    assert v.meta["data"]["train"]["fingerprint"] == run.meta["fingerprints"]["train"]["fingerprint"]
    cmp = run.info["comparison"]
    assert cmp["against"] == "tinylm:v1" and cmp["candidate"]["eval_loss"] < cmp["reference"]["eval_loss"], cmp
    assert "exact_match" not in cmp["candidate"]  # plain text has no expected answers
    model, _ = _causal_lm(reg, v.id, tmp_path / "load")
    assert not type(model).__name__.startswith("PeftModel")
    base = _causal_lm(reg, "tinylm:v1", tmp_path / "base")[0].state_dict()
    mine = model.state_dict()
    moved = [k for k, t in base.items() if not torch.equal(t, mine[k])]
    assert len(moved) >= 0.9 * len(base), (len(moved), len(base))  # every weight trains, not a few adapted modules


def _launch_fails(hostile, what, words, **kw):
    "Launching `kw` raises a ValidationError with `words`, and leaves no run folder and no registered result."
    hostile(what)
    with pytest.raises(ValidationError) as e:
        launch(**SPEC | kw)
    for w in words:
        assert w in str(e.value), str(e.value)
    assert runs() == [] and "lm" not in Registry(log=False).models()
    return str(e.value)


@pytest.mark.hostile
def test_a_base_that_is_no_causal_lm_is_refused_with_what_to_set(hostile):
    from fmops_nb.finetune import BASES
    _launch_fails(hostile, "sft-lora on a bare encoder (all-MiniLM-L6-v2)",
                  ["not a causal language model", "bert", "base: tinylm", "recipe: lora"],
                  base=str(BASES.call("minilm")), train=questions())
    assert Registry(log=False).models() == []  # refused before the base was registered


@pytest.mark.hostile
def test_prompts_without_responses_are_refused(hostile):
    q = questions()
    _launch_fails(hostile, "sft data with prompts and no response column", ["no responses", "response_column"],
                  train=q[["prompt"]])
    empty = q.assign(response=[r if i % 7 else "  " for i, r in enumerate(q["response"])])
    _launch_fails(hostile, "sft data with blank responses in some rows", ["a prompt without a response", "rows 1, 8"],
                  train=empty, eval=q.head(4))


@pytest.mark.hostile
@pytest.mark.slow
def test_chats_for_a_tokenizer_without_a_chat_template_are_refused(hostile, tmp_path):
    base = tmp_path / "lm-no-template"
    shutil.copytree(tiny_lm(threads=1), base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    chats = pd.DataFrame({"messages": [[{"role": "user", "content": f"Hi {i}"}, {"role": "assistant", "content": "Hello."}]
                                       for i in range(10)]})
    _launch_fails(hostile, "chat data for a tokenizer with no chat template", ["no chat template", "prompt and response"],
                  base=str(base), train=chats)
    bad = pd.DataFrame({"messages": [[{"role": "user", "content": "Hi"}]] * 5})
    _launch_fails(hostile, "chats without an assistant turn", ["no chat with an assistant turn", "rows 1, 2, 3"],
                  train=bad)
