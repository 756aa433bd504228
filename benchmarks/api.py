"""HTTP API benchmark: latency of the studies endpoints and delay of the event stream.

A fresh PostgreSQL schema (``--db``, default ``postgresql://127.0.0.1:5432/test``; dropped
afterwards) holds ``--studies`` studies (default 100) of ``--rounds`` recorded rounds each
(default 100), every round with a fit and an evaluate task per site (3 sites) and their
replies, one of them a refusal, as the coordinator records them. The real API is served by
uvicorn over TLS with a fresh federation's coordinator certificate; a client with one
keep-alive HTTPS connection (trusting the federation CA) times ``--requests`` calls (default
200, after 20 warm-up calls) of:

* ``GET /api/v1/studies`` (the list),
* ``GET /api/v1/studies/{id}`` (a study's status, a random study each call),
* ``GET /api/v1/studies/{id}/rounds`` (its rounds with each site's part),
* ``GET /api/v1/sites/{id}`` (a random site of the 3: its latest refusal in each study, newest
  study first, at most 20; ``va`` refused in every study, the others in none, so their call
  looks through every study).

Metrics ``p50_ms`` and ``p95_ms`` (target: p95 <= 50 ms, issue 14). Then ``event_delay_s``:
with ``GET /studies/{id}/events`` open, the benchmark records ``--events`` new rounds (default
20) through the store, one at a time, and times each from the commit to the ``round`` event's
arrival at the client (median in ``mean``; target <= 2 s). Writes
``benchmarks/results/api.json``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import socket
import ssl
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, make_url, text, update

from fedcare.coordinator.audit_trail import CoordinatorAudit
from fedcare.coordinator.db import ReplyRow, RoundRow, StudyRow, TaskRow
from fedcare.coordinator.store import CoordinatorStore
from fedcare.dashboard.api import create_app
from fedcare.dashboard.serve import serve_api
from fedcare.transport.provisioning import create_federation
from results_file import write_rows

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "api.json"
PG_URL = os.environ.get(
    "FEDCARE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SITES = ("hungary", "swiss", "va")
LATENCY_TARGET_MS = 50.0
DELAY_TARGET_S = 2.0
STUDY = {
    "name": "bench",
    "dataset": {"name": "heart-disease", "options": {"protocol": "raw"}},
    "model": {"kind": "logistic"},
    "rounds": 1000,
}


def _record(round: int) -> dict[str, Any]:
    """A round record shaped as the runner writes it (fit measurements, evaluation per site)."""
    per_site = {
        s: {"auroc": 0.7 + round / 1000, "accuracy": 0.6, "loss": 0.5, "n": 60} for s in SITES[:2]
    }
    return {
        "round": round,
        "duration_s": 1.5,
        "fit": {
            "num_contributions": 2,
            "train_loss": 0.4,
            "update_norm": 1.2,
            "sampled_sites": list(SITES),
            "failed_sites": {"va": "policy-denied: the plan's dataset is not allowed"},
            "site_info": {s: {"package": "none"} for s in SITES[:2]},
        },
        "evaluate": {
            "per_site": per_site,
            "weighted": {"auroc": 0.7, "accuracy": 0.6, "loss": 0.5, "n": 120},
            "unweighted": {"auroc": 0.7, "accuracy": 0.6, "loss": 0.5, "n": 120},
            "failed_sites": {},
        },
    }


def populate(store: CoordinatorStore, studies: int, rounds: int) -> list[str]:
    """``studies`` running studies of ``rounds`` recorded rounds each; their ids. Rounds, tasks
    and replies go in by bulk inserts (the runner's one-by-one writes would take minutes)."""
    for site in SITES:
        store.register_site(site, f"serial-{site}")
    digest = store.artifacts.put(b"an update of a site" * 200)
    ids = [
        store.create_study(f"bench-{i:03d}", {**STUDY, "name": f"bench-{i:03d}"}, i, owner="lead")
        for i in range(studies)
    ]
    start = datetime.now(timezone.utc) - timedelta(days=1)
    with store.engine.begin() as conn:
        for n, sid in enumerate(ids):
            round_rows, task_rows, reply_rows = [], [], []
            for r in range(1, rounds + 1):
                at = start + timedelta(seconds=r * 10 + n)
                round_rows.append(
                    {
                        "study_id": sid,
                        "round": r,
                        "status": "completed",
                        "record": _record(r),
                        "params_digest": digest,
                        "state_digest": digest,
                        "duration_s": 1.5,
                        "completed_at": at + timedelta(seconds=5),
                    }
                )
                for site in SITES:
                    for kind in ("fit", "evaluate"):
                        tid = uuid.uuid4().hex
                        task_rows.append(
                            {
                                "id": tid,
                                "study_id": sid,
                                "round": r,
                                "attempt": 0,
                                "site_id": site,
                                "kind": kind,
                                "status": "failed" if site == "va" else "replied",
                                "payload_digest": None,
                                "created_at": at,
                                "delivered_at": at + timedelta(seconds=1),
                                "deadline": None,
                            }
                        )
                        refused = site == "va"
                        reply_rows.append(
                            {
                                "task_id": tid,
                                "site_id": site,
                                "received_at": at + timedelta(seconds=2),
                                "payload_digest": None if refused else digest,
                                "error_kind": "policy-denied" if refused else None,
                                "error_message": "the plan's dataset is not allowed"
                                if refused
                                else None,
                                "num_samples": 0 if refused else 100,
                            }
                        )
            conn.execute(insert(RoundRow), round_rows)
            conn.execute(insert(TaskRow), task_rows)
            conn.execute(insert(ReplyRow), reply_rows)
            conn.execute(
                update(StudyRow)
                .where(StudyRow.id == sid)
                .values(status="running", last_completed_round=rounds)
            )
    return ids


class Client:
    """One keep-alive HTTPS connection to the API, trusting the federation CA."""

    def __init__(self, port: int, ca: Path, token: str) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        self.conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str) -> float:
        """Seconds one GET takes, the whole body read; raises unless 200."""
        begin = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        elapsed = time.perf_counter() - begin
        if resp.status != 200:
            raise RuntimeError(f"GET {path}: {resp.status} {body[:200]!r}")
        return elapsed


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}/{five:.2f}/{fifteen:.2f} on {os.cpu_count()} cores"


