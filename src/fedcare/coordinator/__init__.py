"""The coordinator's persistent state: SQL database (SQLite or PostgreSQL) and artifact folder.

:class:`CoordinatorStore` is the entry point; :class:`ArtifactStore` is its content-addressed
folder; :func:`upgrade` migrates a database to the newest schema (opening a store does it).
"""

from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.coordinator.migrate import current_revision, head_revision, upgrade
from fedcare.coordinator.rows import (
    Checkpoint,
    ModelInfo,
    ReplyInfo,
    RoundInfo,
    SiteInfo,
    StudyInfo,
    TaskInfo,
)
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_tasks import TaskSpec

__all__ = [
    "ArtifactStore",
    "Checkpoint",
    "CoordinatorStore",
    "ModelInfo",
    "ReplyInfo",
    "RoundInfo",
    "SiteInfo",
    "StudyInfo",
    "TaskInfo",
    "TaskSpec",
    "current_revision",
    "head_revision",
    "upgrade",
]
