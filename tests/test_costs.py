"""What a run costs, recorded where a maintainer looks: a report run's record and its W&B run (read back from the run
file), with the kernel's CPU and memory counted; the figures a machine cannot measure are marked as estimates.
(A fine-tune's cost, in its status and W&B run, is checked by tests/test_multinode.py on the two-node run.)"""
import subprocess
import sys

import pytest

from fmops_nb.costs import Cost, Meter, total
from fmops_nb.reports import get_report, run_report
from fmops_nb.tracking import read_run
from fmops_nb.widgets import ReportPanel
from tiny import template_notebook


def burner(path, seconds=0.5, mb=120):
    "A report template whose kernel burns `seconds` of CPU and holds `mb` MB."
    return template_notebook(path, f"seconds: float = {seconds}\nmb: int = {mb}\n",
                             "import time\nfrom fmops_nb.reports import record\n"
                             "held = bytearray(mb * 2**20)\nfor i in range(0, len(held), 4096): held[i] = 1\n"
                             "t = time.process_time()\nwhile time.process_time() - t < seconds: pass\n"
                             "record('burned_s', time.process_time() - t)\n")


@pytest.mark.slow
def test_a_report_run_records_its_cost_with_the_kernel_s_work_and_logs_it_to_wandb(tmp_path):
    run = run_report(burner(tmp_path / "burn.ipynb"), log=True)
    assert run.status == "finished", run.error
    c = run.cost
    assert c.cpu_s >= run.values["burned_s"] >= 0.5  # the kernel's CPU is the report's
    assert c.peak_rss_mb >= 120  # and so is the memory the kernel held
    assert c.wall_s >= c.cpu_s / 4 and c.kwh > 0 and c.co2e_kg > 0
    assert any(k.startswith("process ") and v.startswith("measured") for k, v in c.counters.items())
    assert c.counters["energy.memory"].startswith("estimated") and c.counters["co2e_kg"].startswith("estimated")
    assert get_report(run.id).cost == c  # kept in record.json
    summary = read_run(run.wandb_run).summary  # the W&B run file, read back
    logged = {k.removeprefix("cost/"): v for k, v in summary.items() if k.startswith("cost/")}
    assert logged == {k.split(".", 1)[1]: v for k, v in c.names().items()}
    assert "this report: " in ReportPanel(run).summary.value  # and its panel shows it


def test_a_meter_counts_its_ended_children_and_says_what_it_estimated():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nx = bytearray(80 * 2**20)"
    with Meter() as m:
        subprocess.run([sys.executable, "-c", burn + "\nfor i in range(0, len(x), 4096): x[i] = 1"], check=True)
    c = m.cost
    assert c.cpu_s >= 0.3 and c.peak_rss_mb >= 80 and c.kwh > 0
    measured = {k for k, v in c.counters.items() if v.startswith("measured")}
    assert {"wall_s", "cpu_s", "peak_rss_mb"} <= measured
    assert c.counters["energy.cpu"].startswith(("measured: RAPL", "estimated: CPU seconds"))
    assert (c.gpu_s is None) == ("gpu_s" not in c.counters)  # no GPU: no GPU figures, not zeros
    two = total([c, Cost.from_dict(c.to_dict())])
    assert two.cpu_s == pytest.approx(2 * c.cpu_s) and two.wall_s == c.wall_s and two.processes == 2


def test_a_bad_carbon_intensity_is_a_clear_error(monkeypatch):
    from fmops_nb.errors import ValidationError
    monkeypatch.setenv("FMOPS_CARBON_INTENSITY", "-1")
    with pytest.raises(ValidationError, match="FMOPS_CARBON_INTENSITY='-1' is not a number of 0 or more"):
        Meter().start().read()
