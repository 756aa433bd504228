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
cut fell. It counts only when the transfer was resumed: the study completed and ``site-0``'s
reply was aggregated (not in the round's ``failed_sites``); otherwise the value is empty and
the notes say what happened. The round's counts start at the federation's start, so the cut
falls a few kB (Hello, statistics) before the transfer's exact half.

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
CUT_AT = 0.5  # of the model's bytes
CUT_SITE, CLEAN_SITE = "site-0", "site-1"
Row = dict[str, Any]


def _verdict(ratio: float | None) -> str:
    if ratio is None:
        return f"target <= {RESUME_TARGET:g}: MISSED [not resumed]"
    word = "MET" if ratio <= RESUME_TARGET else "MISSED"
    return f"target <= {RESUME_TARGET:g}: {word} [ratio {ratio:.3f}]"


def _outcome(fed: FederationRun, cuts: int) -> str:
    """``""`` when the cut transfer was resumed, else what happened instead."""
    if cuts == 0:
        return "NO CUT: the proxy never saw half the model's bytes in that direction"
    if not fed.status.startswith("completed"):
        return f"NOT RESUMED: study {fed.status[:300]}"
    mine = [t for t in fed.tasks if t["site"] == CUT_SITE and t["round"] >= 1]
    lost = [t for t in mine if t["status"] != "replied"]
    if len(mine) > 1 or lost:
        said = "; ".join(
            f"round {t['round']} attempt {t['attempt']}: {t['status']}"
            + (f" ({t['error'][:200]})" if t["error"] else "")
            for t in mine
        )
        return f"NOT RESUMED: {CUT_SITE}'s task started over ({said})"
    failed = (fed.fits[0].get("failed_sites") or {}) if fed.fits else {}
    if CUT_SITE in failed:
        return f"NOT RESUMED: {CUT_SITE}'s reply was not used: {str(failed[CUT_SITE])[:300]}"
    return ""


def resume_run(
    study: StudyConfig, direction: str, model_bytes: int, keep: bool, limit_s: float
) -> tuple[FederationRun, ByteCountingProxy, ByteCountingProxy]:
    """Run ``study`` (1 round, 2 sites) with ``site-0``'s ``direction`` cut at half the model."""
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="fedcare-resume-"))
    target = ("127.0.0.1", port)
    try:
        with ByteCountingProxy(target) as cut, ByteCountingProxy(target) as clean:
            cut.cut_at(DIRECTIONS[direction][0], int(CUT_AT * model_bytes))
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
    keep: bool,
    base: str,
) -> list[Row]:
    """One row per direction (see the module docstring); ``make_study(sites)`` gives the study."""
    model_bytes = params * 4
    study = make_study(2)
    # a transfer at a slow 20 MB/s, twice, plus starting the workers
    limit_s = 300.0 + 4 * model_bytes / 20e6
    rows = []
    for direction in directions:
        proxy_dir, metric = DIRECTIONS[direction]
        fed, cut, clean = resume_run(study, direction, model_bytes, keep, limit_s)
        outcome = _outcome(fed, len(cut.cuts))
        ratio = cut.count(proxy_dir) / model_bytes
        baseline = clean.count(proxy_dir) / model_bytes
        where = (
            f"cut after {cut.cuts[0].up if proxy_dir == UP else cut.cuts[0].down:,} bytes "
            f"({cut.cuts[0].connections} connection(s) reset), {cut.accepted} connections in all"
            if cut.cuts
            else "no cut"
        )
        rounds = ", ".join(f"{d:.3f}" for d in fed.durations) or "none"
        value = None if outcome else ratio
        notes = (
            f"{outcome + '; ' if outcome else ''}{proxy_dir} bytes through {CUT_SITE}'s proxy "
            f"{cut.count(proxy_dir):,} / model {model_bytes:,} bytes = {ratio:.3f} "
            f"(the uncut {CLEAN_SITE}: {baseline:.3f}); {where}; round time {rounds} s, "
            f"study wall {fed.wall_s:.1f} s; 1 round, 2 sites, each through its own proxy; "
            f"{base}; {_verdict(value)}"
        )
        print(f"  resume {direction}: ratio {ratio:.3f} (uncut {baseline:.3f}), {where}; "
              f"{outcome or 'resumed'}", flush=True)  # fmt: skip
        rows.append(row("grpc", f"{metric}@{label}", value, 0.0, int(value is not None), "x",
                        notes))  # fmt: skip
    return rows
