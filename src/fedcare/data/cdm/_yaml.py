"""Read a YAML config file into a pydantic model, naming the file and variable on failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from fedcare.errors import ConfigError

__all__ = ["describe_errors", "read_yaml", "validate_model"]

M = TypeVar("M", bound=BaseModel)


def read_yaml(path: Path, what: str) -> Any:
    """The parsed YAML of ``path``; ConfigError naming the file when unreadable."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{what} {path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {path}: not valid YAML: {err}") from None


def describe_errors(err: PydanticValidationError, section: str) -> str:
    """``variable 'x': field: problem`` for each pydantic error under ``section``."""
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        msg = str(e["msg"]).removeprefix("Value error, ")
        if len(loc) >= 2 and loc[0] == section:
            field = ".".join(loc[2:])
            where = f"variable {loc[1]!r}" + (f": {field}" if field else "")
        else:
            where = ".".join(loc) or "file"
        problems.append(f"{where}: {msg}")
    return "; ".join(problems)


def validate_model(cls: type[M], data: Any, path: Path | str, what: str, section: str) -> M:
    """``cls.model_validate(data)``; ConfigError naming file, variable and problem."""
    try:
        return cls.model_validate(data)
    except PydanticValidationError as err:
        raise ConfigError(f"{what} {path}: {describe_errors(err, section)}") from None
