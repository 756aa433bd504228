"""What is checked when a study is submitted, so a study that cannot run is refused at once.

``fedcare study submit STUDY --home HOME`` checks, in this order, and stops at the first
refusal (one line, exit code 2):

1. HOME is a coordinator home: an existing folder with the coordinator's database
   (``coordinator.db``, or the ``--db`` database) holding its schema
   (:func:`fedcare.coordinator.home.open_home`; nothing is created);
2. the study file reads and validates (:class:`~fedcare.records.study.StudyConfig`);
3. :func:`check_submission`, the study's own checks, which raise the error the study would
   otherwise fail with later, at the coordinator:

   * the privacy mode is available in this version (and mode ``private`` has its DP
     settings);
   * the strategy is known and its options, the aggregation layers and the privacy mode
     compose (the same :func:`~fedcare.strategy.driver.study_strategy` the runner builds);
   * the study's first round fits its ``privacy.epsilon``
     (:func:`~fedcare.privacy.guard.guard_next_round`, the guard every round passes);
   * the model kind is known to the model registry and its options are valid
     (:func:`~fedcare.models.registry.build_model`); a ``kind: package`` model was verified
     and stored before (:func:`fedcare.coordinator.packages.store_study_package`: the
     archive against the federation CA) and its code is not run here;
   * ``init_model`` names a version in the coordinator's model registry whose model kind is
     the study's, and, where the registered sites have described the study's dataset with one
     input shape, whose parameters have the shapes the study's model has on it;

4. :func:`check_sites_offer`: at least ``min_sites`` active sites offer the study's dataset
   (as they described it at Hello), else the refusal names the datasets the sites do offer
   and the closest name;
5. :func:`check_coordinator_running`: the coordinator is running (its liveness row is fresh,
   :mod:`fedcare.coordinator.store_presence`, and on its own host its listen address accepts
   a connection).

With ``--queue`` checks 4 and 5 only warn: the study is queued for a coordinator that is down
or for sites that connect later. The in-process paths (``fedcare demo``, the Python store,
analytics jobs) queue without 4 and 5.
"""

from __future__ import annotations

import difflib
import socket
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedcare.coordinator.packages import store_study_package
from fedcare.coordinator.rows import CoordinatorInfo
from fedcare.coordinator.store import CoordinatorStore
from fedcare.coordinator.store_base import utcnow
from fedcare.coordinator.store_presence import is_fresh
from fedcare.errors import ConfigError, NotFoundError, TransportError, ValidationError
from fedcare.models.registry import build_model
from fedcare.packages.resolve import is_package_model
from fedcare.privacy.guard import guard_next_round
from fedcare.records.study import StudyConfig
from fedcare.strategy.driver import check_privacy_mode, study_strategy

__all__ = [
    "check_coordinator_running",
    "check_ready",
    "check_sites_offer",
    "check_submission",
    "study_from_text",
    "submit_study",
]

PROBE_TIMEOUT_S = 2.0


def submit_study(
    store: CoordinatorStore,
    config: StudyConfig,
    study_file: Path | str,
    home: Path,
    *,
    start: str,
    queue: bool = False,
    owner: str | None = None,
    queue_option: str = "--queue",
) -> tuple[str, list[str]]:
    """Checks 3 to 5 on a read study, then store it ``pending``: ``(study id, warnings)``.

    Shared by ``fedcare study submit`` and the HTTP API's ``POST /studies``, so both refuse
    the same studies with the same line. ``study_file`` names the study in messages (a
    package path is found from its folder); ``owner`` is the API user submitting it (None on
    the coordinator's host); ``queue_option`` is how the caller spells "queue anyway" in a
    refusal.

    Raises
    ------
    FedcareError
        The first refusal (:func:`store_study_package`, :func:`check_submission`,
        :func:`check_ready`); nothing is stored.
    """
    config = store_study_package(config, Path(study_file), home)
    check_submission(store, config)
    warnings = check_ready(
        store, config, str(home), start=start, queue=queue, queue_option=queue_option
    )
    study_id = store.create_study(
        config.name, config.model_dump(mode="json"), config.seed, owner=owner
    )
    return study_id, warnings


