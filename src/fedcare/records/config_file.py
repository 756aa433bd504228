"""Config files: read YAML and validate it with pydantic, errors naming the file and the field.

Study files, site policies, site data files and analytics specs all go through these two
functions, so every config error reads the same way: ``SOURCE: field.path: problem``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from fedcare.errors import ConfigError

__all__ = ["read_yaml", "validate_config"]

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path, what: str) -> Any:
    """The parsed YAML of ``path``.

    Raises
    ------
    ConfigError
        ``cannot read WHAT PATH: reason`` or ``PATH: not valid YAML: reason``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def validate_config(cls: type[M], data: Any, source: str) -> M:
    """``cls.model_validate(data)``, or a ConfigError naming ``source`` and every bad field.

    Each problem reads ``field a.b: message (got VALUE)``; unknown fields omit the value.
    """
    try:
        return cls.model_validate(data)
    except PydanticValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top)"
            got = "" if e["type"] == "extra_forbidden" else f" (got {_short(e['input'])})"
            problems.append(f"field {where}: {e['msg']}{got}")
        raise ConfigError(f"{source}: {'; '.join(problems)}") from None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
