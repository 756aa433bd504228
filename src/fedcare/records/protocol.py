"""The fedcare wire protocol version (``MAJOR.MINOR``) and what each minor added.

Both sides announce :data:`PROTOCOL` at Hello (``HelloRequest``/``HelloResponse``
``protocol_major``/``protocol_minor``). The coordinator's rules (:func:`refusal`):

- a different MAJOR is refused, naming both versions and which side to upgrade;
- a site up to :data:`SUPPORTED_BEHIND` minors behind takes part; further behind is refused;
- a site ahead by minors is accepted (a newer agent understands everything older).

A Hello without the protocol fields (an agent from before them) counts as :data:`LEGACY`, the
minor before the first one that announces itself.

The coordinator never sends a site a task that needs a feature of a later minor than the site
speaks (:data:`FEATURES`, :func:`missing`): that study task or deployment fails for the site
with :func:`too_old`'s reason instead. Plain data: imports nothing of fedcare.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "FEATURES",
    "LEGACY",
    "PROTOCOL",
    "REFUSAL_MARK",
    "STREAMED_TRANSFERS",
    "SUPPORTED_BEHIND",
    "announced",
    "missing",
    "refusal",
    "study_features",
    "too_old",
]

#: This installation's protocol version.
PROTOCOL: tuple[int, int] = (1, 2)
#: What a Hello without protocol fields speaks.
LEGACY: tuple[int, int] = (1, 0)
#: How many minors behind the coordinator a site may be and still take part.
SUPPORTED_BEHIND = 1
#: In every Hello refusal of :func:`refusal` (an agent stops on it: retrying cannot help).
REFUSAL_MARK = "speaks fedcare protocol"
#: The minor from which tasks and replies travel framed (fedcare.transport.framed) and both
#: directions resume after a cut (fedcare.transport.transfer); a site behind it gets and sends
#: whole messages, which the coordinator converts.
STREAMED_TRANSFERS = 2
#: Task and plan features by the minor that introduced them (nothing older is listed).
FEATURES: Mapping[str, int] = {
    "deploy task": 1,  # model deployments (fedcare.coordinator.deployments)
    "update compression": 1,  # a study's compression section (site half)
    "invalid-row skipping": 1,  # dataset.skip_invalid_rows
    # 1.1 added the clinical validation section to every training plan's hashed content: a
    # 1.0 agent rebuilds the plan without it and finds another hash (plan-hash-mismatch)
    "the training plan's validation section": 1,
}


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def announced(major: int, minor: int) -> tuple[int, int]:
    """The version a Hello announces; :data:`LEGACY` when it carries no protocol fields."""
    return LEGACY if major == 0 else (major, minor)


def refusal(site_id: str, site: tuple[int, int], coordinator: tuple[int, int] = PROTOCOL) -> str:
    """Why the coordinator refuses ``site`` at Hello; ``""`` when the site may take part."""
    versions = (
        f"site {site_id!r} speaks fedcare protocol {fmt(site)}, the coordinator {fmt(coordinator)}"
    )
    if site[0] != coordinator[0]:
        older = "the site" if site[0] < coordinator[0] else "the coordinator"
        return f"{versions}: different major versions never talk; upgrade {older}'s fedcare"
    if coordinator[1] - site[1] > SUPPORTED_BEHIND:
        return (
            f"{versions}: a site may be at most {SUPPORTED_BEHIND} minor version behind; "
            "upgrade the site's fedcare"
        )
    return ""


def study_features(config: Mapping[str, Any]) -> list[str]:
    """The :data:`FEATURES` a study (its stored config, as JSON) sends to its sites."""
    out = []
    compression = config.get("compression") or {}
    if isinstance(compression, Mapping) and compression.get("method", "none") != "none":
        out.append("update compression")
    dataset = config.get("dataset") or {}
    if isinstance(dataset, Mapping) and dataset.get("skip_invalid_rows") is not None:
        out.append("invalid-row skipping")
    if "validation" in config:  # a training study (every one has the section since 1.1)
        out.append("the training plan's validation section")
    return out


def missing(minor: int, features: Iterable[str]) -> list[str]:
    """The ``features`` a site speaking ``minor`` cannot handle."""
    return [f for f in features if FEATURES.get(f, 0) > minor]


def too_old(site_id: str, site: tuple[int, int], feature: str) -> str:
    """The reason a task needing ``feature`` is not sent to ``site_id``."""
    needs = (site[0], FEATURES[feature])
    return (
        f"site {site_id!r} speaks protocol {fmt(site)}; {feature} needs {fmt(needs)}: "
        "upgrade its fedcare"
    )
