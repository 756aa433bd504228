"""A site's data configuration: which local datasets studies may refer to, by name.

```yaml
datasets:
  heart-disease:                 # the name a study's ``dataset.name`` refers to
    builtin: heart-disease       # a built-in loader (see fedcare.data.registry)
    options: {protocol: raw}
    site: cleveland              # this hospital's part of it
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from fedcare.data.base import SiteData
from fedcare.errors import ConfigError

__all__ = ["DatasetEntry", "SiteDataConfig"]


class DatasetEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    builtin: str
    site: str
    options: dict[str, Any] = Field(default_factory=dict)

    def load(self) -> SiteData:
        from fedcare.data.registry import load_dataset

        return load_dataset(self.builtin, **self.options).site(self.site)


class SiteDataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    datasets: dict[str, DatasetEntry]

    @classmethod
    def from_yaml(cls, path: str | Path) -> SiteDataConfig:
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"cannot read site data file {path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        try:
            return cls.model_validate(data)
        except PydanticValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise ConfigError(f"{path}: {problems}") from None

    def describe(self) -> dict[str, dict[str, Any]]:
        """What the coordinator may know about each dataset: shapes and counts, no rows."""
        out: dict[str, dict[str, Any]] = {}
        for name, entry in self.datasets.items():
            data = entry.load()
            out[name] = {
                "input_shape": list(data.train.input_shape),
                "task": "survival" if data.train.time is not None else "binary",
                "num_train": len(data.train),
                "num_test": len(data.test),
            }
        return out
