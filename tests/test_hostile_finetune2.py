"""Hostile fine-tune input, second round: settings that overflowed or reached numpy/json raw, scripts that are not
Python files, damaged checkpoints and run folders, and two resumes of one run at once. Every case is refused before
any training process starts, and nothing stored changes."""
import fcntl
import json

import pandas as pd
import pytest

from fmops_nb.core import Workspace
from fmops_nb.errors import NotFoundError, ValidationError
from fmops_nb.finetune import FinetuneSpec, get_run, launch
from fmops_nb.registry import Registry

pytestmark = pytest.mark.hostile

DATA = pd.DataFrame({"text": [f"ticket {i} about {'billing' if i % 2 else 'login'}" for i in range(40)],
                     "label": ["billing" if i % 2 else "login" for i in range(40)]})


def test_a_script_that_is_not_a_python_file_is_refused(tmp_path, hostile):
    "`script:` naming a shell script, or a .py link to a secret file, is refused: nothing is run on it."
    ws = Workspace.open()
    (tmp_path / "train.sh").write_text("echo hi\n")
    secret = tmp_path / "id_rsa"; secret.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (tmp_path / "train.py").symlink_to(secret)
    for script, words in (("train.sh", r"is not a Python file \(\.py\)"), ("train.py", r"is a link to .*id_rsa")):
        hostile(f"recipe script with script: {script}")
        with pytest.raises(ValidationError, match=words):
            launch(FinetuneSpec(base="", recipe="script", script=str(tmp_path / script), max_steps=1), ws=ws)
    assert not list(ws.runs_dir.iterdir())


def stopped_run(ws, rid, recipe="head", checkpoint=True):
    "A run folder as a stopped run leaves it, with one complete checkpoint at step 2."
    import torch
    from safetensors.torch import save_file
    d = ws.runs_dir / rid; d.mkdir()
    (d / "spec.json").write_text(json.dumps({"recipe": recipe, "nproc": 1, "threads": 1}))
    (d / "run.json").write_text("{}")
    (d / "status.json").write_text(json.dumps({"status": "stopped", "step": 2, "total_steps": 9}))
    if checkpoint:
        ck = d / "checkpoints" / "step-000002"; ck.mkdir(parents=True)
        save_file({"w": torch.zeros(64)}, str(ck / "trainable.safetensors"))
        torch.save({"optimizer": {}}, ck / "optim.pt")
        (ck / "meta.json").write_text('{"step": 2}')
    return d


def damage(path, keep=None, body=None):
    path.write_bytes(body if body is not None else path.read_bytes()[:keep])


@pytest.mark.parametrize("what", ["meta.json", "trainable.safetensors", "optim.pt"])
def test_resume_from_a_damaged_checkpoint_is_a_clear_error(what, hostile):
    "A truncated checkpoint file: resume names the checkpoint and what to do, and starts nothing."
    ws = Workspace.open()
    d = stopped_run(ws, "ft-20260101-000000-dddd")
    f = d / "checkpoints" / "step-000002" / what
    hostile(f"resume with checkpoints/step-000002/{what} truncated")
    damage(f, keep=len(f.read_bytes()) // 2)
    before = (d / "status.json").read_text()
    with pytest.raises(ValidationError) as e:
        get_run(d.name, ws).resume()
    msg = str(e.value)
    assert "checkpoint step-000002" in msg and "is damaged" in msg and what in msg, msg
    assert "delete" in msg and "launch it again" in msg, msg
    assert (d / "status.json").read_text() == before and not (d / "log.txt").exists()  # nothing was started


def test_resume_of_a_run_whose_spec_is_damaged_is_a_clear_error(hostile):
    ws = Workspace.open()
    d = stopped_run(ws, "ft-20260101-000000-eeee")
    hostile("resume of a run whose spec.json is not JSON")
    damage(d / "spec.json", body=b'{"recipe": "he')
    with pytest.raises(ValidationError, match="spec.json cannot be read"):
        get_run(d.name, ws).resume()
    assert not (d / "log.txt").exists()


def test_a_second_resume_while_one_is_under_way_is_refused(hostile):
    "Two `fmops finetune resume` at once on one run: while one holds the run, the other is refused and starts nothing."
    ws = Workspace.open()
    d = stopped_run(ws, "ft-20260101-000000-ffff", recipe="script", checkpoint=False)
    hostile("a resume while another resume of the same run is under way")
    with open(d / ".resume.lock", "a") as held:  # what the first resume holds from its check to its start
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ValidationError, match="is being resumed by another call right now"):
            get_run(d.name, ws).resume()
    assert json.loads((d / "status.json").read_text())["status"] == "stopped" and not (d / "log.txt").exists()


