"""Hostile inputs to the generative-model features: `generate` and `perplexity` given what is not a list of texts,
prompts with nothing to continue or longer than the context, a tokenizer without a pad token; prompt probes with a BOM,
empty prompts or answers, text that is not Unicode; versions whose files transformers cannot load. Each is refused with
a ValidationError that names it (or handled as a user would expect), never a stack trace from transformers."""
import copy
import json
import shutil

import pytest

from stdlib_text import require_fm

require_fm()

from fmops_nb.diff import PromptProbe, diff, read_probe  # noqa: E402
from fmops_nb.errors import FmopsError, ValidationError  # noqa: E402
from fmops_nb.lm import generate, load_lm, perplexity, tiny_lm  # noqa: E402
from fmops_nb.registry import Registry  # noqa: E402

pytestmark = pytest.mark.hostile


@pytest.fixture(scope="module")
def lm():
    return tiny_lm(threads=1)  # built once per session (FMOPS_CACHE)


def test_generate_refuses_what_is_not_a_list_of_texts(lm, hostile):
    hostile("generate given one string instead of a list of prompts")
    with pytest.raises(ValidationError, match=r"a list of texts; got a str.*\[text\]"):
        generate(lm, "Return the", 2)  # was: one answer per character of the string
    hostile("generate given a None among the prompts")
    with pytest.raises(ValidationError, match=r"got a NoneType \(None\) at #1"):
        generate(lm, ["Return the", None], 2)
    hostile("a prompt holding a lone surrogate (a JSON \\ud800 escape)")
    with pytest.raises(ValidationError, match=r"#0 is not valid Unicode.*lone surrogate '\\ud800' at character 1"):
        generate(lm, ["a\ud800b"], 2)
    hostile("generate with an empty prompt: nothing to continue")
    with pytest.raises(ValidationError, match=r"prompt #1 is empty"):
        generate(lm, ["Return the", ""], 2)  # was: a RuntimeError from a tensor reshape when alone
    assert generate(lm, [], 2) == []


@pytest.mark.parametrize("tokens, words", [(0, "at least 1"), (-1, "at least 1"), (2.5, "whole number"),
                                           (True, "whole number"), (512, "at most 511"), (600, "at most 511")])
def test_generate_refuses_an_answer_budget_it_cannot_keep(lm, tokens, words, hostile):
    hostile(f"generate with max_new_tokens={tokens!r} (the context is 512 tokens)")
    with pytest.raises(ValidationError, match=rf"max_new_tokens={tokens!r}.*{words}"):
        generate(lm, ["Return the"], tokens)


def test_generate_refuses_a_batch_size_that_is_not_a_whole_number(lm, hostile):
    for bs in (0, -2, 1.5):
        hostile(f"generate with batch_size={bs!r}")
        with pytest.raises(ValidationError, match="batch_size"):
            generate(lm, ["Return the"], 2, batch_size=bs)


def test_a_prompt_longer_than_the_context_is_continued_from_its_end(lm, hostile):
    hostile("a prompt of about 1 MB, far over the 512-token context")
    tok, _ = load_lm(lm)
    end = "Return a new list of the items"
    long = "qz " * 350_000 + end
    short_end = tok.decode(tok(long)["input_ids"][-(512 - 4):])  # what fits beside a 4-token answer
    assert short_end.endswith(end)
    assert generate(lm, [long], 4) == generate(lm, [short_end], 4)  # was: the prompt's start kept, its end cut off


def test_perplexity_refuses_no_texts_and_a_string(lm, hostile):
    hostile("perplexity of an empty list")
    with pytest.raises(ValidationError, match="no texts"):
        perplexity(lm, [])  # was: IndexError from the tokenizer
    hostile("perplexity of one string, not a list")
    with pytest.raises(ValidationError, match=r"a list of texts; got a str"):
        perplexity(lm, "Return the value of the key")  # was: 'texts of at least two tokens', for its characters
    hostile("perplexity of a text holding a lone surrogate")
    with pytest.raises(ValidationError, match="not valid Unicode"):
        perplexity(lm, ["Return the \udcff value"])
    with pytest.raises(ValidationError, match="at least two tokens"):
        perplexity(lm, ["a"])  # one token: no prediction to score


