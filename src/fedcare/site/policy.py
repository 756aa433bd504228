"""A site's policy: what its steward allows studies to do with its data.

```yaml
allowed_studies: [heart-disease-fedavg]   # study names; leave out to allow any approved study
min_privacy_mode: open                    # the weakest privacy mode accepted
epsilon_cap: {heart-disease: 3.0}         # per dataset: the largest epsilon a study may declare
min_cohort: 20                            # no task on a dataset with fewer rows
min_cell: 5                               # analytics: withhold counts of 1 to min_cell - 1
allowed_outputs: [model_updates, metrics, statistics, validation, monitoring]
max_rounds: 100
resources: {task_time_limit_s: 600, memory_limit_mb: 8192}
sandbox: prefer                           # off (default) | prefer | require: the worker isolated
packages: {trusted_signers: [alice]}      # researcher ids whose signed study packages may run
devices: [cpu, cuda]                      # what package code may use (default: cpu only)
```

``allowed_outputs`` names what may leave the site: ``model_updates`` (fit tasks), ``metrics``
(evaluate tasks), ``statistics`` (analytics and moments), ``validation`` (the clinical
validation summary a study's ``validation:`` section asks of the final evaluation: a study
whose plan asks for it is refused from its first task, ``policy-output-not-allowed``) and
``monitoring`` (the monitoring summaries of models deployed here: without it they stay at the
site, audited ``monitoring-withheld``). The default allows all five; a policy that lists its
outputs and leaves out the last two keeps those summaries at the site.

``devices`` lets study packages' torch models train on the site's GPUs (``cuda``: all, or
``cuda:0``...): their runner then sees the NVIDIA device files and runs without an
address-space limit; with ``cpu`` alone (the default) it sees no GPU.

``packages.trusted_signers`` names the researchers (ids of their federation certificates, as
``fedcare provision add-researcher`` issued them) whose study packages this site runs. The
default trusts nobody: a study whose model is a package is refused with
``package-signer-untrusted`` (naming its signer) until the steward adds its signer; the
steward still approves each plan, which binds the package's hash (:mod:`fedcare.site.packages`).

``sandbox`` starts the worker that runs task code under :mod:`fedcare.packages.sandbox`
(bubblewrap: no network, read-only filesystem but the state dir, private /tmp). ``prefer``
runs with what the machine allows (resource limits only without bwrap); ``require`` refuses
every task with ``sandbox-unavailable`` there. Each reply's ``info["isolation"]`` says what
applied. ``off`` is the default for now: see the README on what it costs.

Privacy modes are ordered by what they guarantee, not on one line. Each mode gives a set of
guarantees, and a mode satisfies a policy's ``min_privacy_mode`` when it gives every guarantee
that mode gives:

| mode        | guarantees                                                          |
|-------------|---------------------------------------------------------------------|
| `open`      | (none: the coordinator sees each site's update)                     |
| `secure`    | hidden-updates (the coordinator sees only the sum)                  |
| `private`   | hidden-updates, differential-privacy (the sum is noised, eps counted)|
| `encrypted` | hidden-updates (only ciphertexts of updates; a site decrypts the sum)|

So ``open < secure = encrypted < private``: ``secure`` and ``encrypted`` hide each update by
different means (masks vs CKKS) but both let the coordinator learn the decrypted sum, so each
satisfies a policy asking for the other; a policy asking for ``private`` refuses both (no DP on
the sum).

``min_cell`` is the site's analytics small-cell minimum: every count an analytics task
releases with ``0 < count < min_cell`` is withheld (a spec's or ``min_cohort``'s larger
minimum wins). ``min_cell: 1`` releases every count: exact Kaplan-Meier curves (counts at each
distinct time) are answered only then, so a steward opts in by setting it explicitly.

A bad policy file raises :class:`~fedcare.errors.ConfigError` naming the file and the field;
``fedcare site start --policy`` stops there. ``epsilon_cap`` is enforced twice: a study that
declares more is refused, and the site's privacy ledger (:mod:`fedcare.site.ledger`) refuses a
round that would take the dataset's epsilon, composed across studies, past the cap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedcare.errors import ConfigError
from fedcare.packages.sandbox import SandboxMode
from fedcare.records.config_file import read_yaml, validate_config

__all__ = [
    "ALL_OUTPUTS",
    "MODE_GUARANTEES",
    "OUTPUT_OF_KIND",
    "PackagePolicy",
    "PrivacyMode",
    "ResourceLimits",
    "SitePolicy",
    "mode_satisfies",
]

PrivacyMode = Literal["open", "secure", "private", "encrypted"]
Output = Literal["model_updates", "metrics", "statistics", "validation", "monitoring"]
#: Every output a site can send (the default policy allows them all).
ALL_OUTPUTS: tuple[Output, ...] = (
    "model_updates",
    "metrics",
    "statistics",
    "validation",
    "monitoring",
)

#: What each privacy mode guarantees (see the module docstring for the resulting order).
MODE_GUARANTEES: dict[str, frozenset[str]] = {
    "open": frozenset(),
    "secure": frozenset({"hidden-updates"}),
    "private": frozenset({"hidden-updates", "differential-privacy"}),
    "encrypted": frozenset({"hidden-updates"}),
}
#: The kind of output each task kind sends back.
OUTPUT_OF_KIND: dict[str, str] = {
    "fit": "model_updates",
    "secagg": "model_updates",
    "evaluate": "metrics",
    "stats": "statistics",
    "analytics": "statistics",
}


def mode_satisfies(mode: str, minimum: str) -> bool:
    """Whether privacy ``mode`` gives every guarantee of ``minimum`` (unknown modes: no)."""
    if mode not in MODE_GUARANTEES or minimum not in MODE_GUARANTEES:
        return False
    return MODE_GUARANTEES[minimum] <= MODE_GUARANTEES[mode]


class ResourceLimits(BaseModel):
    """Per-task limits of the worker process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_time_limit_s: float | None = Field(default=None, gt=0)
    memory_limit_mb: int | None = Field(default=None, ge=64)


