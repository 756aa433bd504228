"""A deadline-bound study end to end: a real coordinator, real site agents over mutual TLS, one
hospital much slower (:class:`~fedcare.simulation.stragglers.Slowdown`). Each round closes
once three sites replied and the grace period passed; the slow site's late reply is refused
(it is told, and logs it), recorded by the coordinator and never aggregated."""

from __future__ import annotations

import time
from pathlib import Path

from fedcare.simulation.stragglers import Slowdown

from ..conftest import require_mirror
from .helpers import HOSPITALS, deployment, heart_study, provision, submit, wait_for_status

SLOW = "va"
GRACE_S = 0.5
SLOW_S = 2.5  # the slow site's extra seconds per fit: it replies while round 3 runs


def test_a_deadline_bound_study_leaves_the_straggler_out_and_records_its_late_reply(
    tmp_path: Path,
) -> None:
    require_mirror()
    mods = {SLOW: [Slowdown(1.0, extra_s=SLOW_S)]}
    with deployment(provision(tmp_path / "federation"), tmp_path, mods=mods) as running:
        store = running.store
        spec = heart_study(min_sites=3, rounds=4, round_timeout=60.0, round_grace_s=GRACE_S)
        study_id = submit(store, spec)
        wait_for_status(store, study_id, "completed", describe=running.describe)
        rounds = store.list_rounds(study_id)
        story = "\n".join(repr(r.record) for r in rounds) + running.describe()
        for info in rounds[1:]:
            fit = info.record["fit"]
            assert fit["num_contributions"] == 3 and SLOW not in fit["site_info"], story
            assert fit["site_timing"][SLOW] == {"reply_s": None, "outcome": "late"}, story
            taken = [fit["site_timing"][s] for s in HOSPITALS if s != SLOW]
            assert all(t["outcome"] == "taken" and t["reply_s"] < SLOW_S for t in taken), story
            assert info.duration_s < SLOW_S, story  # the straggler set no round's pace
        # round 1's fit closed while the slow site trained; its reply came later: refused,
        # recorded once, stored as no reply; the site was told and logged it
        [task] = [t for t in store.list_tasks(study_id, 1) if (t.site_id, t.kind) == (SLOW, "fit")]
        assert task.status == "expired" and task.closed_at is not None, story
        end = time.monotonic() + 20
        while store.get_task(task.id).late_at is None:
            assert time.monotonic() < end, f"no late reply recorded\n{story}"
            time.sleep(0.2)
        assert SLOW not in {r.site_id for r in store.replies_for_round(study_id, 1, task.attempt)}
        late = [d for e, d in running.coordinator.audit.entries(study_id) if e == "late-reply"]
        assert (late[0]["site"], late[0]["round"], late[0]["kind"]) == (SLOW, 1, "fit"), late
        told = [e for e in running.agents.events[SLOW] if "round 1 closed at" in e]
        assert told and ("dropped" in told[0] or "round_closed" in told[0]), told
