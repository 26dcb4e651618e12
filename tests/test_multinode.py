"""Multi-node fine-tunes: the spec's nnodes / node_rank / rdzv_endpoint become torchrun's rendezvous options, hostile
endpoints are refused before anything is created, and two single-process "nodes" on 127.0.0.1 (two launches of one
spec, node ranks 0 and 1, a rendezvous on a free port) train a small model together to the result a one-machine run
of two processes gives, which node 0 registers."""
import math
import socket

import pandas as pd

import pytest
import yaml

from tiny import DIST_SCRIPT

from fmops_nb.errors import PromotionBlocked, ValidationError
from fmops_nb.finetune import FinetuneSpec, _Script, _script_cmd, launch, runs
from fmops_nb.monitor import check, promotion_gate
from fmops_nb.registry import Registry
from fmops_nb.reports import run_report
from fmops_nb.tracking import find_runs, read_run
from fmops_nb.widgets import FinetunePanel

slow = pytest.mark.slow  # two torchrun launches and their training scripts: the full tier only


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dist_script(tmp_path):
    p = tmp_path / "dist.py"
    p.write_text(DIST_SCRIPT)
    return p


def two_node_spec(script, port, **kw):
    return dict(base="", recipe="script", script=str(script), max_steps=3, nproc=1, nnodes=2,
                rdzv_endpoint=f"127.0.0.1:{port}", model="dist") | kw


@pytest.mark.parametrize("endpoint", ["127.0.0.1:29400 --standalone", "--rdzv-conf=is_host=1:1",
                                      "node0; rm -rf ~:29400", "$(id):29400", "node0", "node0:99999",
                                      "<img src=x onerror=alert(1)>:1", "node0:29400\n--max-restarts=9"])
def test_a_hostile_endpoint_is_refused_before_anything_is_created(dist_script, endpoint, hostile):
    hostile(f"rdzv_endpoint {endpoint!r}")
    with pytest.raises(ValidationError, match="is not HOST:PORT"):
        launch(**two_node_spec(dist_script, 1, rdzv_endpoint=endpoint))
    assert runs() == []


@pytest.mark.parametrize("kw, says", [({"node_rank": 2}, "number the nodes 0 to 1"),
                                      ({"rdzv_endpoint": ""}, "set rdzv_endpoint"),
                                      ({"rdzv_backend": "etcd"}, "not one of static, c10d"),
                                      ({"nnodes": "2"}, "nnodes must be a whole number")])
def test_multi_node_settings_that_cannot_start_are_refused(dist_script, kw, says):
    with pytest.raises(ValidationError, match=says):
        FinetuneSpec(**two_node_spec(dist_script, 29400) | kw).validate()


def test_the_script_runs_under_a_rendezvous_with_the_spec_s_node_rank(dist_script):
    spec = [FinetuneSpec(**two_node_spec(dist_script, 29400, node_rank=r)).validate() for r in (0, 1)]
    cmds = [_script_cmd(_Script(folder=None, spec=s, meta={"script": str(dist_script)})) for s in spec]
    assert cmds[0][1:3] == ["-m", "torch.distributed.run"]
    for r, cmd in enumerate(cmds):
        assert {"--nnodes=2", f"--node-rank={r}", "--nproc-per-node=1", "--rdzv-backend=static",
                "--rdzv-endpoint=127.0.0.1:29400", "--max-restarts=0"} <= set(cmd)
    ids = [[a for a in cmd if a.startswith("--rdzv-id=")] for cmd in cmds]
    assert ids[0] == ids[1] and len(ids[0]) == 1  # both nodes join the same rendezvous
    one = FinetuneSpec(**two_node_spec(dist_script, 29400, nnodes=1, rdzv_endpoint="")).validate()
    assert _script_cmd(_Script(folder=None, spec=one, meta={"script": str(dist_script)}))[1:] == [str(dist_script)]


