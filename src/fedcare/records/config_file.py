"""Config files: read YAML and validate it with pydantic, errors naming the file and the field.

Study files, site policies, site data files and analytics specs all go through these two
functions, so every config error reads the same way: ``SOURCE: field.path: problem``.
Files that name dataset files by relative path resolve them from their own folder
(:func:`with_base_dir`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from fedcare.errors import ConfigError

__all__ = ["BASE_DIR_OPTION", "FILE_DATASETS", "read_yaml", "validate_config", "with_base_dir"]

M = TypeVar("M", bound=BaseModel)
#: The option of dataset loaders that read files by relative path: the folder they resolve in.
BASE_DIR_OPTION = "base_dir"
#: The datasets whose options name files by relative path: exactly those whose loader takes
#: :data:`BASE_DIR_OPTION` (``tests/data/test_registry.py`` checks this against the registry).
FILE_DATASETS = frozenset({"cdm"})


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


def with_base_dir(name: str, options: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """``options`` with ``base_dir`` set to ``base`` when dataset ``name``'s loader reads files
    by relative path (it accepts ``base_dir``) and the options do not set it already.

    Study and analytics files call it with their own folder, so their dataset paths are
    relative to the file, wherever the command runs.
    """
    out = dict(options)
    if name in FILE_DATASETS:
        out.setdefault(BASE_DIR_OPTION, str(base.resolve()))
    return out
