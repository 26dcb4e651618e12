"""Generation diffs (issue 15, item 4): two causal-LM versions answer a prompt probe greedily, side by side; the diff
says where they agree, how close their answers are in meaning, what got fixed or broken against expected answers, and
each version's perplexity. The versions are real: the small LM fmops_nb builds, and a copy of it with its weights
perturbed by torch and saved with `save_pretrained`."""
import json
import re
import shutil
import subprocess

import pytest

from stdlib_text import require_fm

require_fm()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fmops_nb.diff import PromptProbe, diff, read_probe  # noqa: E402
from fmops_nb.embeddings import embed_texts  # noqa: E402
from fmops_nb.errors import ValidationError  # noqa: E402
from fmops_nb.lm import generate, perplexity, tiny_lm  # noqa: E402
from fmops_nb.registry import Registry  # noqa: E402

PROMPTS = ["Return the", "Create a new", "Raise an exception if", "The default value of"]
TOKENS = 8


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    "The small LM's folder (v1) and a copy with every weight perturbed by seeded noise (v2)."
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(1)
    v1 = tiny_lm(threads=1)
    v2 = tmp_path_factory.mktemp("perturbed") / "lm"
    model = AutoModelForCausalLM.from_pretrained(v1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters(): p.add_(torch.randn(p.shape, generator=g) * 2.0 * p.float().std())
    model.save_pretrained(v2)
    for f in v1.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja": shutil.copy(f, v2 / f.name)
    return v1, v2


def register(folders):
    reg = Registry(log=False)
    reg.register("lm", folders[0]); reg.register("lm", folders[1], parent="lm:v1")
    return reg


def probe_file(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.slow
def test_a_version_agrees_with_itself(folders, tmp_path):
    reg = register(folders)
    d = diff("lm:v1", "lm:v1", reg, probe=probe_file(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS]),
             max_new_tokens=TOKENS)
    g = d.generation
    assert g["agreement"] == 1.0 and g["mean_similarity"] == 1.0 and g["n"] == len(PROMPTS)
    assert all(r["same"] and r["similarity"] == 1.0 and r["length_change"] == 0 for r in g["rows"])
    assert g["perplexity"]["a"] == g["perplexity"]["b"]
    assert d.behaviour["agreement"] == 1.0 and d.behaviour["flipped"] == []
    assert "answers agree on 100.0% of 4 prompts, mean similarity 1.000" in d.headline()


@pytest.mark.slow
def test_a_perturbed_version_answers_differently_and_the_diff_says_how_much(folders, tmp_path):
    reg = register(folders)
    a, b = generate(folders[0], PROMPTS, TOKENS), generate(folders[1], PROMPTS, TOKENS)  # the truth, independently
    assert a != b
    probe = probe_file(tmp_path / "p.jsonl", [{"prompt": p, "reference": p + " the value."} for p in PROMPTS])
    d = diff("lm:v1", "lm:v2", reg, probe=probe, max_new_tokens=TOKENS)
    g = d.to_dict()["generation"]
    assert [r["a"] for r in g["rows"]] == a and [r["b"] for r in g["rows"]] == b  # side by side, every prompt
    assert g["agreement"] == np.mean([x == y for x, y in zip(a, b)]) < 1
    i = next(k for k in range(len(a)) if a[k] != b[k])
    ea, eb = embed_texts([a[i], b[i]], "minilm", cache=False)
    assert g["rows"][i]["similarity"] == pytest.approx(float(ea @ eb), abs=1e-5) and g["rows"][i]["similarity"] < 1
    assert g["rows"][i]["length_change"] == len(b[i]) - len(a[i])
    texts = [p + " the value." for p in PROMPTS]
    assert g["perplexity"]["a"] == pytest.approx(perplexity(folders[0], texts))
    assert g["perplexity"]["b"] == pytest.approx(perplexity(folders[1], texts))
    assert g["perplexity"]["b"] != pytest.approx(g["perplexity"]["a"])
    assert g["perplexity"]["on"] == "the probe's reference texts" and g["match"] is None and g["fixed"] is None
    head = d.headline()
    assert f"perplexity {g['perplexity']['a']:.4g} → {g['perplexity']['b']:.4g}" in head
    assert f"mean similarity {g['mean_similarity']:.3f}" in head
    assert repr(a[i][:100]) in repr(d) and repr(b[i][:100]) in repr(d)
    json.dumps(d.to_dict())  # the whole diff, answers included, is JSON


@pytest.mark.slow
def test_fixed_and_broken_are_counted_against_the_expected_answers(folders, tmp_path):
    reg = register(folders)
    a, b = generate(folders[0], PROMPTS, TOKENS), generate(folders[1], PROMPTS, TOKENS)
    differ = [k for k in range(len(a)) if a[k].strip() != b[k].strip()]
    assert len(differ) >= 2, (a, b)
    fixed, broken = differ[0], differ[1]  # v2's answer expected; v1's answer expected
    rows = [{"prompt": p} for p in PROMPTS]
    rows[fixed]["expected"], rows[broken]["expected"] = b[fixed], a[broken]
    rows[0 if 0 not in (fixed, broken) else 3]["expected"] = "zzz-never-said"  # wrong both times: neither
    probe = probe_file(tmp_path / "p.jsonl", [r | {"match": "exact"} for r in rows])
    d = diff("lm:v1", "lm:v2", reg, probe=probe, max_new_tokens=TOKENS)
    g = d.generation
    assert (g["fixed"], g["broken"], g["labelled"], g["match"]) == (1, 1, 3, "exact")
    assert g["rows"][fixed]["verdict"] == "fixed" and g["rows"][broken]["verdict"] == "broken"
    assert (d.behaviour["fixed"], d.behaviour["broken"]) == (1, 1)
    assert "1 fixed, 1 broken of 3 with expected answers (exact)" in d.headline()
    assert g["perplexity"]["on"] == "the prompts + expected answers"


@pytest.mark.slow
def test_hostile_prompts_stay_text_in_the_panel(folders, tmp_path):
    from fmops_nb.widgets import DiffPanel
    reg = register(folders)
    hostile = ["<script>alert(1)</script> Return the", "<img src=x onerror=alert(2)> Create a new"]
    d = diff("lm:v1", "lm:v2", reg, probe=PromptProbe(hostile, ["<b>bold</b>", None]), max_new_tokens=TOKENS)
    assert d.generation["n"] == 2 and d.behaviour["flipped"], d.generation["rows"]
    for markup in (d._repr_html_(), DiffPanel(d).summary.value):
        assert "<script>alert" not in markup and "<img src=x" not in markup and "<b>bold" not in markup
        assert "&lt;script&gt;alert(1)&lt;/script&gt; Return the" in markup
        assert "&lt;b&gt;bold&lt;/b&gt;" in markup
        assert "No probe run" not in markup
        for r in d.generation["rows"]:
            if not r["same"]: assert re.search(re.escape(_esc(r["b"])), markup)


def _esc(s):
    import html
    return html.escape(s)


def classifiers(tmp_path):
    "Two versions of a tiny BERT sequence classifier, registered."
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(tmp_path / "clf")
    reg = Registry(log=False)
    reg.register("clf", tmp_path / "clf"); reg.register("clf", tmp_path / "clf")
    return reg


def test_bad_probes_are_named_before_anything_runs(tmp_path):
    reg = classifiers(tmp_path)
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ValidationError, match="holds no prompts"):
        diff("clf:v1", "clf:v2", reg, probe=tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"prompt": "ok"}\n\n{"prompt": "café"}\n'.encode("latin-1"))
    with pytest.raises(ValidationError, match=r"latin1.jsonl, line 3: not UTF-8"):
        read_probe(tmp_path / "latin1.jsonl")
    (tmp_path / "noprompt.jsonl").write_text('{"prompt": "a"}\n{"question": "b", "expected": "c"}\n')
    with pytest.raises(ValidationError, match=r"line 2: no text under 'prompt'"):
        diff("clf:v1", "clf:v2", reg, probe=str(tmp_path / "noprompt.jsonl"))
    (tmp_path / "notjson.jsonl").write_text('{"prompt": "a"}\nprompt: b\n')
    with pytest.raises(ValidationError, match=r"line 2: not JSON"):
        read_probe(tmp_path / "notjson.jsonl")