def test_a_tokenizer_without_a_pad_token_is_given_one_and_left_unchanged(lm, hostile):
    hostile("generate and perplexity with a (tokenizer, model) pair whose tokenizer has no pad token")
    tok, model = load_lm(lm)
    bare = copy.deepcopy(tok)
    bare.pad_token = None
    prompts = ["Return the", "Create a new list of"]
    assert generate((bare, model), prompts, 4) == generate(lm, prompts, 4)  # was: ValueError 'Asking to pad ...'
    texts = ["Return the value.", "Create a new list of the items given."]
    assert perplexity((bare, model), texts) == pytest.approx(perplexity(lm, texts))
    assert bare.pad_token is None  # the caller's tokenizer is not changed
    bare.eos_token = None
    with pytest.raises(ValidationError, match="no pad token and no end-of-text token"):
        generate((bare, model), prompts, 4)


def probe(tmp_path, raw: bytes, name="p.jsonl"):
    (tmp_path / name).write_bytes(raw)
    return tmp_path / name


def test_a_probe_saved_with_a_bom_and_crlf_reads_like_any_other(tmp_path, hostile):
    hostile("a probe jsonl written by Notepad: UTF-8 BOM and CRLF line ends")
    rows = [{"prompt": "Return the", "expected": "path"}, {"prompt": "Create a new"}]
    text = "\r\n".join(json.dumps(r) for r in rows) + "\r\n"
    p = read_probe(probe(tmp_path, b"\xef\xbb\xbf" + text.encode()))  # was: 'line 1: not JSON (Unexpected UTF-8 BOM'
    assert (p.prompts, p.expected) == (["Return the", "Create a new"], ["path", None])


@pytest.mark.parametrize("line, words", [
    ('{"prompt": ""}', "line 2: the prompt is empty"),
    ('{"prompt": "a\\ud800b"}', r"line 2: not valid Unicode.*'\\ud800'"),
    ('{"prompt": "a", "expected": ""}', "line 2: 'expected' is empty"),
    ('{"prompt": "a", "reference": "\\udfff"}', "line 2: not valid Unicode"),
    ('["Return the"]', "line 2: no text under 'prompt'"),
    ('{"prompt": 3}', "line 2: no text under 'prompt'"),
])
def test_a_probe_line_that_cannot_be_run_is_named(tmp_path, line, words, hostile):
    hostile(f"a probe line {line}")
    with pytest.raises(ValidationError, match=words):
        read_probe(probe(tmp_path, ('{"prompt": "Return the"}\n' + line + "\n").encode()))


def test_a_probe_path_that_is_a_folder_is_named_as_one(tmp_path, hostile):
    hostile("a probe path that is a folder")
    (tmp_path / "probes.jsonl").mkdir()
    with pytest.raises(ValidationError, match="is a folder"):
        read_probe(tmp_path / "probes.jsonl")


def registered(lm, tmp_path, name, drop=(), config=None):
    "A copy of the small LM with files dropped or its config changed, registered as `name`:v1 beside lm:v1."
    folder = tmp_path / name
    shutil.copytree(lm, folder)
    for f in drop: (folder / f).unlink()
    if config:
        (folder / "config.json").write_text(json.dumps(json.loads((folder / "config.json").read_text()) | config))
    reg = Registry(log=False)
    if "lm" not in reg.models(): reg.register("lm", lm)
    reg.register(name, folder)
    return reg


@pytest.mark.parametrize("name, drop, config, words", [
    ("no-tokenizer", ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"], None,
     r"ValueError: Couldn't instantiate the backend tokenizer.*Its files: config.json, fmops_lm.json"),
    ("wrong-width", [], {"hidden_size": 64}, r"RuntimeError: You set `ignore_mismatched_sizes`"),
    ("unknown-type", [], {"model_type": "nosuchmodel"}, r"ValueError: The checkpoint .* model type `nosuchmodel`"),
])
def test_a_version_transformers_cannot_load_is_named_not_a_stack_trace(lm, tmp_path, name, drop, config, words,
                                                                        hostile):
    hostile(f"a generation diff against a registered causal LM that does not load: {name}")
    reg = registered(lm, tmp_path, name, drop, config)
    with pytest.raises(ValidationError, match=rf"{name}:v1's files do not load as a causal LM and its tokenizer "
                                              rf"\({words}"):  # was: transformers' ValueError, RuntimeError
        diff("lm:v1", f"{name}:v1", reg, probe=PromptProbe(["Return the"]), max_new_tokens=2)


