"""Fixtures of the audit tests: real startup kits (once per session) and fresh logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fedcare.audit import AuditLog
from fedcare.transport.provisioning import Federation, create_federation


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    """A provisioned federation with two sites: kits hold key.pem and cert.pem."""
    root = tmp_path_factory.mktemp("audit-federation")
    return create_federation(root, name="audit-test", sites=["cleveland", "hungary"])


@pytest.fixture(scope="session")
def kit(federation: Federation) -> Path:
    return federation.site_kits["cleveland"]


@pytest.fixture(scope="session")
def other_kit(federation: Federation) -> Path:
    return federation.site_kits["hungary"]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "site.log"


@pytest.fixture
def open_log(log_path: Path, kit: Path) -> Iterator[AuditLog]:
    with AuditLog.open(log_path, key_path=kit / "key.pem", actor="cleveland") as log:
        yield log


def fill(log: AuditLog, n: int, start: int = 0) -> None:
    """Append ``n`` varied entries (the kinds of events a site records)."""
    kinds = ("task_received", "decision", "dataset_used", "output_sent", "approval")
    for i in range(start, start + n):
        log.append(
            kinds[i % len(kinds)],
            task_id=f"task-{i}",
            round=i,
            rows=100 + i,
            fingerprint=f"{i:064x}",
            note="Zürich ✓" if i % 7 == 0 else "",
        )
