"""The small generative model fmops_nb builds (nbs/12_lm): its corpus and tokenizer, what pretraining taught it, and a
cache that builds once, survives races and broken entries, and refuses links."""
import json
import os
import subprocess
import sys

import pytest

from stdlib_text import require_fm

require_fm()

from fmops_nb import lm  # noqa: E402
from fmops_nb.errors import ExecutionError, ValidationError, WorkspaceError  # noqa: E402
from fmops_nb.lm import TinyLMRecipe, corpus, generate, load_lm, perplexity, tiny_lm, train_tokenizer  # noqa: E402

SMALL = TinyLMRecipe(vocab_size=400, hidden=32, layers=1, heads=2, intermediate=64, seq_len=32, batch=4, steps=3)


def test_the_corpus_is_the_same_every_time_and_each_text_once():
    a, b = corpus(), corpus()
    assert a == b and len(set(a)) == len(a) > 1000
    assert all(len(t) >= 40 and "  " not in t and "\n" not in t for t in a)


def test_the_tokenizer_encodes_any_text_and_writes_chats_with_role_tokens():
    tok = train_tokenizer(corpus()[:300], 400)
    for text in ["Return the path.", "naïve café — 東京 🚀", "\x00tab\tand\nnewline", ""]:
        ids = tok(text)["input_ids"]
        assert tok.unk_token_id is None or tok.unk_token_id not in ids
        assert tok.decode(ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "What does json.dumps do?"},
                                    {"role": "assistant", "content": "Serialize obj."}], tokenize=False)
    assert chat == "<|user|>What does json.dumps do?<|eos|><|assistant|>Serialize obj.<|eos|>"
    prompt = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>")
    assert tok.convert_tokens_to_ids("<|assistant|>") in tok(prompt)["input_ids"]  # one token, not its characters


@pytest.mark.slow
def test_the_default_model_learned_and_is_built_once(monkeypatch):
    path = tiny_lm(threads=1)
    facts = json.loads((path / "fmops_lm.json").read_text())
    assert facts["held_out_loss_before"] > 7.0  # about log(2048): an untrained model guesses
    assert facts["held_out_loss_after"] < facts["held_out_loss_before"] - 1.5, facts  # perplexity down more than 4x
    tok, model = load_lm(path)
    assert type(model).__name__ == "LlamaForCausalLM" and 0.5e6 < facts["parameters"] < 5e6
    monkeypatch.setattr(lm, "pretrain", lambda *a, **k: pytest.fail("a cached model was built again"))
    assert tiny_lm() == path


@pytest.mark.slow
def test_generation_is_greedy_and_perplexity_tells_docstrings_from_noise():
    path = tiny_lm(threads=1)
    prompts = ["Return the", "Create a new", "Raise an exception if"]
    first, again = generate(path, prompts, max_new_tokens=8), generate(path, prompts[::-1], max_new_tokens=8)
    assert first == again[::-1] and all(isinstance(a, str) and a for a in first)  # batch order changes nothing
    held_out = corpus()[-40:]
    assert perplexity(path, held_out) < 0.5 * perplexity(path, ["qz jx vk wq " * 10] * 4)



def test_bad_arguments_to_perplexity_and_generate_are_named():
    path = tiny_lm(threads=1)
    for bs in (0, -3, 2.5, True):
        with pytest.raises(ValidationError, match="batch_size"):
            perplexity(path, ["a text of some words"], batch_size=bs)
    with pytest.raises(ValidationError, match=r"a list of texts; got a float \(nan\) at #1"):
        perplexity(path, ["a text", float("nan")])
    with pytest.raises(ValidationError, match="on_batch must be a function"):
        generate(path, ["Return the"], 4, on_batch="print")
    assert perplexity(path, corpus()[-8:], batch_size=3) == pytest.approx(perplexity(path, corpus()[-8:]), rel=1e-4)
    for mb in (0, -1, float("nan"), float("inf"), "16", True):
        with pytest.raises(ValidationError, match="logits_mb"):
            perplexity(path, ["a text of some words"], logits_mb=mb)
    # fewer, larger passes (the generation diff's side thread): the same perplexity
    texts = corpus()[-40:]
    assert perplexity(path, texts, logits_mb=64) == pytest.approx(perplexity(path, texts, batch_size=1), rel=1e-4)

@pytest.mark.slow
def test_a_broken_entry_is_rebuilt_and_a_link_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FMOPS_CACHE", str(tmp_path / "cache"))
    path = tiny_lm(SMALL)
    (path / "model.safetensors").unlink()  # a build cut short, files deleted
    assert tiny_lm(SMALL) == path and (path / "model.safetensors").is_file()
    path.rename(tmp_path / "elsewhere")
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(WorkspaceError, match="is a link"):
        tiny_lm(SMALL)


def test_a_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("FMOPS_CACHE", str(tmp_path / "cache"))
    def broken(texts, out, recipe, threads):
        (out / "config.json").write_text("{}")  # half a model
        raise RuntimeError("killed")
    monkeypatch.setattr(lm, "pretrain", broken)
    with pytest.raises(ExecutionError, match="Nothing was cached"):
        tiny_lm(SMALL)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


@pytest.mark.slow
def test_two_processes_racing_build_once(tmp_path):
    code = ("import sys; from fmops_nb import lm\n"
            "real = lm.pretrain\n"
            "def counted(*a, **k):\n"
            f"    open({str(tmp_path / 'builds')!r}, 'a').write('built\\n'); return real(*a, **k)\n"
            "lm.pretrain = counted\n"
            f"print(lm.tiny_lm(lm.TinyLMRecipe(vocab_size=400, hidden=32, layers=1, heads=2, intermediate=64, "
            "seq_len=32, batch=4, steps=3)))")
    env = {**os.environ, "FMOPS_CACHE": str(tmp_path / "cache"), "FMOPS_PROGRESS": "0"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]  # the same folder
    assert (tmp_path / "builds").read_text() == "built\n"  # one build: the other waited, then found it
