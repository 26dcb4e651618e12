"""A report page as a person opens it: a head that names the model and the period, the parameters, when it ran and
where its W&B run is; the timeline along dates; each table once; an empty part said in one line."""
import re

import nbformat
import numpy as np
import pandas as pd
import pytest

from fmops_nb import reports
from fmops_nb.record import MIME


def fields(page: str) -> dict:
    "The head's label → value pairs, tags stripped."
    dl = re.search(r"<dl class=.fmops-fields.>(.*?)</dl>", page, re.S).group(1)
    return {k: re.sub(r"<.*?>", "", v) for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", dl, re.S)}


def output_notebook(params: dict, values: dict) -> nbformat.NotebookNode:
    "An output notebook as papermill leaves it: its parameters and times in the metadata, the recorded values."
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("...", outputs=[
        nbformat.v4.new_output("display_data", data={MIME: {"name": k, "value": v}}) for k, v in values.items()])])
    nb.metadata["papermill"] = {"parameters": params, "start_time": "2026-03-08T06:00:02.123456",
                                "end_time": "2026-03-08T06:00:14.4", "duration": 12.28}
    return nb


def test_the_head_names_model_period_parameters_run_time_and_wandb():
    nb = output_notebook({"model": "tickets", "alias": "production", "current": "data/2026-03-07.parquet"},
                         {"production_version": "tickets:v3",
                          "window": {"from": "2026-03-01", "to": "2026-03-07", "by": "the ts column"}})
    page = reports.report_html(nb, "maintenance_report 20260308-060002", status="finished",
                               tracking={"sync": "wandb sync /srv/.fmops/wandb/offline-run-20260308_060002-ab12"})
    got = fields(page)
    assert got["Model"] == "tickets:production (v3)"
    assert got["Period"] == "2026-03-01 to 2026-03-07 (the ts column)"
    assert "model=tickets" in got["Parameters"] and "current=data/2026-03-07.parquet" in got["Parameters"]
    assert got["Ran"] == "2026-03-08 06:00 UTC, 12.3 s"
    assert got["W&B"] == "saved offline; upload it with wandb sync /srv/.fmops/wandb/offline-run-20260308_060002-ab12"
    assert "fmops-head-ok" in page and page.count("<style>") == 1
    online = reports.report_html(nb, "t", tracking={"url": "https://wandb.ai/team/fmops/runs/ab12"})
    assert "<a href='https://wandb.ai/team/fmops/runs/ab12'>" in online  # online: one click to the run


def test_a_progress_bar_widget_is_not_frozen_into_the_static_page():
    "tqdm's notebook bar is a widget whose text fallback is a snapshot (36% done): the HTML page leaves it out."
    nb = output_notebook({}, {})
    bar = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "ab12", "version_major": 2, "version_minor": 0},
        "text/plain": "embedding texts:  36%|###5      | 256/715 [00:04<00:08, 53.74texts/s]"})
    printed = nbformat.v4.new_output("stream", name="stdout", text="the model's own print\n")
    nb.cells.append(nbformat.v4.new_code_cell("drift(...)", outputs=[bar, printed]))
    page = reports.report_html(nb, "maintenance_report x", status="finished")
    assert "embedding texts" not in page and "36%" not in page
    assert "the model&#x27;s own print" in page or "the model's own print" in page


def test_a_failed_run_and_a_diff_say_so_in_the_head():
    nb = output_notebook({"a": "tickets:v1", "b": "tickets:v2"}, {})
    page = reports.report_html(nb, "version_diff x", status="failed", error="cell 3 raised KeyError: 'label'")
    got = fields(page)
    assert got["Model"] == "tickets:v1 → tickets:v2" and got["W&B"] == "not logged"
    assert got["Period"].startswith("not known")
    assert "fmops-head-bad" in page and "failed: cell 3 raised KeyError: &#x27;label&#x27;" in page


@pytest.mark.slow
def test_a_drift_report_page_reads_along_dates_with_each_table_once(tmp_path):
    g = np.random.default_rng(0)
    days = pd.date_range("2026-03-01", periods=4, freq="D")
    ref = pd.DataFrame({"latency": g.lognormal(5, .3, 2000), "plan": g.choice(["free", "pro"], 2000)})
    cur = pd.DataFrame({"ts": np.repeat(days, 500), "plan": g.choice(["free", "pro"], 2000),
                        "latency": np.r_[g.lognormal(5, .3, 1000), g.lognormal(5.4, .3, 1000)]})
    ref.to_parquet(tmp_path / "ref.parquet"); cur.to_parquet(tmp_path / "cur.parquet")
    run = reports.run_report("drift_report", {"reference": str(tmp_path / "ref.parquet"),
                                              "current": str(tmp_path / "cur.parquet"), "chunk_by": "ts"})
    assert run.status == "finished", run.error
    page = run.html.read_text()
    got = fields(page)
    assert got["Period"] == "2026-03-01 to 2026-03-04 (by ts per D)" and got["Model"].startswith("none")
    assert "chunk_by=ts" in got["Parameters"] and got["W&B"].startswith("saved offline; upload it with wandb sync ")
    assert page.count('class="fmops-columns"') == 1 and "fmops-chunks" not in page  # the column table, once
    timeline = re.search(r'<svg class="fmops-timeline".*?</svg>', page, re.S).group(0)
    assert all(d in timeline for d in ("2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"))  # dates on the axis
    assert "latency" in re.search(r'<svg class="fmops-timeline-columns".*?</svg>', page, re.S).group(0)
    assert "fmops-quantile-bins" in page  # what moved: the drifted column's distribution
    plain = reports.run_report("drift_report", {"reference": str(tmp_path / "ref.parquet"),
                                                "current": str(tmp_path / "cur.parquet")}, log=False)
    assert 'class="fmops-empty">No timeline: pass chunk_by' in plain.html.read_text()  # said in one line
