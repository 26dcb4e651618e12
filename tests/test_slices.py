"""Slices (issue 16, item 5): metrics per segment against a hand count, intervals for small segments, the per-segment
diff of two versions, and a promotion gate that blocks a candidate better overall but worse for one segment."""
import json
from contextlib import closing

import numpy as np
import pandas as pd
import pytest

from fmops_nb.core import Workspace
from fmops_nb.errors import PromotionBlocked, ValidationError
from fmops_nb.slices import MIN_N, compare_slices, gate_names, slice_metrics, wilson


def predictions(label: np.ndarray, region: np.ndarray, wrong: dict) -> np.ndarray:
    "The labels with exactly `wrong[region]` of each region's rows flipped (the first ones)."
    pred = label.copy()
    for r, k in wrong.items():
        pred[np.flatnonzero(region == r)[:k]] ^= 1
    return pred


REGION = np.array(["north"] * 200 + ["east"] * 150 + ["south"] * 60)
LABEL = np.tile([0, 1], 205)
# the candidate is right more often overall (373 vs 340 of 410), and less often in the south (42 vs 51 of 60)
OLD = predictions(LABEL, REGION, {"north": 40, "east": 21, "south": 9})
NEW = predictions(LABEL, REGION, {"north": 10, "east": 9, "south": 18})


def test_per_segment_metrics_equal_a_hand_count():
    df = pd.DataFrame({"region": REGION, "label": LABEL, "prediction": OLD, "conf": 0.8})
    df.loc[5, "region"] = None
    r = slice_metrics(df, by=["region"], score="conf")
    seg = r.slices["region"]
    assert set(seg) == {"north", "east", "south", "(missing)"}
    for name, rows in df.assign(region=df.region.fillna("(missing)")).groupby("region"):
        assert seg[name]["n"] == len(rows)
        assert seg[name]["accuracy"] == pytest.approx((rows.label == rows.prediction).mean())
        assert seg[name]["selection_rate"] == pytest.approx((rows.prediction == 1).mean())
        assert seg[name]["error_rate"] == pytest.approx(1 - seg[name]["accuracy"])
    assert r.overall["n"] == 410 and r.overall["accuracy"] == pytest.approx(340 / 410)
    # confidence 0.8 everywhere: ECE is |accuracy - 0.8| within each segment
    assert seg["south"]["ece"] == pytest.approx(abs(51 / 60 - 0.8))
    # the stored form is exactly {column: {segment: {metric: value, 'n': n}}}, JSON as it is
    assert json.loads(json.dumps(r.to_metrics())) == r.to_metrics()


def test_a_small_segment_reports_its_size_and_an_interval():
    df = pd.DataFrame({"tier": ["gold"] * 8 + ["free"] * 400, "label": 1, "prediction": [1] * 6 + [0] * 2 + [1] * 400})
    r = slice_metrics(df, by="tier")
    gold = next(x for x in r.disparity("accuracy") if x["segment"] == "gold")
    assert gold["n"] == 8 and gold["small"] and 8 < MIN_N
    lo, hi = gold["interval"]
    assert lo < 0.75 < hi and hi - lo > 0.4  # 6 of 8: wide
    assert wilson(0.75, 8) == gold["interval"]
    assert "gold (n=8 (small))" in repr(r) and "[0.41, 0.93]" in repr(r)
    assert "small" in r._repr_html_()
    # a small segment is shown but left out of the column's gap: the free tier alone is not a comparison
    assert "tier" not in r.summary()


def test_bad_input_is_a_clear_error(tmp_path):
    df = pd.DataFrame({"region": ["a"], "label": [1], "prediction": [1]})
    with pytest.raises(ValidationError, match="Available: region, label, prediction"):
        slice_metrics(df, by="country")
    with pytest.raises(ValidationError, match="label=/prediction="):
        slice_metrics(df.rename(columns={"prediction": "pred"}), by="region")
    with pytest.raises(ValidationError, match="No file"):
        slice_metrics(tmp_path / "nope.parquet", by="region")
    with pytest.raises(ValidationError, match="numbers"):
        slice_metrics(df.assign(loss=["high"]), by="region", loss="loss")


def test_the_slice_diff_names_the_segment_that_got_worse():
    a = slice_metrics(pd.DataFrame({"region": REGION, "label": LABEL, "prediction": OLD}), by="region").to_metrics()
    b = slice_metrics(pd.DataFrame({"region": REGION, "label": LABEL, "prediction": NEW}), by="region").to_metrics()
    d = compare_slices(a, b, tolerance=0.05)
    worse = [(r["segment"], r["metric"]) for r in d.worse]
    assert ("south", "accuracy") in worse and ("south", "error_rate") in worse
    assert not any(s in ("north", "east") for s, m in worse if m == "accuracy")
    assert "region=south" in d.headline() and "0.85 → 0.7" in d.headline()
    assert "fmops-bad" in d._repr_html_()


