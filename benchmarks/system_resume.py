"""Resume measurement of the system benchmark (``system.py --resume``): bytes sent again after
a cut connection.

One study of 1 round (FedAvg, the size's model, 1 SGD step) runs on a fresh federation of 2
sites, each reaching the coordinator through its own byte-counting TCP proxy
(:mod:`tcp_proxy`; TLS passes through it unmodified):

* ``site-0``'s proxy cuts all its connections once the bytes of the measured direction pass
  half the model's float32 bytes: site -> coordinator for ``upload`` (the reply), coordinator
  -> site for ``download`` (the task); the agent then reconnects by itself;
* ``site-1``'s proxy never cuts: the same round's bytes without a cut, the baseline.

The row's value is the bytes ``site-0``'s proxy forwarded in that direction over the whole
study (Hello, round 0's statistics, heartbeats, the round's transfer and whatever was sent
again after the cut) divided by the model's bytes; the notes give the baseline site's ratio
(protocol, TLS and chatter overhead: the part of the ratio a cut did not cause) and where the
cut fell. It counts only when ``site-0``'s task of the round went on after the cut: the study
completed, that task was never failed and sent again (no second attempt of the round) and its
reply was aggregated (not in the round's ``failed_sites``). Whether the agent then resumed the
transfer or sent all of it again is what the ratio shows (the notes give the part sent again:
the ratio minus the uncut site's, about the cut's fraction when everything before the cut is
sent again, about 0 for a resume); when the task started over the value is empty and the notes
say what happened. ``--cut-at`` moves the cut (rows ``..._cut90@<size>`` for 0.9): at 0.5 a
transfer sent again in full (1.5) still passes issue 16's 1.6, at 0.9 it cannot (1.9). The
counts start with the federation, so the cut falls a few kB (Hello, statistics) before the
transfer's exact half.

Rows: ``method: grpc``, ``metric: resume_bytes_ratio@<size>`` (upload) and
``resume_download_bytes_ratio@<size>``; issue 16's target is <= 1.6.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcare.records.study import StudyConfig
from system_federation import FederationRun, free_port, run_federation
from system_rows import row
from tcp_proxy import DOWN, UP, ByteCountingProxy

__all__ = ["DIRECTIONS", "RESUME_TARGET", "resume_rows"]

#: direction -> (proxy direction, metric)
DIRECTIONS = {
    "upload": (UP, "resume_bytes_ratio"),
    "download": (DOWN, "resume_download_bytes_ratio"),
}
RESUME_TARGET = 1.6
CUT_AT = 0.5  # of the model's bytes: issue 16's cut, the only one its target applies to
CUT_SITE, CLEAN_SITE = "site-0", "site-1"
Row = dict[str, Any]


def _verdict(ratio: float | None) -> str:
    if ratio is None:
        return f"target <= {RESUME_TARGET:g}: MISSED [the task did not go on after the cut]"
    word = "MET" if ratio <= RESUME_TARGET else "MISSED"
    return f"target <= {RESUME_TARGET:g}: {word} [ratio {ratio:.3f}]"


def _outcome(fed: FederationRun, cuts: int) -> str:
    """``""`` when the cut transfer was resumed, else what happened instead."""
    if cuts == 0:
        return "NO CUT: the proxy never saw half the model's bytes in that direction"
    if not fed.status.startswith("completed"):
        return f"NOT COMPLETED: study {fed.status[:300]}"
    mine = [t for t in fed.tasks if t["site"] == CUT_SITE and t["round"] >= 1]
    lost = [t for t in mine if t["status"] != "replied"]
    if len(mine) > 1 or lost:
        said = "; ".join(
            f"round {t['round']} attempt {t['attempt']}: {t['status']}"
            + (f" ({t['error'][:200]})" if t["error"] else "")
            for t in mine
        )
        return f"STARTED OVER: {CUT_SITE}'s task was failed and sent again ({said})"
    failed = (fed.fits[0].get("failed_sites") or {}) if fed.fits else {}
    if CUT_SITE in failed:
        return f"NOT USED: {CUT_SITE}'s reply was left out: {str(failed[CUT_SITE])[:300]}"
    return ""


def resume_run(
    study: StudyConfig,
    direction: str,
    model_bytes: int,
    cut_at: float,
    keep: bool,
    limit_s: float,
) -> tuple[FederationRun, ByteCountingProxy, ByteCountingProxy]:
    """Run ``study`` (1 round, 2 sites) with ``site-0``'s ``direction`` cut at ``cut_at`` of
    the model's bytes."""
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="fedcare-resume-"))
    target = ("127.0.0.1", port)
    try:
        with ByteCountingProxy(target) as cut, ByteCountingProxy(target) as clean:
            cut.cut_at(DIRECTIONS[direction][0], int(cut_at * model_bytes))
            addresses = {CUT_SITE: f"127.0.0.1:{cut.port}", CLEAN_SITE: f"127.0.0.1:{clean.port}"}
            fed = run_federation(
                study, [CUT_SITE, CLEAN_SITE], root, port=port, addresses=addresses,
                limit_s=limit_s,
            )  # fmt: skip
    finally:
        if keep:
            print(f"  kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return fed, cut, clean


def resume_rows(
    label: str,
    params: int,
    directions: list[str],
    make_study: Callable[[int], StudyConfig],
    opts: tuple[float, bool],
    base: str,
) -> list[Row]:
    """One row per direction (see the module docstring); ``make_study(sites)`` gives the study,
    ``opts`` is ``(cut_at, keep)``: where to cut (a fraction of the model) and whether to keep
    the federation folders."""
    cut_at, keep = opts
    model_bytes = params * 4
    study = make_study(2)
    # a transfer at a slow 20 MB/s, twice, plus starting the workers
    limit_s = 300.0 + 4 * model_bytes / 20e6
    suffix = "" if cut_at == CUT_AT else f"_cut{round(100 * cut_at)}"
    rows = []
    for direction in directions:
        proxy_dir, metric = DIRECTIONS[direction]
        fed, cut, clean = resume_run(study, direction, model_bytes, cut_at, keep, limit_s)
        outcome = _outcome(fed, len(cut.cuts))
        ratio = cut.count(proxy_dir) / model_bytes
        baseline = clean.count(proxy_dir) / model_bytes
        where = "no cut"
        if cut.cuts:
            first = cut.cuts[0]
            where = (
                f"cut after {first.up if proxy_dir == UP else first.down:,} bytes "
                f"({first.connections} connection(s) reset), {cut.accepted} connections in all"
            )
        if cut.cuts and not outcome:
            where += (
                f"; sent again because of the cut: {ratio - baseline:.3f} of the model (ratio "
                f"minus the uncut site's; about {cut_at:g} when everything before the cut is "
                "sent again, about 0 for a resume)"
            )
        rounds = ", ".join(f"{d:.3f}" for d in fed.durations) or "none"
        value = None if outcome else ratio
        verdict = f"; {_verdict(value)}" if not suffix else ""
        notes = (
            f"{outcome + '; ' if outcome else ''}{proxy_dir} bytes through {CUT_SITE}'s proxy "
            f"{cut.count(proxy_dir):,} / model {model_bytes:,} bytes = {ratio:.3f} "
            f"(the uncut {CLEAN_SITE}: {baseline:.3f}); {where}; round time {rounds} s, "
            f"study wall {fed.wall_s:.1f} s; 1 round, 2 sites, each through its own proxy, "
            f"{CUT_SITE}'s cut at {cut_at:g} of the model; {base}{verdict}"
        )
        print(f"  resume {direction}: ratio {ratio:.3f} (uncut {baseline:.3f}), {where}; "
              f"{outcome or 'the same task completed after reconnecting'}", flush=True)  # fmt: skip
        rows.append(row("grpc", f"{metric}{suffix}@{label}", value, 0.0, int(value is not None),
                        "x", notes))  # fmt: skip
    return rows