def test_a_missing_blob_of_a_version_is_a_corrupt_store_error(lm, hostile):
    from fmops_nb import diff as D
    from fmops_nb.errors import CorruptBlobError
    hostile("a generation diff of a version whose tokenizer blob was deleted from the store")
    reg = Registry(log=False)
    v = reg.register("lm", lm)
    reg.blobs.path(v.files["tokenizer.json"]["sha256"]).unlink()
    D._VERSION_LMS.clear()  # not loaded before in this process
    with pytest.raises(CorruptBlobError, match="tokenizer.json of lm:v1 .* is missing"):
        diff("lm:v1", "lm:v1", reg, probe=PromptProbe(["Return the"]), max_new_tokens=2)


@pytest.mark.parametrize("probe, tokens, words", [
    (PromptProbe(["Return the"], [3]), 2, r"expected answer #0 is 3\. Give a text, or None"),
    (PromptProbe(["Return the", "Create"], ["path", " "]), 2, r"expected answer #1 is ' '.*in every answer"),
    (PromptProbe("Return the"), 2, r"The probe 'probe' takes a list of texts; got a str"),
    (PromptProbe(["Return the", ""]), 2, r"prompt #1 is empty"),
    (PromptProbe(["Return the"], reference=["ok", None]), 2, r"reference texts takes a list of texts; got a NoneType"),
    (PromptProbe(["Return the"]), "8", r"max_new_tokens='8': give a whole number"),
])
def test_a_probe_built_in_python_is_checked_before_anything_runs(lm, probe, tokens, words, hostile):
    hostile(f"a PromptProbe that cannot be run: {words}")
    reg = Registry(log=False)
    reg.register("lm", lm)
    with pytest.raises(ValidationError, match=words):  # was: TypeError or AttributeError, or an empty 'expected' right
        diff("lm:v1", "lm:v1", reg, probe=probe, max_new_tokens=tokens)


@pytest.mark.parametrize("flag, value, words", [("--rows", "-3", "n=-3 (--rows -3): the demo needs at least 10"),
                                                 ("--rows", "0", "n=0 (--rows 0): the demo needs at least 10")])
def test_demo_llm_refuses_a_traffic_size_it_cannot_use_and_writes_nothing(tmp_path, flag, value, words, hostile,
                                                                          capsys):
    from fmops_nb.cli import main
    hostile(f"fmops demo --llm {flag} {value}")
    assert main(["demo", "--llm", "--dir", str(tmp_path / "d"), "--no-wandb", flag, value]) == 1  # was: numpy's
    err = capsys.readouterr().err  # ValueError 'negative dimensions', or an empty log the report then refused
    assert words in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()  # was: .fmops, policies.yaml and sft.yaml left, blocking the next try


def test_prepare_llm_demo_refuses_steps_it_cannot_train(tmp_path, hostile):
    from fmops_nb.demo_llm import prepare_llm_demo
    for steps in (0, -1, 2.5):
        hostile(f"prepare_llm_demo(steps={steps!r})")
        with pytest.raises(ValidationError, match=rf"steps={steps!r}: give a whole number of SFT steps, at least 1"):
            prepare_llm_demo(tmp_path / "d", n=10, steps=steps, log=False)
        assert not (tmp_path / "d").exists()


def test_load_lm_refuses_a_classifier_and_a_folder_without_a_tokenizer(lm, tmp_path, hostile):
    from transformers import BertConfig, BertForSequenceClassification
    hostile("reference_lm / load_lm given a BERT classifier's folder (no tokenizer either)")
    BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32)).save_pretrained(tmp_path / "clf")
    with pytest.raises(ValidationError, match=r"clf holds no causal LM \(its config's architectures: "
                                              r"BertForSequenceClassification\)"):
        perplexity(tmp_path / "clf", ["Return the value."])  # was: a perplexity of about 64 from a random LM head
    hostile("load_lm given the small LM's folder with its tokenizer files deleted")
    shutil.copytree(lm, tmp_path / "bare")
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"): (tmp_path / "bare" / f).unlink()
    with pytest.raises(ValidationError, match=r"bare has no tokenizer"):
        load_lm(tmp_path / "bare")  # was: transformers' ValueError "Couldn't instantiate the backend tokenizer"
    hostile("load_lm given a folder whose config.json is not JSON")
    shutil.copytree(lm, tmp_path / "broken")
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(ValidationError, match=r"broken/config.json is not a model config"):
        load_lm(tmp_path / "broken")


