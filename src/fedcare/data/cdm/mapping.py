"""A site's mapping from its own table to the study's common data model, read from YAML.

```yaml
site: bern
missing: ["?", "", -9]            # codes meaning "missing" in every source column
source_columns: [age, sex, ...]   # optional: names for a file without a header row
variables:
  age:     {column: age_years}
  sex:     {column: gender, recode: {M: 1, F: 0}}
  glucose: {column: glu, unit: mg/dL}           # converted to the schema's unit
  chol:    {column: chol, missing: [0]}         # extra missing codes for this column
  bmi:     {derived: "weight / (height / 100) ** 2"}
  disease: {derived: "num > 0"}
```

Each variable takes its value from one source ``column`` or a ``derived`` expression (see
:mod:`fedcare.data.cdm.expr`), optionally converted from ``unit`` to the schema's unit
(``molar_mass`` overrides the schema's for mg/dL <-> mmol/L) and recoded by ``recode``
(source value -> schema code). :meth:`SiteMapping.check` ties a mapping to a schema and raises
a :class:`~fedcare.errors.ConfigError` naming the file, the variable and the problem.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedcare.data.cdm._yaml import read_yaml, validate_model
from fedcare.data.cdm.expr import ExpressionError, parse
from fedcare.data.cdm.schema import Schema, Variable
from fedcare.data.cdm.units import UnitError, conversion
from fedcare.errors import ConfigError

__all__ = ["ResolvedVariable", "SiteMapping", "VariableMapping", "normalize_code"]

Code = int | float | str


def normalize_code(value: Any) -> str:
    """The text a raw value is compared by: ``1``, ``1.0`` and ``" 1"`` are all ``"1"``."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer():
        return str(int(number))
    return repr(number)


class VariableMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | int | None = None
    derived: str | None = None
    unit: str | None = None
    molar_mass: float | None = Field(default=None, gt=0)
    recode: dict[Code, Code | None] | None = None
    missing: tuple[Code, ...] = ()

    @model_validator(mode="after")
    def _one_source(self) -> VariableMapping:
        if (self.column is None) == (self.derived is None):
            raise ValueError("give exactly one of 'column' or 'derived'")
        if self.derived is not None:
            try:
                parse(self.derived)
            except ExpressionError as err:
                raise ValueError(str(err)) from None
        return self


@dataclass(frozen=True)
class ResolvedVariable:
    """One variable's mapping checked against the schema, with its conversion factors."""

    variable: Variable
    mapping: VariableMapping
    scale: float
    offset: float
    recode: dict[str, Any] | None
    missing: frozenset[str]
    tree: ast.expr | None


class SiteMapping(BaseModel):
    """The parsed mapping file; ``path`` names it in error messages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = ""
    description: str = ""
    missing: tuple[Code, ...] = ()
    source_columns: tuple[str, ...] | None = None
    variables: dict[str, VariableMapping]
    path: str = "<mapping>"

    @classmethod
    def from_yaml(cls, path: str | Path) -> SiteMapping:
        """Read a mapping file (ConfigError naming the file and variable on a problem)."""
        path = Path(path)
        data = read_yaml(path, "mapping")
        if not isinstance(data, dict):
            raise ConfigError(f"mapping {path}: expected a mapping with 'variables'")
        return validate_model(cls, {**data, "path": str(path)}, path, "mapping", "variables")

    def _error(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"mapping {self.path}: variable {name!r}: {problem}")

    def check(self, schema: Schema) -> dict[str, ResolvedVariable]:
        """Resolve every mapped variable against ``schema`` (schema order).

        Raises
        ------
        ConfigError
            A variable unknown to the schema, a required variable left unmapped, a unit with no
            conversion, or a recode target outside the schema's code list.
        """
        for name in self.variables:
            if name not in schema.variables:
                raise self._error(name, f"not in schema {schema.path} ({sorted(schema.variables)})")
        resolved: dict[str, ResolvedVariable] = {}
        for name, variable in schema.variables.items():
            spec = self.variables.get(name)
            if spec is None:
                if variable.required:
                    raise self._error(name, f"required by schema {schema.path} but not mapped")
                continue
            resolved[name] = self._resolve(variable, spec)
        return resolved

    def _resolve(self, variable: Variable, spec: VariableMapping) -> ResolvedVariable:
        name = variable.name
        scale, offset = 1.0, 0.0
        if spec.unit is not None:
            if variable.unit is None:
                raise self._error(name, f"unit {spec.unit!r} given, but the schema has no unit")
            try:
                molar = spec.molar_mass or variable.molar_mass
                scale, offset = conversion(spec.unit, variable.unit, molar)
            except UnitError as err:
                raise self._error(name, str(err)) from None
        recode = None
        if spec.recode is not None:
            if variable.type == "category":
                allowed = {normalize_code(c) for c in variable.codes or ()}
                bad = [v for v in spec.recode.values() if v is not None]
                bad = [v for v in bad if normalize_code(v) not in allowed]
                if bad:
                    raise self._error(
                        name, f"recode targets {bad} are not in the schema's codes "
                        f"{list(variable.codes or ())}"
                    )  # fmt: skip
            recode = {normalize_code(k): v for k, v in spec.recode.items()}
        missing = frozenset(normalize_code(c) for c in (*self.missing, *spec.missing))
        tree = parse(spec.derived) if spec.derived is not None else None
        return ResolvedVariable(variable, spec, scale, offset, recode, missing, tree)
