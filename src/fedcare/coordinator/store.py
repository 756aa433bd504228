"""The coordinator's persistent state: sites, studies, rounds, tasks, replies and artifacts.

:class:`CoordinatorStore` is the one object the coordinator's services use. Each method is a
small typed operation in its own transaction; the store is safe to share between threads (the
engine pools connections, every call opens its own session, and what the store returns are
frozen snapshots, never live ORM objects). Opening a store migrates the database to the newest
schema. The methods live in one mixin per concern:

- sites (:mod:`.store_sites`): ``register_site``, ``touch_site``, ``set_site_status``,
  ``get_site``, ``list_sites``;
- studies (:mod:`.store_studies`): ``create_study``, ``get_study``, ``list_studies``,
  ``set_study_status``;
- rounds (:mod:`.store_rounds`): ``record_round``, ``last_completed_round``, ``get_round``,
  ``list_rounds``;
- tasks and replies (:mod:`.store_tasks`): ``create_tasks``, ``next_task_for``, ``get_task``,
  ``list_tasks``, ``store_reply``, ``replies_for_round``, ``task_replies``, ``expire_tasks``;
- what is shown of tasks, replies and rounds (:mod:`.store_activity`): ``study_activity``,
  ``round_activity``, ``round_briefs``, ``round_view``, ``site_errors``,
  ``start_refusals``;
- task liveness (:mod:`.store_liveness`): ``task_for_reply``, ``fail_task``,
  ``fail_unheld_tasks``, ``close_round_tasks``, ``close_tasks``, ``note_late_reply``;
- models (:mod:`.store_models`): ``register_model``, ``get_model``, ``list_models``,
  ``lineage``, ``model_params``;
- deployments (:mod:`.store_deployments`): ``create_deployment``, ``next_deployment_for``,
  ``reoffer_deployments``, ``answer_deployment``, ``get_deployment``, ``list_deployments``,
  ``record_monitoring``;
- privacy ledger (:mod:`.store_ledger`): ``privacy_ledger``, ``site_epsilon`` (rows are added
  by ``record_round``);
- audit anchors (:mod:`.store_anchors`): ``last_anchor``, ``record_anchor``, ``audit_anchors``;
- the coordinator's liveness (:mod:`.store_presence`): ``coordinator_started``,
  ``coordinator_beat``, ``coordinator_stopped``, ``coordinator_presence``;
- API accounts (:mod:`.store_users`): ``add_user``, ``list_users``, ``get_user``,
  ``revoke_user``, ``rotate_user``, ``authenticate``.

Opened with ``create=False`` (:func:`fedcare.coordinator.home.open_home` does), a store only
opens a database that already holds the coordinator's schema and never creates one.
"""

from __future__ import annotations

from fedcare.coordinator.store_activity import ActivityMixin
from fedcare.coordinator.store_anchors import AnchorsMixin
from fedcare.coordinator.store_deployments import DeploymentsMixin
from fedcare.coordinator.store_ledger import PrivacyLedgerMixin
from fedcare.coordinator.store_liveness import LivenessMixin
from fedcare.coordinator.store_models import ModelsMixin
from fedcare.coordinator.store_presence import PresenceMixin
from fedcare.coordinator.store_rounds import RoundsMixin
from fedcare.coordinator.store_sites import SitesMixin
from fedcare.coordinator.store_studies import StudiesMixin
from fedcare.coordinator.store_users import UsersMixin

__all__ = ["CoordinatorStore"]


class CoordinatorStore(
    SitesMixin,
    StudiesMixin,
    RoundsMixin,
    LivenessMixin,
    ActivityMixin,
    ModelsMixin,
    DeploymentsMixin,
    PrivacyLedgerMixin,
    AnchorsMixin,
    PresenceMixin,
    UsersMixin,
):
    """The coordinator's database and artifact folder behind small typed methods.

    Parameters
    ----------
    url:
        Database URL: ``sqlite:///path/state.db`` (default deployment) or
        ``postgresql+psycopg://user@host:5432/db``.
    artifacts_root:
        Folder of the content-addressed artifacts (checkpoints, payloads).
    busy_timeout_s:
        SQLite only: how long a writer waits for the write lock.
    engine_options:
        Extra keyword arguments for :func:`sqlalchemy.create_engine` (pool size, echo...).
    migrate:
        Bring the database to the newest schema on open (default True).
    create:
        Create the database (SQLite file, schema) if it does not exist (default True). With
        False, a missing SQLite file or a database without the coordinator's schema is refused.
    clock:
        Returns the current timezone-aware UTC time; tests inject a fake one.

    Raises
    ------
    ConfigError
        If the URL is malformed or names an unsupported or in-memory database.
    StoreError
        If the database cannot be migrated or the artifact folder created; with
        ``create=False``, if the database does not exist or has not the coordinator's schema
        (:class:`~fedcare.errors.NotFoundError`).
    """
