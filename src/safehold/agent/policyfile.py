"""Where the agent keeps its backup policy: HOME/policy.json (0600, it names the folders backed up).

The daemon reads it before every run, so a change takes effect at the next scheduled time.
"""

from __future__ import annotations

from safehold.agent.home import AgentHome, read_private, write_private
from safehold.formats import policy as policyfmt
from safehold.formats.policy import Policy


def load(home: AgentHome) -> Policy | None:
    try:
        data = read_private(home.policy_file)
    except FileNotFoundError:
        return None
    return policyfmt.decode(data)


def save(home: AgentHome, policy: Policy) -> None:
    write_private(home.policy_file, policyfmt.encode(policyfmt.check(policy)) + b"\n")
