"""`%fmops drift` and `fmops drift` on real files and notebook variables."""
import json
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output


def windows(tmp_path):
    rng = np.random.default_rng(0)
    n = 20_000
    ref = {"latency_ms": rng.lognormal(5.0, 0.35, n), "tokens": rng.poisson(120, n).astype(float),
           "channel": rng.choice(["web", "app", "email"], n, p=[0.5, 0.3, 0.2])}
    cur = {"latency_ms": rng.lognormal(5.2, 0.35, n), "tokens": rng.poisson(120, n).astype(float),
           "channel": rng.choice(["web", "app", "email"], n, p=[0.3, 0.5, 0.2])}
    paths = []
    for name, d in (("ref", ref), ("cur", cur)):
        p = tmp_path / f"{name} window.parquet"
        pq.write_table(pa.table(d), p)
        paths.append(p)
    return ref, cur, paths


@pytest.mark.slow
def test_cli_drift_json_and_html(tmp_path):
    _, _, (refp, curp) = windows(tmp_path)
    r = subprocess.run([shutil.which("fmops"), "drift", str(refp), str(curp), "--json", "--html", str(tmp_path / "r.html")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["schema"] == "fmops.drift/1" and d["dataset_drift"] is True
    assert sorted(d["drifted_columns"]) == ["channel", "latency_ms"]
    col = d["columns"]["tokens"]
    assert {"kind", "method", "statistic", "threshold", "p_value", "drifted", "status", "n_reference", "n_current"} <= col.keys()
    assert (col["status"], col["n_reference"], col["n_current"]) == ("ok", 20_000, 20_000)
    page = (tmp_path / "r.html").read_text()
    assert "<script" not in page and "latency_ms" in page and len(page) < 200_000
    r = subprocess.run([shutil.which("fmops"), "drift", str(refp), str(tmp_path / "missing.parquet")], capture_output=True, text=True)
    assert r.returncode == 1 and "missing.parquet does not exist" in r.stderr


def test_magic_drift_on_variables_and_quoted_paths(tmp_path):
    ref, cur, (refp, curp) = windows(tmp_path)
    ip = InteractiveShell.instance()
    try:
        ip.run_line_magic("load_ext", "fmops_nb")
        ip.user_ns.update(ref=ref, cur=cur)
        rep = ip.run_line_magic("fmops", "drift ref cur --columns latency_ms,tokens")
        assert list(rep.columns) == ["latency_ms", "tokens"] and rep.drifted == ["latency_ms"]
        rep2 = ip.run_line_magic("fmops", f'drift "{refp}" "{curp}" --mode p_value --correction bonferroni')
        assert sorted(rep2.drifted) == ["channel", "latency_ms"]
        assert "Bonferroni" in rep2.rule
        html = rep2._repr_html_()
        assert "fmops-drift" in html and "<script" not in html and len(html) < 200_000
        with capture_output() as shown:  # the magic shows the panel; the returned report does not repeat it in that cell
            ip.run_cell(f'%fmops drift "{refp}" "{curp}"', store_history=True)
        assert len(shown.outputs) == 1 and "application/vnd.jupyter.widget-view+json" in shown.outputs[0].data
        assert "Drift: 2 of 3 columns drifted" in shown.outputs[0].data["text/plain"]
        with capture_output() as later:  # in a later cell, the report shows its static HTML
            ip.run_cell("_", store_history=True)
        assert "fmops-drift" in later.outputs[0].data["text/html"]
        with pytest.raises(UsageError, match="Columns?.*'nope' not in"):
            ip.run_line_magic("fmops", "drift ref cur --columns nope")
    finally:
        ip.run_line_magic("unload_ext", "fmops_nb")
        InteractiveShell.clear_instance()


@pytest.mark.slow
def test_cli_drift_timeline_from_parquet_row_groups_and_log(tmp_path, isolated_workspace):
    import pandas as pd
    from fmops_nb.tracking import read_run
    g = np.random.default_rng(0)
    n = 20_000
    pd.DataFrame({"x": g.normal(size=n), "c": g.choice(list("abc"), n)}).to_parquet(tmp_path / "ref.parquet", row_group_size=5000)
    ts = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(n) * 4 * 86400 / n, unit="s")
    cur = pd.DataFrame({"x": np.r_[g.normal(size=n // 2), g.normal(0.5, 1, n // 2)], "c": g.choice(list("abc"), n), "ts": ts})
    cur.to_parquet(tmp_path / "cur.parquet", row_group_size=3000)  # row groups that straddle the days
    fmops = shutil.which("fmops")
    r = subprocess.run([fmops, "drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), "--chunk-by", "ts", "--log", "--json"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert [(c["chunk"], c["n"], c["status"]) for c in d["chunks"]] == [
        ("2026-01-01", 5000, "ok"), ("2026-01-02", 5000, "ok"), ("2026-01-03", 5000, "drift"), ("2026-01-04", 5000, "drift")]
    assert d["drifted_columns"] == ["x"] and "ts" not in d["columns"]
    run = read_run(d["wandb_run"])
    assert run.exit_code == 0 and run.summary["dataset_drift"] is True
    assert [row[2] for row in run.tables["timeline"]["data"]] == ["ok", "ok", "drift", "drift"]
    assert str(isolated_workspace) in d["wandb_run"]
    r = subprocess.run([fmops, "drift", str(tmp_path / "ref.parquet"), str(tmp_path / "cur.parquet"), "--chunk-by", "tss"], capture_output=True, text=True)
    assert r.returncode == 1 and "chunk_by column 'tss' is not in" in r.stderr and "Available: x, c, ts" in r.stderr


def test_a_pandas_categorical_of_sentences_is_text_by_how_often_each_label_occurs():
    """A categorical column whose rows mostly hold long sentences is read as text, one whose rows mostly hold short
    labels as a category: judged over the rows (each label's length counted once), not over the distinct labels."""
    import pandas as pd

    from fmops_nb.data import load
    sentence = "the customer asked for a refund of the last order twice"
    rows = lambda share: pd.Categorical([sentence] * share + ["ok"] * (100 - share), categories=[sentence, "ok", "no"])
    assert load(pd.DataFrame({"x": rows(80)}))["x"].kind == "text"
    assert load(pd.DataFrame({"x": rows(20)}))["x"].kind == "categorical"
    assert load(pd.DataFrame({"x": pd.Categorical([None] * 10, categories=[sentence])}))["x"].kind != "text"
