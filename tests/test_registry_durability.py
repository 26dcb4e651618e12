"""The registry under concurrency and kill -9: nothing lost, nothing half-registered."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fmops_nb.core import Workspace
from fmops_nb.registry import Registry, verify_audit

pytestmark = pytest.mark.slow  # two processes, SIGKILL: the full tier only

WRITER = r"""
import sys, torch
from fmops_nb.core import Workspace
from fmops_nb.registry import Registry
ws, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
reg = Registry(Workspace.open(ws), log=False)
for i in range(n):
    v = reg.register('shared', {'w': torch.full((64, 64), float(i)), 'who': torch.tensor([ord(c) for c in tag])}, metrics={'step': i})
    reg.promote(v.id, to='production', reason=f'{tag} {i}')
print('done', flush=True)
"""


def test_two_processes_register_and_promote_at_once(tmp_path):
    ws = tmp_path / "ws"
    Registry(Workspace.open(ws), log=False)  # schema in place before the race
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(ws), tag, "6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for tag in ("a", "b")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    reg = Registry(Workspace.open(ws), log=False)
    vs = reg.versions("shared")
    assert [v.number for v in vs] == list(range(1, 13))  # consecutive numbers, none lost, none doubled
    assert sorted(v.meta["metrics"]["step"]["value"] for v in vs) == sorted([float(i) for i in range(6)] * 2)
    moves = reg.history("shared", "production")
    assert len(moves) == 12 and {m["reason"].split()[0] for m in moves} == {"a", "b"}
    assert reg.get("shared:production").id == moves[-1]["version"]
    check = verify_audit(reg.ws)
    assert check.ok and check.rows == 24, check
    assert json.loads(reg.ws.anchor_path.read_text())["seq"] == 24  # the anchor moved forward to the last row
    for v in vs:  # every version's weights read back whole
        assert set(reg.load(v.id)) == {"w", "who"}


KILLED = r"""
import sys, numpy as np
from safetensors.numpy import save_file
from fmops_nb.core import Workspace
from fmops_nb.registry import Registry

reg = Registry(Workspace.open(sys.argv[1]), log=False)
print('ready', flush=True)
reg.register('big', sys.argv[2], metrics={'accuracy': 0.9})
print('registered', flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4, 0.6, 0.8])
def test_kill_during_register_leaves_no_half_version(tmp_path, delay):
    from safetensors.numpy import save_file
    ws = tmp_path / "ws"
    reg = Registry(Workspace.open(ws), log=False)
    reg.register("big", {"w": __import__("torch").zeros(4)})  # v1 exists before the kill
    big = tmp_path / "big.safetensors"
    rng = np.random.default_rng(0)
    save_file({f"layer{i}": rng.standard_normal((512, 1024), dtype=np.float32) for i in range(48)}, str(big))  # ~100 MB
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(ws), str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    reg = Registry(Workspace.open(ws), log=False)
    vs = reg.versions("big")
    assert [v.number for v in vs] in ([1], [1, 2])  # the new version is there whole, or not at all
    print(f"killed after {delay}s: versions {[v.number for v in vs]}, orphan blobs {len(reg.blobs.all()) - 3 * len(vs)}, temporaries {len(reg.blobs.temporaries())}")
    for v in vs:
        reg.files(v.id)  # every file of every visible version verifies against its hash
    assert verify_audit(reg.ws).ok
    before = len(reg.blobs.all())
    freed = reg.gc(grace_s=0)
    kept = {f["sha256"] for v in vs for f in v.files.values()} | {x for v in vs for x in (v.manifest, v.card)}
    assert set(reg.blobs.all()) == kept and freed["blobs_removed"] == before - len(kept)
    assert not reg.blobs.temporaries()
    again = reg.register("big", big)  # and the registry still works
    assert again.number == len(vs) + 1 and reg.load(again.id)["layer3"].shape == (512, 1024)
