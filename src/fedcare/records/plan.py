"""Training plans and their content hash: what a data steward approves.

A plan is everything that decides what runs on a site's data and what leaves it: the model
spec, the preprocessing, the local training config (the recipe with the strategy's local
algorithm, ``prox_mu`` and DP-SGD settings), the dataset name, the privacy mode and its site
half (norm-bound clip, distributed DP noise, secure aggregation, encryption: see
:mod:`fedcare.strategy.site_half`), the code (fedcare's version and the SHA-256 of the model
adapter source files that the model kind uses) and the versions of the numerical libraries.
Its hash is the SHA-256 of its canonical JSON (sorted keys, no whitespace), so the same plan
hashes the same on every machine.

This module is the plan as plain data (records: it imports nothing of fedcare but ``errors``
and the version). The coordinator builds the plan from a study
(:func:`fedcare.strategy.plan.plan_for_study`, called by ``strategy/driver.py``) and sends it
with every task. The site re-checks it (``fedcare.site.plans``): it recomputes the code and
dependency part from its own installation (``local_code``) and the hash from the plan's
contents, so a coordinator cannot change the recipe under an approved hash; it derives the
pipeline of every ``fit`` task from ``site_half`` and refuses a task that carries another.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from fedcare.errors import ConfigError

__all__ = [
    "PLAN_KEYS",
    "TrainingPlan",
    "local_code",
    "local_dependencies",
    "model_code_files",
    "package_requires",
]

#: The keys of a plan's content (the hash covers exactly these).
PLAN_KEYS = (
    "model",
    "preprocessing",
    "training",
    "rounds",
    "dataset",
    "privacy_mode",
    "epsilon",
    "site_half",
    "membership_inference",
    "code",
    "dependencies",
    "validation",
    "personalization",
    "data",
)
#: Keys a plan stored before they existed lacks (read as empty).
_LATER_KEYS = ("validation", "personalization", "data")
_MODELS = Path(__file__).resolve().parents[1] / "models"
_LINEAR = ("base.py", "registry.py", "_validate.py", "_local_sgd.py", "_linear.py")
#: Model kind -> the adapter source files (under fedcare/models) that run it.
MODEL_FILES: dict[str, tuple[str, ...]] = {
    "logistic": (*_LINEAR, "logistic.py"),
    "cox": (*_LINEAR, "cox.py"),
    "echo": ("base.py", "registry.py", "echo.py"),
    "sklearn": (*_LINEAR, "logistic.py", "sklearn.py"),
    "torch": (*_LINEAR, "logistic.py", "cox.py", "torch.py", "torch_nets.py"),
}
_DEPENDENCIES = ("numpy", "scipy", "scikit-learn")


def model_code_files(kind: str) -> tuple[str, ...]:
    """The adapter source files a model kind uses (names relative to ``fedcare/models``).

    A study package (kind ``package``) may use any ready adapter, so every file counts; the
    package's own files are named by its hash in the plan's model spec.
    """
    if kind == "package":
        return tuple(sorted(p.name for p in _MODELS.glob("*.py")))
    try:
        return MODEL_FILES[kind]
    except KeyError:
        raise ConfigError(
            f"training plan: model kind {kind!r} is unknown; known: {sorted(MODEL_FILES)}"
        ) from None


@lru_cache(maxsize=16)
def local_code(kind: str) -> dict[str, str]:
    """This installation's code part of a plan: fedcare's version and the adapter files' hashes."""
    from fedcare._version import __version__

    code = {"fedcare": __version__}
    for name in model_code_files(kind):
        digest = hashlib.sha256((_MODELS / name).read_bytes()).hexdigest()
        code[f"models/{name}"] = digest
    return code