def test_a_classifier_with_a_prompt_probe_is_told_which_probe_fits(tmp_path):
    reg = classifiers(tmp_path)
    probe = probe_file(tmp_path / "p.jsonl", [{"prompt": "Return the"}])
    with pytest.raises(ValidationError, match=r"clf:v1 is not a causal LM .*BertForSequenceClassification.*"
                                              r"Probe\(inputs, predict, labels\)"):
        diff("clf:v1", "clf:v2", reg, probe=probe)


@pytest.mark.slow
def test_the_magic_and_the_command_line_diff_by_generation(folders, tmp_path):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    register(folders)
    probe = probe_file(tmp_path / "p.jsonl", [{"prompt": p, "expected": "the file."} for p in PROMPTS[:2]])
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        with capture_output() as out:
            d = ip.run_line_magic("fmops", f"diff lm:v1 lm:v2 --probe {probe} --max-new-tokens 6")
        assert d.generation["max_new_tokens"] == 6 and d.generation["n"] == 2 and d.generation["labelled"] == 2
        assert len(out.outputs) == 1 and "application/vnd.jupyter.widget-view+json" in out.outputs[0].data  # the panel
        assert "answers agree on" in d.headline() and "6 new tokens" in repr(d)
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()
    r = subprocess.run([shutil.which("fmops") or "fmops", "diff", "lm:v1", "lm:v2", "--probe", str(probe),
                        "--max-new-tokens", "6", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout)["generation"]
    assert [(x["a"], x["b"]) for x in g["rows"]] == [(x["a"], x["b"]) for x in d.generation["rows"]]
    (tmp_path / "empty.jsonl").write_text("")
    r = subprocess.run([shutil.which("fmops") or "fmops", "diff", "lm:v1", "lm:v2", "--probe",
                        str(tmp_path / "empty.jsonl")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "holds no prompts" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_the_panel_shows_every_prompt_answered_side_by_side(folders, tmp_path):
    from fmops_nb.widgets import DiffPanel
    reg = register(folders)
    a, b = generate(folders[0], PROMPTS, TOKENS), generate(folders[1], PROMPTS, TOKENS)
    probe = PromptProbe(PROMPTS, [b[0], a[1], None, None], match="exact")
    d = diff("lm:v1", "lm:v1", reg, probe=probe, max_new_tokens=TOKENS)  # every answer the same: no flips to show
    for markup in (d._repr_html_(), DiffPanel(d).summary.value):
        rows = re.findall(r"<tr[^>]*><td>(\d+)</td><td class='fmops-text'>(.*?)</td><td class='fmops-text'>(.*?)</td>"
                          r"<td class='fmops-text'>(.*?)</td>", markup.split("fmops-generation", 1)[1])
        assert [(int(i), p, x, y) for i, p, x, y in rows] == [(k, _esc(PROMPTS[k]), _esc(a[k]), _esc(a[k]))
                                                              for k in range(len(PROMPTS))]
        assert "Agreement 100.0% of 4 prompts" in markup and "right 1 → 1 of 2 (exact): 0 fixed, 0 broken" in markup


@pytest.mark.slow
def test_a_lora_adapter_generates_merged_into_its_base(folders, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    m = get_peft_model(AutoModelForCausalLM.from_pretrained(folders[0]),
                       LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "lora_B" in n: p.add_(torch.randn_like(p) * 0.5)
    m.save_pretrained(tmp_path / "adapter")
    m.merge_and_unload().save_pretrained(tmp_path / "merged")  # the truth: the same adapter merged by hand
    for f in folders[0].glob("tokenizer*"): shutil.copy(f, tmp_path / "merged" / f.name)
    reg = Registry(log=False)
    reg.register("lm", folders[0]); reg.register("lm", tmp_path / "adapter", base="lm:v1")
    assert reg.get("lm:v2").format == "peft"
    d = diff("lm:v1", "lm:v2", reg, probe=PromptProbe(PROMPTS), max_new_tokens=TOKENS)
    assert [r["b"] for r in d.generation["rows"]] == generate(tmp_path / "merged", PROMPTS, TOKENS)
    assert [r["a"] for r in d.generation["rows"]] == generate(folders[0], PROMPTS, TOKENS)
    assert d.lora["lm:v2"]  # the adapter's ΔW view stays
    back = diff("lm:v2", "lm:v1", reg, probe=PromptProbe(PROMPTS), max_new_tokens=TOKENS).generation  # both kept now
    assert [(r["a"], r["b"]) for r in back["rows"]] == [(r["b"], r["a"]) for r in d.generation["rows"]]  # base unmerged


@pytest.mark.slow
def test_a_second_diff_loads_nothing_again_and_versions_are_told_apart_by_content(folders, tmp_path, monkeypatch):
    from fmops_nb import diff as D
    loads = []
    real = D._load_version_lm
    monkeypatch.setattr(D, "_load_version_lm", lambda reg, v: loads.append(v.id) or real(reg, v))
    D._VERSION_LMS.clear()
    reg = register(folders)
    first = diff("lm:v1", "lm:v2", reg, probe=PromptProbe(PROMPTS), max_new_tokens=TOKENS).generation
    assert loads == ["lm:v1", "lm:v2"]
    again = diff("lm:v1", "lm:v2", reg, probe=PromptProbe(PROMPTS), max_new_tokens=TOKENS).generation
    assert loads == ["lm:v1", "lm:v2"] and again["rows"] == first["rows"]  # the same answers, nothing loaded again
    monkeypatch.setenv("FMOPS_HOME", str(tmp_path / "other" / ".fmops"))  # lm:v1 and lm:v2 the other way round here
    other = Registry(log=False)
    other.register("lm", folders[1]); other.register("lm", folders[0])
    swapped = diff("lm:v1", "lm:v2", other, probe=PromptProbe(PROMPTS), max_new_tokens=TOKENS).generation
    assert [(r["a"], r["b"]) for r in swapped["rows"]] == [(r["b"], r["a"]) for r in first["rows"]]
    assert loads == ["lm:v1", "lm:v2"]  # the same files, known by their hashes: still nothing loaded
    monkeypatch.setattr(D, "_KEEP_BYTES", 0)  # a model larger than what a process keeps: used, then let go
    D._VERSION_LMS.clear()
    big = diff("lm:v1", "lm:v2", reg, probe=PromptProbe(PROMPTS), max_new_tokens=TOKENS).generation
    assert loads[2:] == ["lm:v1", "lm:v2"] and D._VERSION_LMS == {} and big["rows"] == first["rows"]
    assert big["perplexity"]["a"] == pytest.approx(first["perplexity"]["a"])  # one at a time, the same numbers
    assert big["perplexity"]["b"] == pytest.approx(first["perplexity"]["b"])


@pytest.mark.slow
def test_answers_reach_on_batch_as_each_batch_is_decoded(folders):
    "The diff embeds each batch of answers while the next one generates: `on_batch` sees every answer once, in order."
    seen = []
    out = generate(folders[0], PROMPTS + PROMPTS[:1], TOKENS, batch_size=2,
                   on_batch=lambda s, said: seen.append((s, said)))
    assert [s for s, _ in seen] == [0, 2, 4] and [x for _, said in seen for x in said] == out
    assert out == generate(folders[0], PROMPTS + PROMPTS[:1], TOKENS, batch_size=2)


@pytest.mark.slow
def test_the_side_thread_gives_what_each_step_alone_gives_with_a_shared_tokenizer_too(folders):
    "Answers, perplexities and prompts cut from the diff's two threads equal those of each step run alone, in order; two "
    "versions holding one tokenizer object (the side thread then works on copies) give the same."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from fmops_nb import diff as D
    tok = AutoTokenizer.from_pretrained(folders[0])
    m1, m2 = (AutoModelForCausalLM.from_pretrained(f).eval() for f in folders)
    prompts = PROMPTS * 15  # several batches: embeddings are queued 48 at a time
    texts = [p + " a value" for p in PROMPTS]
    alone = [generate((tok, m), prompts, TOKENS) for m in (m1, m2)]
    ppl = [perplexity((tok, m), texts) for m in (m1, m2)]
    for lms in ([(tok, m1), (AutoTokenizer.from_pretrained(folders[1]), m2)], [(tok, m1), (tok, m2)]):
        ans_a, ans_b, ppls, cut, memo, missing = D._answers(lms, prompts, texts, TOKENS)
        assert [ans_a, ans_b] == alone and ppls == pytest.approx(ppl, rel=1e-5) and cut == [0, 0] and not missing
        want = {x for x in ans_a} | {y for x, y in zip(ans_a, ans_b) if x != y}
        assert len(memo) == len(want)  # a's answers, and b's that differ, each embedded once
