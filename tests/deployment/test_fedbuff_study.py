"""FedBuff over the gRPC coordinator end to end: a real coordinator, three real site agents over
mutual TLS, one hospital much slower (:class:`~fedcare.simulation.stragglers.Slowdown`). Tasks
of several model versions are open at once; the fast sites set the pace, the slow site's
updates arrive stale and are taken with their staleness recorded; each server step is a
persisted round with its checkpoint and contributors. The tasks still open when the study ends
are cancelled: their late replies are refused, recorded and never taken into a step."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import numpy as np

from fedcare.coordinator.results import study_report
from fedcare.dashboard.rounds_view import round_entries
from fedcare.simulation.stragglers import Slowdown

from ..conftest import require_mirror
from .helpers import deployment, heart_study, provision, round_params, submit, wait_for_status

SITES = ("cleveland", "hungary", "va")
SLOW = "va"
SLOW_S = 1.5  # the slow site's extra seconds per fit: the fast ones step meanwhile
FAST_S = 0.3  # the fast sites' (so a step takes a known least time on any machine)
STEPS = 10
BUFFER = 2


def test_a_fedbuff_study_steps_with_stale_updates_and_records_cancelled_late_replies(
    tmp_path: Path,
) -> None:
    require_mirror()
    mods = {s: [Slowdown(1.0, extra_s=SLOW_S if s == SLOW else FAST_S)] for s in SITES}
    with deployment(provision(tmp_path / "fed"), tmp_path, sites=SITES, mods=mods) as running:
        store = running.store
        options = {"buffer_size": BUFFER, "concurrency": 3, "server_lr": 1.0}
        spec = heart_study(
            strategy={"name": "fedbuff", "options": options},
            min_sites=3,
            rounds=STEPS,
            evaluate_every=0,  # a final evaluation would wait for the open tasks' sites
            round_timeout=60.0,
        )
        study_id = submit(store, spec)
        wait_for_status(store, study_id, "completed", describe=running.describe)
        rounds = store.list_rounds(study_id)
        story = "\n".join(repr(r.record) for r in rounds) + "\n" + running.describe()

        # every server step is a persisted round with its checkpoint and its contributors
        assert [r.round for r in rounds] == list(range(STEPS + 1)), story
        steps = [r.record["fit"] for r in rounds[1:]]
        for version, fit in enumerate(steps, start=1):
            assert fit["num_contributions"] == BUFFER == len(fit["contributors"]), story
            for c in fit["contributions"]:
                assert c["staleness"] == version - 1 - c["sent_version"] >= 0, story
                assert np.isclose(c["weight"], 1 / np.sqrt(1 + c["staleness"])), story
            assert fit["site_timing"][fit["contributors"][0]]["outcome"] == "taken", story
        final = round_params(store, study_id, STEPS)
        assert all(np.isfinite(a).all() for a in final.values()), story
        assert any(
            np.abs(final[k] - round_params(store, study_id, 0)[k]).max() > 0 for k in final
        ), story

        # the report and the dashboard's round timeline show the steps and who made them
        results, page = study_report(store, study_id)
        assert [h["round"] for h in results["history"]] == list(range(1, STEPS + 1))
        assert '<section id="site-timing">' in page
        entries = round_entries(store, store.get_study(study_id))
        for entry, fit in zip(entries[1 : STEPS + 1], steps, strict=True):
            shown = {s for s, v in entry["sites"].items() if v["status"] == "aggregated"}
            assert set(fit["contributors"]) <= shown, (entry, fit["contributors"])

        # the slow site contributed stale updates; the fast ones set the pace
        slow = [c for fit in steps for c in fit["contributions"] if c["site"] == SLOW]
        assert slow and all(c["staleness"] >= 1 for c in slow), story
        assert all(c["wait_s"] >= SLOW_S for c in slow), story
        stepping = sum(r.duration_s for r in rounds[1:])  # synchronous: >= STEPS * SLOW_S
        assert stepping < STEPS * SLOW_S, f"the slow site set the pace: {stepping:.1f} s\n{story}"

        # each contribution is a stored reply to a fit task of the version it names
        tasks = [t for t in store.list_tasks(study_id) if t.kind == "fit"]
        replied = Counter((t.site_id, t.round) for t in tasks if t.status == "replied")
        taken = Counter((c["site"], c["sent_version"]) for f in steps for c in f["contributions"])
        assert not taken - replied, (taken, replied, story)
        assert sum((replied - taken).values()) <= len(SITES), (taken, replied, story)

        # the tasks open at the end were cancelled: closed, their late replies refused and
        # recorded (the slow site's after its extra seconds), never stored as replies (a task
        # closed before its site took it is never run: no reply comes)
        closed = [t for t in tasks if t.closed_at is not None]
        assert closed and all(t.status == "expired" for t in closed), story
        ran = [t for t in closed if t.delivered_at is not None]
        assert ran, story
        end = time.monotonic() + 30
        while any(store.get_task(t.id).late_at is None for t in ran):
            assert time.monotonic() < end, f"late replies not all recorded\n{story}"
            time.sleep(0.2)
        answered = store.task_replies([t.id for t in closed])
        assert all(reply is None for _, reply in answered), answered
        late = [d for e, d in running.coordinator.audit.entries(study_id) if e == "late-reply"]
        assert sorted((d["site"], d["round"]) for d in late) == sorted(
            (t.site_id, t.round) for t in ran
        ), (late, story)
