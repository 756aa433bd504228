"""The site's policy file, re-read when it changes (as the coordinator re-reads ``revoked.json``).

:class:`PolicyFile` is asked for the policy before every task (:func:`policy_file_mod`). It
compares the file's ``(mtime, size, inode)`` with what it last read; on a change it reads the
file again and audits it:

- ``policy-changed``: the SHA-256 of the old and the new file, and what changed (each field
  with its old and new value); the new policy applies from this task on;
- ``policy-invalid``: the file no longer parses or validates (or is gone). **Every task is then
  refused** (``policy-invalid``, naming the file and the field) until the steward fixes it,
  which is audited as a ``policy-changed`` again.

Why refuse rather than keep the last valid policy: an edit is the steward saying the policy
is no longer what it was. The most likely edit is a tightening (a study taken out of
``allowed_studies``, a higher ``min_privacy_mode``, a lower ``epsilon_cap``); running on under
the older, looser policy would do exactly what the steward just tried to forbid, and silently.
Refusing fails closed and tells the coordinator why, so the typo gets noticed and fixed.

Every field applies from the next task: the governance mods are built again for the new
policy, and the agent restarts its (idle) worker when ``resources`` or ``min_cell`` changed
(:meth:`fedcare.site.agent.SiteAgent`), so the worker runs under the new limits.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcare.errors import ConfigError
from fedcare.records.messages import Reply, Task
from fedcare.site.app import Handler, Mod
from fedcare.site.policy import SitePolicy

__all__ = ["PolicyFile", "PolicyState", "policy_file_mod"]


@dataclass(frozen=True)
class PolicyState:
    """The policy in force, or why there is none (``problem``)."""

    policy: SitePolicy | None
    problem: str = ""
    sha256: str = ""


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        k: {"old": old.get(k), "new": new.get(k)}
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k)
    }


class PolicyFile:
    """A policy file read at start and again whenever it changes (thread-safe)."""

    def __init__(self, path: Path, audit: Any) -> None:
        self.path = Path(path)
        self._audit = audit
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._state = PolicyState(None, "not read yet")
        policy = SitePolicy.from_yaml(self.path)  # a bad file at start stops `site start`
        self._stamp = self._stat()
        self._state = PolicyState(policy, "", self._digest())
        self._last_valid = policy  # what a change is compared with

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _digest(self) -> str:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return ""

    @property
    def initial(self) -> SitePolicy:
        """The policy read at start."""
        assert self._state.policy is not None
        return self._state.policy

    def current(self) -> PolicyState:
        """The policy in force now, re-reading (and auditing) the file if it changed."""
        with self._lock:
            stamp = self._stat()
            if stamp == self._stamp and stamp is not None:
                return self._state
            self._stamp = stamp
            self._reload()
            return self._state

    def _reload(self) -> None:
        old = self._state
        digest = self._digest()
        try:
            if not self.path.exists():
                raise ConfigError(f"site policy {self.path} is missing (deleted or moved)")
            policy = SitePolicy.from_yaml(self.path)
        except ConfigError as err:
            self._state = PolicyState(None, str(err), digest)
            self._audit.append(
                "policy-invalid",
                policy_file=str(self.path),
                old_sha256=old.sha256 or None,
                new_sha256=digest or None,
                problem=str(err),
            )
            return
        if old.policy is not None and policy == old.policy and digest == old.sha256:
            self._state = PolicyState(policy, "", digest)  # touched, not changed
            return
        before = self._last_valid.summary()
        self._state, self._last_valid = PolicyState(policy, "", digest), policy
        self._audit.append(
            "policy-changed",
            policy_file=str(self.path),
            old_sha256=old.sha256 or None,
            new_sha256=digest,
            changed=_diff(before, policy.summary()),
            policy=policy.summary(),
        )


def policy_file_mod(
    source: PolicyFile,
    mods_for: Callable[[SitePolicy], Sequence[Mod]],
    refuse: Callable[[Task, str, str], Reply],
) -> Mod:
    """Ask ``source`` for the policy before each task and run the task through the mods
    built for it (``mods_for``); while the file is invalid, refuse every task."""

    def mod(task: Task, next_handler: Handler) -> Reply:
        state = source.current()
        if state.policy is None:
            return refuse(
                task,
                "policy-invalid",
                f"{state.problem}; this site refuses every task until its steward fixes it",
            )
        handler = next_handler
        for inner in reversed(mods_for(state.policy)):
            handler = _wrap(inner, handler)
        return handler(task)

    return mod


def _wrap(mod: Mod, inner: Handler) -> Handler:
    return lambda task: mod(task, inner)
