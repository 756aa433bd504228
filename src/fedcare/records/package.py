"""A study package's manifest (``fedcare-package.yaml``): plain data, validated strictly.

A study package is a folder with this manifest and the researcher's Python files. The manifest
says what the code is (name, version), where to start it (``entry_point: module:object``),
what it solves (``task``), what it needs (PEP 508 ``dependencies`` with version ranges), what
it may return (``outputs``) and which non-Python files travel with it (``data``). Building,
signing and verifying packages is :mod:`fedcare.packages`; this module is only the data, so
that every layer (a site's review, the coordinator's store) can read it.

Example::

    name: numpy_logistic
    version: 1.0.0
    entry_point: model:NumpyLogistic
    task: binary
    dependencies: ["numpy>=1.26,<3"]
    outputs: {params: true, metrics: [accuracy, auroc]}
    description: Logistic regression in plain numpy.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fedcare.errors import ConfigError

__all__ = [
    "MANIFEST_FILE",
    "PACKAGE_TASKS",
    "PackageManifest",
    "PackageOutputs",
    "PackageTask",
    "check_package_path",
]

#: The manifest's file name inside a package folder (and archive).
MANIFEST_FILE = "fedcare-package.yaml"
PackageTask = Literal["binary", "multiclass", "multilabel", "regression", "survival"]
PACKAGE_TASKS: tuple[str, ...] = ("binary", "multiclass", "multilabel", "regression", "survival")

_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_VERSION = re.compile(r"[0-9]+(\.[0-9]+){0,3}([a-z0-9.+-]{0,32})")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_METRIC = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_package_path(path: str) -> str:
    """``path`` if it is a safe relative POSIX path inside a package, else ConfigError.

    No absolute paths, no ``..``, no backslashes, no empty or hidden parts, no ``__pycache__``.
    """
    parts = PurePosixPath(path).parts if isinstance(path, str) else ()
    if (
        not parts
        or path.startswith("/")
        or "\\" in path
        or any(p in ("..", ".", "__pycache__") or not _PART.fullmatch(p) for p in parts)
        or str(PurePosixPath(*parts)) != path
    ):
        raise ConfigError(
            f"path {path!r} is not a safe relative path inside the package (no absolute "
            "paths, '..', backslashes, hidden parts or __pycache__)"
        )
    return path


class PackageOutputs(BaseModel):
    """What the package's code may return to the site: parameters, and which metrics."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    params: bool = True
    metrics: tuple[str, ...] = ()

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not _METRIC.fullmatch(name):
                raise ValueError(f"metric name {name!r} is invalid: use a-z, 0-9 and '_'")
        if len(set(value)) != len(value):
            raise ValueError(f"metric names are listed more than once: {list(value)}")
        return value


class PackageManifest(BaseModel):
    """The manifest of a study package (``fedcare-package.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="a-z, 0-9 and '_', starting with a letter (at most 64)")
    version: str
    entry_point: str = Field(description="'module:object', e.g. 'model:NumpyLogistic'")
    task: PackageTask
    dependencies: tuple[str, ...] = ()
    outputs: PackageOutputs = PackageOutputs()
    data: tuple[str, ...] = ()
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(
                "must be 1 to 64 characters from a-z, 0-9 and '_', starting with a letter"
            )
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not _VERSION.fullmatch(value):
            raise ValueError("must be a version such as 1.0.0")
        return value

    @field_validator("entry_point")
    @classmethod
    def _entry_point(cls, value: str) -> str:
        module, sep, obj = value.partition(":")
        if not sep or not _DOTTED.fullmatch(module) or not _DOTTED.fullmatch(obj):
            raise ValueError("must be 'module:object' with Python identifiers, e.g. model:Model")
        return value

    @field_validator("dependencies")
    @classmethod
    def _dependencies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from packaging.requirements import InvalidRequirement, Requirement

        names: list[str] = []
        for text in value:
            try:
                req = Requirement(text)
            except InvalidRequirement as err:
                raise ValueError(
                    f"{text!r} is not a PEP 508 requirement: {str(err).splitlines()[0]}"
                ) from None
            if req.url is not None:
                raise ValueError(f"{text!r}: a URL requirement is not allowed; give a version")
            if not req.specifier:
                raise ValueError(f"{text!r} has no version range; write e.g. '{req.name}>=1,<2'")
            names.append(req.name.lower().replace("_", "-"))
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"dependencies {dupes} are listed more than once")
        return value

    @field_validator("data")
    @classmethod
    def _data(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            try:
                check_package_path(path)
            except ConfigError as err:
                raise ValueError(str(err)) from None
        return tuple(sorted(set(value)))

    @property
    def module(self) -> str:
        """The entry point's module (``model`` in ``model:NumpyLogistic``)."""
        return self.entry_point.partition(":")[0]

    @property
    def object_name(self) -> str:
        """The entry point's object (``NumpyLogistic`` in ``model:NumpyLogistic``)."""
        return self.entry_point.partition(":")[2]

    @classmethod
    def from_data(cls, data: Any, source: str) -> PackageManifest:
        """Validate parsed YAML; a ConfigError names ``source`` and every bad field."""
        from fedcare.records.config_file import validate_config

        return validate_config(cls, data, source)

    @classmethod
    def from_folder(cls, folder: str | Path) -> PackageManifest:
        """Read ``FOLDER/fedcare-package.yaml``."""
        from fedcare.records.config_file import read_yaml

        path = Path(folder) / MANIFEST_FILE
        return cls.from_data(read_yaml(path, "package manifest"), str(path))
