"""Paths and small builders shared by the common-data-model tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CDM = REPO / "examples" / "cdm"
FIXTURE = CDM / "fixture"
HEART = CDM / "heart-disease"
EICU = CDM / "eicu"


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def fixture_mapping(site: str) -> Path:
    return FIXTURE / "sites" / f"{site}.yaml"
