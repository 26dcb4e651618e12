"""The people of the governance tests: who holds which role, the policy that wants two approvers, and a workspace
with a given config (shared by tests/test_governance.py and the attack rounds on it)."""
from fmops_nb.core import Workspace

ROLES = """
[roles]
alice = ["maintainer"]
bob = ["approver"]
dana = ["approver"]
erin = ["approver", "maintainer"]
carol = ["viewer"]
"""
POLICY = """
[[monitor.policies]]
name = "two-approvers"
on = "promote"
when = "alias == 'production'"
require = {approvals = 2, role = "approver"}
"""


def workspace(tmp_path, config: str) -> Workspace:
    "A workspace under `tmp_path` whose config.toml is `config`."
    root = tmp_path / ".fmops"
    root.mkdir(exist_ok=True)
    (root / "config.toml").write_text(config)
    return Workspace.open(root)