def _rows(label: str, times: list[float], setup: str) -> list[dict[str, Any]]:
    rows = []
    for metric, q in (("p50_ms", 0.5), ("p95_ms", 0.95)):
        value = _percentile(times, q)
        verdict = ""
        if metric == "p95_ms":
            met = "MET" if value <= LATENCY_TARGET_MS else "MISSED"
            verdict = f"; target p95 <= {LATENCY_TARGET_MS:g} ms: {met}"
        rows.append(
            {
                "benchmark": "api",
                "dataset": "none",
                "method": label,
                "metric": metric,
                "mean": round(value, 2),
                "sd": round(statistics.stdev(times), 2),
                "n": len(times),
                "unit": "ms",
                "notes": f"{setup}; {_load()}{verdict}",
            }
        )
    return rows


def latency_rows(client: Client, ids: list[str], requests: int, setup: str) -> list[dict[str, Any]]:
    """p50 and p95 rows per endpoint: a study's first call (the server reads all its rounds),
    then ``requests`` calls over random studies (completed rounds are remembered) or sites."""
    rng = random.Random(0)
    rows = []
    for label, template in (
        ("GET /studies/{id} (status), first call per study", "/api/v1/studies/{}"),
        ("GET /studies/{id}/rounds, first call per study", "/api/v1/studies/{}/rounds"),
    ):
        times = [client.get(template.format(sid)) * 1000 for sid in ids]
        rows += _rows(label, times, setup)
    endpoints = {
        "GET /studies (list)": lambda: "/api/v1/studies",
        "GET /studies/{id} (status)": lambda: f"/api/v1/studies/{rng.choice(ids)}",
        "GET /studies/{id}/rounds": lambda: f"/api/v1/studies/{rng.choice(ids)}/rounds",
        "GET /sites/{id} (refusals over every study)": lambda: f"/api/v1/sites/{rng.choice(SITES)}",
    }
    for label, path in endpoints.items():
        for _ in range(20):
            client.get(path())
        times = [client.get(path()) * 1000 for _ in range(requests)]
        rows += _rows(label, times, setup)
    return rows