def test_training_data_by_fingerprint_skips_a_damaged_run_folder(hostile):
    "`train: sha256:...` looks through the runs: one with a damaged run.json is passed over, not a JSON traceback."
    ws = Workspace.open()
    d = stopped_run(ws, "ft-20260101-000000-aaaa", checkpoint=False)
    hostile("train: sha256:... with a run folder whose run.json is not JSON")
    damage(d / "run.json", body=b"{bad")
    with pytest.raises(NotFoundError, match="No stored dataset has the fingerprint"):
        launch(FinetuneSpec(base="intent:production", train="sha256:" + "0" * 64), ws=ws)
    assert [p.name for p in ws.runs_dir.iterdir()] == [d.name]


def gone(pid: int) -> bool:
    "Has process `pid` exited (a zombie nobody reaps counts as exited)?"
    try:
        with open(f"/proc/{pid}/stat") as f: return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError: return True


@pytest.mark.slow
def test_a_script_that_floods_its_log_leaves_a_process_behind_and_reports_nan(tmp_path, hostile):
    """A script forks a child that ignores SIGTERM, prints 70 MB, saves a model, reports a NaN accuracy and exits 0:
    the run fails closed (nothing registered or promoted), its log keeps 64 MB and says what was cut, and the child
    ends with the run instead of running on."""
    import os
    import signal
    import time
    hostile("a script that forks a SIGTERM-ignoring child, prints 70 MB, reports accuracy=NaN and exits 0")
    script = tmp_path / "train.py"
    script.write_text("import os, signal, time\n"
                      "from fmops_nb.finetune import report, report_eval, run_dir, save_model\n"
                      "if os.fork() == 0:\n"
                      "    signal.signal(signal.SIGTERM, signal.SIG_IGN); os.close(1); os.close(2)\n"
                      "    (run_dir() / 'child.pid').write_text(str(os.getpid())); time.sleep(600); os._exit(0)\n"
                      "while not (run_dir() / 'child.pid').exists(): time.sleep(0.05)\n"
                      "import sys\nfor _ in range(70): sys.stdout.write('x' * (1 << 20))\n"
                      "report(step=1, loss=1.0); save_model({}); report_eval(1, accuracy=float('nan'))\n")
    run = launch(FinetuneSpec(base="", recipe="script", script=str(script), max_steps=1, model="leaky",
                              promote_if_better="accuracy"))
    child = None
    try:
        assert run.wait(120) == "failed", run.tail(30)
        child = int((run.dir / "child.pid").read_text())
        assert "accuracy is not a finite number" in run.info["reason"] and run.version is None
        assert Registry(log=False).models() == []
        assert (run.dir / "log.txt").stat().st_size < (64 << 20) + (1 << 20)
        cut = "fmops: the script wrote 6,291,456 bytes more than the log keeps (67,108,864)"
        assert cut in run.tail(3), run.tail(3)
        end = time.time() + 30  # SIGKILL was sent before the run's process exited: wait for the child to be gone
        while not gone(child) and time.time() < end: time.sleep(0.05)
        assert gone(child), f"the script's child {child} outlived its run"
    finally:
        if child and not gone(child): os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize("rows,words", [(1, "The training data has 1 row(s), too few to hold eval data out of"),
                                        (0, "The training data has 0 row(s), too few to hold eval data out of")])
def test_a_classifier_train_set_too_small_to_split_says_so(rows, words, hostile):
    "A train file of one row (or none) and no eval: the error says so, not that eval has labels train lacks."
    hostile(f"a classifier fine-tune whose train data has {rows} row(s) and no eval")
    ws = Workspace.open()
    with pytest.raises(ValidationError) as e:
        launch(FinetuneSpec(base="intent:production", train=DATA.iloc[:rows]), ws=ws)
    assert words in str(e.value) and "Pass `eval` too" in str(e.value), str(e.value)
    assert not list(ws.runs_dir.iterdir())