@lru_cache(maxsize=16)
def local_dependencies(kind: str, requires: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of the numerical libraries installed here (torch only for torch models), and
    of the distributions a study package ``requires``."""
    names = (*_DEPENDENCIES, "torch") if kind == "torch" else _DEPENDENCIES
    names = tuple(sorted({*names, *requires}))
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True)
class TrainingPlan:
    """One study's training plan, as approved by stewards and carried by every task."""

    study: str
    model: Mapping[str, Any]
    preprocessing: Mapping[str, Any]
    training: Mapping[str, Any]
    rounds: int
    dataset: str
    privacy_mode: str = "open"
    epsilon: float | None = None
    #: After the last round each site attacks the final model on its own rows and reports
    #: only the attack's AUROC (``mia_loss_auroc``): an output the steward approves with the plan.
    membership_inference: bool = False
    #: The parameters of every layer applied to an update before it leaves a site (clip,
    #: noise, mask, encrypt), keyed as :data:`fedcare.strategy.site_half.SITE_HALF_KEYS`.
    site_half: Mapping[str, Any] = field(default_factory=dict)
    code: Mapping[str, str] = field(default_factory=dict)
    dependencies: Mapping[str, str] = field(default_factory=dict)
    #: The study's ``validation`` section: what the final evaluation returns besides the
    #: metrics (:mod:`fedcare.records.validation_spec`); empty: nothing more.
    validation: Mapping[str, Any] = field(default_factory=dict)
    #: The study's ``personalization`` section: the model each site trains and keeps for
    #: itself, whose metrics it reports (:mod:`fedcare.records.personalization_spec`); empty:
    #: none. Left out of the content when empty, so plans without it hash as before.
    personalization: Mapping[str, Any] = field(default_factory=dict)
    #: How the site treats invalid rows of the dataset (``{"skip_invalid_rows": {"max_fraction":
    #: 0.05}}``, :mod:`fedcare.site.row_skips`); empty: a site with an unreadable row fails the
    #: task. Left out of the content when empty, so plans without it hash as before.
    data: Mapping[str, Any] = field(default_factory=dict)

    def content(self) -> dict[str, Any]:
        """The hashed part (everything but the study name)."""
        personal = {"personalization": dict(self.personalization)} if self.personalization else {}
        data = {"data": dict(self.data)} if self.data else {}
        return {
            "model": dict(self.model),
            "preprocessing": dict(self.preprocessing),
            "training": dict(self.training),
            "rounds": self.rounds,
            "dataset": self.dataset,
            "privacy_mode": self.privacy_mode,
            "epsilon": self.epsilon,
            "site_half": dict(self.site_half),
            "membership_inference": self.membership_inference,
            "code": dict(self.code),
            "dependencies": dict(self.dependencies),
            "validation": dict(self.validation),
            **personal,
            **data,
        }

    @property
    def hash(self) -> str:
        """SHA-256 (hex) of the canonical JSON of :meth:`content`."""
        return hashlib.sha256(_canonical(self.content())).hexdigest()

    @property
    def model_kind(self) -> str:
        return str(self.model.get("kind", ""))

    def to_task_plan(self) -> dict[str, Any]:
        """What travels in ``Task.plan``: the content, the study name and the hash."""
        return {**self.content(), "study": self.study, "plan_hash": self.hash}

    @classmethod
    def from_task_plan(cls, plan: Mapping[str, Any]) -> TrainingPlan:
        """The plan a task carries; ``ConfigError`` naming the missing or bad key."""
        # a plan stored before the validation, personalization or data section existed has none
        missing = [k for k in (*PLAN_KEYS, "study") if k not in plan and k not in _LATER_KEYS]
        if missing:
            raise ConfigError(f"task plan lacks {missing}; it has {sorted(plan)}")
        plan = {**{key: {} for key in _LATER_KEYS}, **plan}
        for key in (
            "model",
            "preprocessing",
            "training",
            "site_half",
            "code",
            "dependencies",
            *_LATER_KEYS,
        ):
            if not isinstance(plan[key], Mapping):
                raise ConfigError(f"task plan: {key!r} must be a mapping, got {plan[key]!r}")
        if not isinstance(plan["rounds"], int):
            raise ConfigError(f"task plan: 'rounds' must be an int, got {plan['rounds']!r}")
        epsilon = plan["epsilon"]
        if epsilon is not None and not isinstance(epsilon, int | float):
            raise ConfigError(f"task plan: 'epsilon' must be a number or null, got {epsilon!r}")
        if not isinstance(plan["membership_inference"], bool):
            raise ConfigError(
                "task plan: 'membership_inference' must be true or false, "
                f"got {plan['membership_inference']!r}"
            )
        return cls(
            study=str(plan["study"]),
            model=dict(plan["model"]),
            preprocessing=dict(plan["preprocessing"]),
            training=dict(plan["training"]),
            rounds=plan["rounds"],
            dataset=str(plan["dataset"]),
            privacy_mode=str(plan["privacy_mode"]),
            epsilon=None if epsilon is None else float(epsilon),
            site_half=dict(plan["site_half"]),
            membership_inference=plan["membership_inference"],
            code=dict(plan["code"]),
            dependencies=dict(plan["dependencies"]),
            validation=dict(plan["validation"]),
            personalization=dict(plan["personalization"]),
            data=dict(plan["data"]),
        )

    def with_local_code(self) -> TrainingPlan:
        """The same plan with the code and dependency part of this installation."""
        kind = self.model_kind
        dependencies = local_dependencies(kind, package_requires(self.model))
        return TrainingPlan(
            **{**self.__dict__, "code": local_code(kind), "dependencies": dependencies}
        )


def package_requires(model: Mapping[str, Any]) -> tuple[str, ...]:
    """The distribution names a package model spec's ``requires`` lists (sorted)."""
    requires = model.get("requires", ()) if model.get("kind") == "package" else ()
    if not isinstance(requires, list | tuple) or not all(isinstance(r, str) for r in requires):
        raise ConfigError(f"model spec: 'requires' must be a list of names, got {requires!r}")
    return tuple(sorted(requires))
