"""A study's common data model: the variables every site must provide, read from YAML.

```yaml
name: heart-disease
checks: {max_missing: 0.5, max_invalid: 0.05, min_rows: 20}
variables:
  age:     {type: float, unit: years, range: [18, 100], required: true, description: Age}
  sex:     {type: category, codes: [0, 1], description: "0 female, 1 male"}
  glucose: {type: float, unit: mmol/L, molar_mass: 180.16, range: [1, 40]}
  disease: {type: bool, role: label, required: true}
```

``molar_mass`` (g/mol) lets a site map ``mg/dL`` to ``mmol/L``. ``checks`` are the required
checks' thresholds: a *required* variable may be missing in at most ``max_missing`` of the rows
(per-variable override ``max_missing``) and invalid (out of range, unmapped code, not a number)
in at most ``max_invalid``; the table needs ``min_rows`` rows. Optional variables are reported,
never refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedcare.data.cdm._yaml import read_yaml, validate_model
from fedcare.data.cdm.units import KNOWN_UNITS
from fedcare.errors import ConfigError

__all__ = ["CheckThresholds", "Role", "Schema", "VarType", "Variable"]

VarType = Literal["float", "int", "category", "bool", "date"]
Role = Literal["feature", "label", "time", "event", "id-excluded"]
Code = int | float | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckThresholds(_Strict):
    max_missing: float = Field(default=0.5, ge=0, le=1)
    max_invalid: float = Field(default=0.05, ge=0, le=1)
    min_rows: int = Field(default=1, ge=0)


class Variable(_Strict):
    """One variable of the common data model."""

    name: str
    type: VarType
    unit: str | None = None
    range: tuple[float, float] | None = None
    codes: tuple[Code, ...] | None = None
    required: bool = False
    role: Role = "feature"
    description: str = ""
    molar_mass: float | None = Field(default=None, gt=0)
    max_missing: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> Variable:
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"range [{self.range[0]}, {self.range[1]}] has min > max")
        if self.type == "category" and not self.codes:
            raise ValueError("a category variable needs a non-empty 'codes' list")
        if self.codes is not None and self.type != "category":
            raise ValueError(f"'codes' given for a {self.type} variable; only category has codes")
        if self.codes is not None and len(set(map(str, self.codes))) != len(self.codes):
            raise ValueError(f"codes {list(self.codes)} repeat a value")
        if self.range is not None and self.type not in ("float", "int"):
            raise ValueError(f"'range' given for a {self.type} variable; only float/int")
        if self.unit is not None and self.unit not in KNOWN_UNITS:
            raise ValueError(f"unit {self.unit!r} is not a known unit ({', '.join(KNOWN_UNITS)})")
        return self

    @property
    def numeric(self) -> bool:
        return self.type in ("float", "int", "bool")


class Schema(_Strict):
    """The parsed schema file; ``path`` names it in error messages."""

    name: str
    description: str = ""
    checks: CheckThresholds = Field(default_factory=CheckThresholds)
    variables: dict[str, Variable]
    path: str = "<schema>"

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("variables"), dict):
            variables = {
                name: ({**spec, "name": name} if isinstance(spec, dict) else spec)
                for name, spec in data["variables"].items()
            }
            data = {**data, "variables": variables}
        return data

    @model_validator(mode="after")
    def _roles(self) -> Schema:
        if not self.variables:
            raise ValueError("declares no variables")
        for role in ("label", "time"):
            named = [v.name for v in self.variables.values() if v.role == role]
            if len(named) > 1:
                raise ValueError(f"more than one {role} variable: {named}")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> Schema:
        """Read and check a schema file.

        Raises
        ------
        ConfigError
            Naming the file, the variable and the problem.
        """
        path = Path(path)
        data = read_yaml(path, "schema")
        if not isinstance(data, dict):
            raise ConfigError(f"schema {path}: expected a mapping with 'name' and 'variables'")
        return validate_model(cls, {**data, "path": str(path)}, path, "schema", "variables")

    def variable(self, name: str) -> Variable:
        try:
            return self.variables[name]
        except KeyError:
            raise ConfigError(
                f"schema {self.path}: no variable {name!r}; variables: {sorted(self.variables)}"
            ) from None

    def with_role(self, role: Role) -> list[Variable]:
        return [v for v in self.variables.values() if v.role == role]

    @property
    def features(self) -> list[Variable]:
        return self.with_role("feature")

    def max_missing(self, variable: Variable) -> float:
        if variable.max_missing is not None:
            return variable.max_missing
        return self.checks.max_missing