def test_overall_better_one_segment_worse_and_the_promotion_gate_blocks(tmp_path, isolated_workspace):
    from safetensors.numpy import save_file
    from fmops_nb.registry import Registry

    old = slice_metrics(pd.DataFrame({"region": REGION, "label": LABEL, "prediction": OLD}), by="region")
    new = slice_metrics(pd.DataFrame({"region": REGION, "label": LABEL, "prediction": NEW}), by="region")
    assert new.overall["accuracy"] > old.overall["accuracy"] + 0.05  # overall the candidate is clearly better
    ws = Workspace.open()
    (tmp_path / "policies.yaml").write_text(
        "policies:\n  - name: no-segment-worse\n    on: promote\n    action: block\n"
        "    when: slices.accuracy.max_drop > 0.05\n")
    ws.config_path.write_text(f'[monitor]\npolicy_file = "{tmp_path / "policies.yaml"}"\nsinks = ["log"]\n')
    ws.reload()
    reg = Registry(ws, log=False)
    for i in (1, 2):
        save_file({"w": np.full(4, float(i), np.float32)}, str(tmp_path / f"w{i}.safetensors"))
    v1 = reg.register("tickets", str(tmp_path / "w1.safetensors"),
                      metrics={"accuracy": old.overall["accuracy"], "slices": old.to_metrics()})
    assert v1.slices == old.to_metrics()
    reg.promote(v1.id, "production")  # no current version: the drop is open, the gate lets it through
    v2 = reg.register("tickets", str(tmp_path / "w2.safetensors"), parent=v1.id,
                      metrics={"accuracy": new.overall["accuracy"], "slices": new.to_metrics()})
    assert gate_names(v2.slices, v1.slices)["accuracy"]["max_drop"] == pytest.approx(51 / 60 - 42 / 60)
    with pytest.raises(PromotionBlocked, match="no-segment-worse"):
        reg.promote(v2.id, "production")
    assert reg.get("tickets:production").id == v1.id
    with closing(ws.connect()) as con:
        rows = [json.loads(r[0]) for r in con.execute("SELECT after FROM audit WHERE action='promote-blocked'")]
    assert rows and rows[-1]["version"] == v2.id and rows[-1]["policy"] == "no-segment-worse"
    assert "why" not in rows[-1]  # blocked by the drop itself, not because the gate could not be evaluated
    # the version diff says it too, and keeps no personal data of its probe
    from fmops_nb.diff import Probe, diff
    probe = Probe([f"refund for jo{i}@example.com" for i in range(6)], lambda v, xs: [v.number % 2 * (i % 2)
                                                                                     for i in range(len(xs))])
    d = diff(v1.id, v2.id, registry=reg, probe=probe)
    assert "worse for 1 segment" in d.headline() and "region=south: accuracy 0.85 -> 0.7" in repr(d)
    assert "region=south" in d._repr_html_() and "@example.com" not in d._repr_html_() + repr(d)
    assert d.behaviour["flipped"][0]["input"] == "refund for [EMAIL]"
    assert json.loads(json.dumps(d.to_dict()))["slices"]["rows"]
    with pytest.raises(ValidationError, match="no slices by 'country'"):
        diff(v1.id, v2.id, registry=reg, slice_by=["country"])


def test_the_cli_diff_compares_the_slices_named(tmp_path, isolated_workspace, capsys):
    from safetensors.numpy import save_file
    from fmops_nb.cli import main
    from fmops_nb.registry import Registry

    reg = Registry(Workspace.open(), log=False)
    for i, pred in ((1, OLD), (2, NEW)):
        save_file({"w": np.full(2, float(i), np.float32)}, str(tmp_path / f"w{i}.safetensors"))
        r = slice_metrics(pd.DataFrame({"region": REGION, "tier": "gold", "label": LABEL, "prediction": pred}),
                          by=["region", "tier"])
        reg.register("t", str(tmp_path / f"w{i}.safetensors"), metrics={"slices": r.to_metrics()})
    assert main(["diff", "t:v1", "t:v2", "--slice-by", "region", "--json"]) in (0, None)
    rows = json.loads(capsys.readouterr().out)["slices"]["rows"]
    assert {r["column"] for r in rows} == {"region"}
    assert any(r["segment"] == "south" and r["worse"] for r in rows)
    assert main(["diff", "t:v1", "t:v2", "--slice-by", "country"]) not in (0, None)
    assert "no slices by 'country'" in capsys.readouterr().err