class PackagePolicy(BaseModel):
    """Which study packages the site runs: those signed by these researchers (none by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trusted_signers: tuple[str, ...] = ()

    @field_validator("trusted_signers")
    @classmethod
    def _researcher_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from fedcare.packages.signing import RESEARCHER_ID_PATTERN

        for name in value:
            if not RESEARCHER_ID_PATTERN.fullmatch(name):
                raise ValueError(f"{name!r} is not a researcher id (a-z, 0-9, '.', '_', '-')")
        return value


class SitePolicy(BaseModel):
    """A site's policy (the default allows what the steward approves, in any mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allowed_studies: tuple[str, ...] | None = None
    min_privacy_mode: PrivacyMode = "open"
    epsilon_cap: dict[str, float] = Field(default_factory=dict)
    min_cohort: int = Field(default=0, ge=0)
    #: Analytics small-cell minimum (fedcare.analytics.disclosure.DEFAULT_MIN_CELL).
    min_cell: int = Field(default=5, ge=1)
    allowed_outputs: tuple[Output, ...] = ALL_OUTPUTS
    max_rounds: int | None = Field(default=None, ge=1)
    resources: ResourceLimits = Field(default_factory=lambda: ResourceLimits())
    sandbox: SandboxMode = "off"
    packages: PackagePolicy = Field(default_factory=lambda: PackagePolicy())
    #: What study packages may compute on: ``cpu`` and ``cuda`` (any GPU) or ``cuda:N``.
    devices: tuple[str, ...] = ("cpu",)

    @field_validator("devices")
    @classmethod
    def _devices(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [d for d in value if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", d)]
        if bad or not value:
            raise ValueError(f"devices must list cpu, cuda or cuda:N; got {list(value)}")
        return value

    @field_validator("epsilon_cap")
    @classmethod
    def _positive_caps(cls, value: dict[str, float]) -> dict[str, float]:
        for dataset, cap in value.items():
            if not cap > 0:
                raise ValueError(f"the cap for dataset {dataset!r} must be > 0, got {cap!r}")
        return value

    @field_validator("allowed_studies")
    @classmethod
    def _named_studies(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and any(not s for s in value):
            raise ValueError("study names must be non-empty")
        return value

    def allows_study(self, name: str) -> bool:
        return self.allowed_studies is None or name in self.allowed_studies

    def summary(self) -> dict[str, Any]:
        """The policy as JSON-safe data (for the audit log)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "site policy") -> SitePolicy:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source}: expected a mapping at the top level, got {type(data).__name__}"
            )
        return validate_config(cls, dict(data), source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SitePolicy:
        path = Path(path)
        data = read_yaml(path, "site policy")
        return cls.from_dict(data, source=f"site policy {path}")