@slow
def test_two_nodes_on_127_0_0_1_train_together_and_node_0_registers(dist_script, tmp_path):
    spec = two_node_spec(dist_script, free_port())
    node1 = launch(**spec, node_rank=1)  # the order nodes come up in does not matter: node 1 waits for node 0
    node0 = launch(**spec, node_rank=0)
    assert node0.wait(300) == "finished", node0.tail(40)
    assert node1.wait(60) == "finished", node1.tail(40)
    ev = node0.events("step")
    assert [e["step"] for e in ev] == [1, 2, 3] and {e["world"] for e in ev} == {2.0}  # one job of two processes
    (w,) = [e["w_mean"] for e in node0.events("eval")]
    # the mean gradient of both ranks: the value a one-machine run of two processes gets (test_script_recipe)
    assert math.isclose(w, 1.5 * (1 - 0.8 ** 3), rel_tol=1e-5)
    v = Registry(log=False).get(node0.version)
    assert v.metrics["w_mean"]["value"] == w and v.meta.get("run_id") == node0.id
    assert node1.version is None and node1.events("step") == []  # node 1 trained; node 0 reports and registers
    assert "node 1 of 2" in node1.info["reason"] and "registers the result" in node1.info["reason"]
    for r in (node0, node1):  # each node's run records what its processes cost
        cost = r.info["cost"]
        assert r.cost.to_dict() == cost and cost["wall_s"] > 0 and cost["cpu_s"] > 0 and cost["peak_rss_mb"] > 0 and cost["kwh"] > 0
        # ... and logs it to the node's W&B run: read back from the run file
        (wb,) = [w for w in map(read_run, find_runs()) if w.job_type == "finetune" and w.config.get("run_id") == r.id]
        logged = {k.removeprefix("cost/"): v for k, v in wb.summary.items() if k.startswith("cost/")}
        assert logged["kwh"] == cost["kwh"] and logged["cpu_s"] == cost["cpu_s"] and logged["wall_s"] == cost["wall_s"]
    # policies can use what it cost: a promotion gate on the candidate's cost, and a fine-tune policy on what its
    # spec cost last time (the latest finished run of the same model and recipe)
    kwh = node0.info["cost"]["kwh"]
    (tmp_path / "ft.yaml").write_text(yaml.safe_dump(spec | {"node_rank": 0}))
    (tmp_path / "policies.yaml").write_text(yaml.safe_dump({"policies": [
        {"name": "too-costly", "on": "promote", "when": f"candidate.cost.kwh > {kwh / 2}", "action": "block"},
        {"name": "retrain-cheap", "when": f"drifted and cost.kwh < {kwh * 10}", "action": "finetune",
         "spec": "ft.yaml"},
        {"name": "retrain-dear", "when": f"drifted and cost.kwh < {kwh / 10}", "action": "finetune",
         "spec": "ft.yaml"}]}))
    reg = Registry(log=False)
    with pytest.raises(PromotionBlocked, match="too-costly"):
        promotion_gate(reg, v, "dist", "production", path=tmp_path / "policies.yaml")
    got = {f.policy: f.state for f in check({"drifted": True}, path=tmp_path / "policies.yaml", dry_run=True,
                                             display=False).firings}
    assert got == {"retrain-cheap": "would fire", "retrain-dear": "quiet"}
    # the panel shows it, and the maintenance report puts it beside the production version it made
    assert "fmops-cost" in FinetunePanel(node0, live=False).result.value
    reg.promote(v.id, to="production", reason="two-node result")
    pd.DataFrame({"x": [0.0, 1.0, 2.0] * 20}).to_parquet(tmp_path / "window.parquet")
    m = run_report("maintenance_report", {"reference": str(tmp_path / "window.parquet"), "model": "dist",
                                          "current": str(tmp_path / "window.parquet")}, log=False)
    assert m.status == "finished", m.error
    assert m.values["retrain_cost"]["kwh"] == kwh and m.values["retrain"].startswith("retrain: ")