def test_a_gpt2_style_lm_head_model_is_a_causal_lm_to_the_generation_diff(lm, tmp_path, hostile):
    from transformers import GPT2Config, GPT2LMHeadModel
    hostile("a generation diff of two GPT-2 style versions (architectures: GPT2LMHeadModel, not ...ForCausalLM)")
    reg = Registry(log=False)
    for seed in (0, 1):
        import torch
        torch.manual_seed(seed)
        folder = tmp_path / f"gpt2-{seed}"
        GPT2LMHeadModel(GPT2Config(vocab_size=2048, n_embd=16, n_layer=1, n_head=2, n_positions=64)).save_pretrained(
            folder)
        for f in lm.iterdir():
            if f.name.startswith("tokenizer") or f.name == "chat_template.jinja": shutil.copy(f, folder / f.name)
        reg.register("gpt", folder)
    g = diff("gpt:v1", "gpt:v2", reg, probe=PromptProbe(["Return the", "Create a new"]), max_new_tokens=3).generation
    assert g["n"] == 2 and len(g["rows"]) == 2  # was: "gpt:v1 is not a causal LM (... GPT2LMHeadModel)"
    assert [r["a"] for r in g["rows"]] == generate(tmp_path / "gpt2-0", ["Return the", "Create a new"], 3)


@pytest.mark.slow
@pytest.mark.parametrize("answer", [None, ""])
def test_llm_report_on_a_log_of_only_empty_answers_reports_them(tmp_path, answer, hostile):
    "A day the model answered nothing (an outage) is what the report is for: 100% empty, not a failed report."
    import subprocess
    import sys
    hostile(f"llm_report on a traffic log whose every response is {answer!r}")
    rows = [{"prompt": f"Explain: item {i}", "response": f"Return item {i} of the list, or the default.",
             "ts": f"2026-11-01T00:00:{i:02d}Z"} for i in range(40)]
    (tmp_path / "ref.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "cur.jsonl").write_text("".join(json.dumps(r | {"response": answer}) + "\n" for r in rows))
    r = subprocess.run([sys.executable, "-m", "fmops_nb.cli", "report", "run", "llm_report", "-p", "reference",
                        str(tmp_path / "ref.jsonl"), "-p", "current", str(tmp_path / "cur.jsonl"), "-p", "embedder",
                        "hashing", "--no-wandb"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr  # was: "cell 7: ValidationError: Recorded values must be finite
    run_dir = next((tmp_path / ".fmops" / "reports" / "llm_report").iterdir())  # numbers, got nan."
    v = json.loads((run_dir / "values.json").read_text())
    assert v["traffic"]["current"]["response"]["empty_rate"] == 1.0 and "response.empty" in v["drifted_columns"]


def test_prompts_cut_to_fit_the_context_are_counted_in_the_generation_diff(lm, hostile):
    hostile("a probe prompt of about 2,000 tokens on a model of 512")
    reg = Registry(log=False)
    reg.register("lm", lm)
    long = "qz " * 2000 + "Return the"
    d = diff("lm:v1", "lm:v1", reg, probe=PromptProbe([long, "Create a new"]), max_new_tokens=4)
    assert d.generation["prompts_cut"] == {"a": 1, "b": 1}  # was: cut without a word
    assert "1 prompt cut to fit the context (its end kept)" in repr(d)
    assert d.generation["rows"][0]["a"] == generate(lm, [long], 4)[0]
    from fmops_nb.html import generation_html  # the panel shows the prompt's start and end, to_dict() all of it
    shown = generation_html(d.generation)
    assert long not in shown and "qz qz" in shown and "Return the" in shown and len(shown) < 8000
    assert d.to_dict()["generation"]["rows"][0]["prompt"] == long