def test_stored_slices_are_checked_before_a_version_is_registered(tmp_path, isolated_workspace):
    from safetensors.numpy import save_file
    from fmops_nb.registry import Registry

    save_file({"w": np.zeros(2, np.float32)}, str(tmp_path / "w.safetensors"))
    reg = Registry(Workspace.open(), log=False)
    with pytest.raises(ValidationError, match="needs 'n'"):
        reg.register("m", str(tmp_path / "w.safetensors"), metrics={"slices": {"region": {"a": {"accuracy": 0.5}}}})
    assert reg.versions() == []  # nothing half-registered


def test_slices_from_the_command_line_and_the_magic(tmp_path, isolated_workspace, capsys):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from fmops_nb.cli import main

    df = pd.DataFrame({"region": REGION, "label": LABEL, "prediction": NEW, "who": "ann@example.com"})
    df.to_csv(path := tmp_path / "scored.csv", index=False)
    assert main(["slices", str(path), "--slice-by", "region", "--slice-by", "who", "--positive", "1", "--json"]) in (0, None)
    out = json.loads(capsys.readouterr().out)
    assert out["slices"]["region"]["south"] == {"accuracy": 42 / 60, "error_rate": 18 / 60,
                                                "selection_rate": pytest.approx((NEW[-60:] == 1).mean()), "n": 60}
    assert list(out["slices"]["who"]) == ["[EMAIL]"]
    assert main(["slices", str(path), "--slice-by", "regio"]) not in (0, None)
    assert "Available: region" in capsys.readouterr().err
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "fmops_nb")
    shell.user_ns["scored"] = df
    with capture_output() as cap:
        r = shell.run_line_magic("fmops", "slices scored --slice-by region --no-redact --slice-by who")
    assert r.slices["region"]["north"]["n"] == 200 and list(r.slices["who"]) == ["ann@example.com"]
    assert "south (n=60)" in repr(r) and not cap.stderr


def test_a_segment_with_missing_labels_is_measured_on_its_labelled_rows():
    "Rows without a label (or a prediction) weigh nothing in the metrics that need one: value, interval, small mark."
    west_label = [1] * 30 + [0] * 10 + [None] * 40  # 80 rows, half labelled: 30 of the 40 labelled are right
    north_label = [1] * 5 + [0] * 15 + [None] * 40  # 60 rows, 20 labelled: 5 right (too few labelled to count)
    east_pred = [None] * 10 + [1] * 190  # 200 rows, all labelled 1; 10 were never scored
    df = pd.DataFrame({"region": ["west"] * 80 + ["north"] * 60 + ["east"] * 200,
                       "label": west_label + north_label + [1] * 200,
                       "prediction": [1] * 140 + east_pred, "conf": 0.9})
    r = slice_metrics(df, by="region", score="conf")
    west, north, east = (r.slices["region"][s] for s in ("west", "north", "east"))
    assert (west["n"], west["n_accuracy"], west["accuracy"]) == (80, 40, 0.75)
    row = {(x["segment"], x["metric"]): x for x in r.disparity()}
    assert row["west", "accuracy"]["interval"] == wilson(0.75, 40) and row["west", "accuracy"]["n"] == 40
    assert row["west", "selection_rate"]["interval"] == wilson(1.0, 80)  # every west row has a prediction
    assert west["ece"] == pytest.approx(0.15)  # |0.75 - 0.9| over the labelled rows (was NaN: dropped)
    assert (east["n_accuracy"], east["n_selection_rate"], east["accuracy"]) == (190, 190, 1.0)  # unscored: not wrong
    # north has 60 rows but 20 labels: its accuracy is small (shown, left out of gaps and gates), its selection rate not
    assert row["north", "accuracy"]["small"] and not row["north", "selection_rate"]["small"]
    assert r.summary()["region"]["accuracy"]["worst"] == "west"
    assert gate_names(r.to_metrics())["accuracy"]["min"] == 0.75
    assert "accuracy 0.750 [0.60, 0.86] (n=40)" in repr(r) and "(n=20, small)" in repr(r)
    d = compare_slices(r.to_metrics(), r.to_metrics())
    assert {(x["segment"], x["n_a"], x["small"]) for x in d.rows if x["metric"] == "accuracy"} == {
        ("west", 40, False), ("north", 20, True), ("east", 190, False)}
    assert json.loads(json.dumps(r.to_metrics())) == r.to_metrics()