def study_from_text(text: str, source: str = "study") -> StudyConfig:
    """The study in YAML ``text`` (a study file's content sent over the API).

    Raises
    ------
    ConfigError
        ``SOURCE: not valid YAML: ...``, or naming every bad field as a study file's would.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(err).split())}") from None
    return StudyConfig.from_dict(data, source=source)


def check_submission(store: CoordinatorStore, study: StudyConfig) -> None:
    """Refuse a study that would fail after submission.

    Raises
    ------
    ConfigError
        Naming the unavailable mode, unknown strategy or model kind, bad option, or the
        ``init_model`` that is not registered or does not fit the study's model.
    PrivacyBudgetError
        If round 1 alone would take the study's epsilon past ``privacy.epsilon``.
    ModelError
        For ``kind: torch`` where PyTorch is not installed at the coordinator.
    """
    check_privacy_mode(study)
    num_sites = max(1, study.min_sites)
    if study.privacy.mode == "encrypted":  # its keys are the coordinator's, checked at start
        plain = study.with_overrides(privacy={**study.privacy.model_dump(), "mode": "open"})
        study_strategy(plain, num_sites)
    else:
        study_strategy(study, num_sites)
    guard_next_round("at submission", study, [], 1)
    if is_package_model(study.model):  # verified and stored by store_study_package; its code
        if study.init_model is not None:  # never runs at the coordinator
            _check_init_model(store, study, None)
        return
    adapter = build_model(study.model)
    if study.init_model is not None:
        _check_init_model(store, study, adapter)


def _check_init_model(store: CoordinatorStore, study: StudyConfig, adapter: Any) -> None:
    version = study.init_model
    assert version is not None
    try:
        info = store.get_model(version)
    except NotFoundError:
        known = [m.version for m in store.list_models()]
        raise ConfigError(
            f"init_model {version!r} is not a registered model version "
            f"(registered: {', '.join(known) if known else 'none'})"
        ) from None
    config = info.card.get("config") if isinstance(info.card, dict) else None
    model = config.get("model") if isinstance(config, dict) else None
    kind = model.get("kind") if isinstance(model, dict) else None
    if kind is not None and kind != study.model.get("kind"):
        raise ConfigError(
            f"init_model {version!r} is a {kind!r} model; the study's model is "
            f"{study.model.get('kind')!r}"
        )
    shape = _input_shape(store, study.dataset.name)
    if shape is None or adapter is None:
        return  # no site has described the dataset yet: checked when the study starts
    like = adapter.init_params(shape, np.random.default_rng(0))
    try:
        like.check_structure(store.model_arrays(version), what=f"init_model {version!r}")
    except ValidationError as err:
        raise ConfigError(
            f"{err}; the study's model on {study.dataset.name!r} (input shape {shape}) does not "
            "fit the registered model"
        ) from None


def _input_shape(store: CoordinatorStore, dataset: str) -> tuple[int, ...] | None:
    """The input shape the active sites described for ``dataset`` (None unless they agree)."""
    shapes = set()
    for site in store.list_sites("active"):
        described = (site.datasets or {}).get(dataset)
        if isinstance(described, dict) and described.get("input_shape"):
            shapes.add(tuple(int(n) for n in described["input_shape"]))
    return shapes.pop() if len(shapes) == 1 else None


def check_ready(
    store: CoordinatorStore,
    study: StudyConfig,
    where: str,
    *,
    start: str,
    queue: bool = False,
    queue_option: str = "--queue",
) -> list[str]:
    """Checks 4 and 5: sites offer the dataset, the coordinator runs; refuse, or with ``queue``
    return what they would refuse as warnings.

    ``where`` names the coordinator's home; ``start`` is the command that starts it (said in
    the refusal), ``queue_option`` the caller's way to queue anyway (``--queue``, or the
    API's ``"queue": true``).

    Raises
    ------
    ConfigError
        Without ``queue``: :func:`check_sites_offer`'s refusal, saying ``--queue`` would queue.
    TransportError
        Without ``queue``: :func:`check_coordinator_running`'s, saying how to start it.
    """
    warnings = []
    try:
        check_sites_offer(store, study)
    except ConfigError as err:
        if not queue:
            raise ConfigError(
                f"{err}; or pass {queue_option} to queue it until such sites connect"
            ) from None
        warnings.append(str(err))
    try:
        check_coordinator_running(store, where)
    except TransportError as err:
        if not queue:
            raise TransportError(
                f"{err}; start it with `{start}`, or pass {queue_option} to queue the study anyway"
            ) from None
        warnings.append(str(err))
    return warnings


def check_sites_offer(store: CoordinatorStore, study: StudyConfig) -> list[str]:
    """The active sites that offer the study's dataset; refuse fewer than ``min_sites``.

    Raises
    ------
    ConfigError
        Naming the dataset, how many sites offer it of the ``min_sites`` needed, what the
        registered sites offer (by dataset, with the sites) and the closest dataset name.
    """
    name, needed = study.dataset.name, study.min_sites
    offers: dict[str, list[str]] = {}
    for site in store.list_sites("active"):
        for dataset in site.datasets or {}:
            offers.setdefault(str(dataset), []).append(site.id)
    offering = offers.get(name, [])
    if len(offering) >= needed:
        return offering
    message = (
        f"dataset {name!r} is offered by {len(offering)} of the {needed} sites the study "
        f"needs (min_sites)"
    )
    others = {d: sites for d, sites in sorted(offers.items()) if d != name}
    if offering:
        message += f": {', '.join(offering)}"
    if others:
        listed = "; ".join(f"{d} ({', '.join(sites)})" for d, sites in others.items())
        message += f"; sites offer: {listed}"
    elif not offers:
        message += "; no active site has connected yet (a site registers at its first Hello)"
    close = difflib.get_close_matches(name, list(others), n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    raise ConfigError(message)


def check_coordinator_running(
    store: CoordinatorStore, where: str, *, now: datetime | None = None, probe: bool = True
) -> CoordinatorInfo:
    """The running coordinator's liveness row; refuse when no coordinator is running.

    A coordinator runs when its row is ``running`` and was written within a few of its beats
    (:func:`~fedcare.coordinator.store_presence.is_fresh`); with ``probe``, a coordinator on
    this host must also accept a TCP connection at its listen address (a process that died in
    the last beats).

    Raises
    ------
    TransportError
        ``the coordinator for WHERE is not running (…)``, saying when it was last seen.
    """
    info = store.coordinator_presence()
    head = f"the coordinator for {where} is not running"
    if info is None:
        raise TransportError(f"{head} (it never started on this database)")
    now = now or utcnow()
    if not is_fresh(info, now):
        seen = info.seen_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        ago = _ago((now - info.seen_at).total_seconds())
        if info.status == "stopped":
            raise TransportError(f"{head} (stopped at {seen}, {ago} ago)")
        raise TransportError(
            f"{head} (last seen {seen}, {ago} ago, pid {info.pid} on {info.host}; it did not "
            "stop cleanly)"
        )
    if probe and info.host == socket.gethostname():
        refused = _refuses(info.listen)
        if refused:
            raise TransportError(
                f"{head} (pid {info.pid} last seen {_ago((now - info.seen_at).total_seconds())}"
                f" ago, but {info.listen} refuses connections: {refused})"
            )
    return info


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h" if seconds < 172800 else f"{seconds / 86400:.0f} days"


def _refuses(listen: str) -> str | None:
    """Why a TCP connection to ``listen`` (``host:port``, as served) fails; None if it works."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        return None  # not a host:port we can dial: the liveness row alone decides
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            return None
    except OSError as err:
        return err.strerror or type(err).__name__