def event_delay_row(
    store: CoordinatorStore,
    port: int,
    ca: Path,
    token: str,
    study_id: str,
    first: int,
    count: int,
    setup: str,
) -> dict[str, Any]:
    """The median delay from a round's commit to its ``round`` event at the client."""
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    conn.request(
        "GET",
        f"/api/v1/studies/{study_id}/events?after_round={first - 1}",
        headers={"Authorization": f"Bearer {token}"},
    )
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"event stream: {resp.status}")
    arrived: dict[int, float] = {}
    got = threading.Condition()

    def read() -> None:
        event = ""
        for raw in resp:
            line = raw.decode().strip()
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "round":
                with got:
                    arrived[json.loads(line[6:])["round"]] = time.monotonic()
                    got.notify_all()

    threading.Thread(target=read, daemon=True).start()
    delays = []
    for r in range(first, first + count):
        time.sleep(random.uniform(0.1, 0.6))  # not in step with the stream's polling
        store.record_round(study_id, r, params=b"p", state=b"s", record=_record(r), duration_s=1.0)
        committed = time.monotonic()
        with got:
            if not got.wait_for(lambda r=r: r in arrived, timeout=10):  # type: ignore[misc]
                raise RuntimeError(f"round {r}: no event within 10 s")
            delays.append(arrived[r] - committed)
    if conn.sock is not None:  # hang up (the reader thread holds the response's buffer)
        conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    time.sleep(1.0)  # the server sees the hang-up at its next poll
    median = statistics.median(delays)
    verdict = "MET" if median <= DELAY_TARGET_S else "MISSED"
    return {
        "benchmark": "api",
        "dataset": "none",
        "method": "GET /studies/{id}/events (round recorded -> event)",
        "metric": "event_delay_s",
        "mean": round(median, 3),
        "sd": round(statistics.stdev(delays), 3),
        "n": len(delays),
        "unit": "s",
        "notes": (
            f"median (in 'mean') over {len(delays)} rounds recorded through the store at "
            f"random moments; max {max(delays):.3f} s; {setup}; {_load()}; "
            f"target <= {DELAY_TARGET_S:g} s: {verdict}"
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=PG_URL, help="PostgreSQL URL (a fresh schema is used)")
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    schema = f"fedcare_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(args.db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(args.db).update_query_dict({"options": f"-csearch_path={schema}"})
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    try:
        with tempfile.TemporaryDirectory(prefix="fedcare-api-bench-") as tmp:
            root = Path(tmp)
            fed = create_federation(
                root / "fed", name="bench", sites=SITES, coordinator_hosts=("127.0.0.1",)
            )
            kit = fed.coordinator_kit
            store = CoordinatorStore(url, root / "artifacts")
            audit = CoordinatorAudit.open(root, kit, actor="coordinator:bench")
            try:
                began = time.perf_counter()
                ids = populate(store, args.studies, args.rounds)
                print(
                    f"populated {args.studies} studies x {args.rounds} rounds "
                    f"in {time.perf_counter() - began:.1f} s"
                )
                token = store.add_user("olga", "operator")
                server = serve_api(
                    create_app(store, audit, home=root),
                    "127.0.0.1",
                    0,
                    kit / "cert.pem",
                    kit / "key.pem",
                )
                setup = (
                    f"{args.studies} studies x {args.rounds} rounds x {len(SITES)} sites (fit and "
                    f"evaluate tasks, replies) in PostgreSQL; uvicorn over TLS in-process, one "
                    f"keep-alive HTTPS client; {machine}"
                )
                try:
                    client = Client(server.port, kit / "ca.pem", token)
                    rows = latency_rows(client, ids, args.requests, setup)
                    rows.append(
                        event_delay_row(
                            store,
                            server.port,
                            kit / "ca.pem",
                            token,
                            ids[0],
                            args.rounds + 1,
                            args.events,
                            setup,
                        )
                    )
                finally:
                    server.stop()
            finally:
                audit.close()
                store.close()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    print(f"{'endpoint':<52}{'metric':<15}{'value':>10}")
    for row in rows:
        print(f"{row['method']:<52}{row['metric']:<15}{row['mean']:>10g} {row['unit']}")
    write_rows(rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
