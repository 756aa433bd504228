"""A small real federated model for the inference tests: the heart-disease example study (raw
features, global scaling, mean imputation) trained for a few rounds in simulation, and its
bundle as :func:`fedcare.inference.bundle.bundle_from_study` builds it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedcare.data.base import FederatedDataset, SiteData
from fedcare.data.registry import load_dataset
from fedcare.inference.bundle import bundle_from_study, write_bundle
from fedcare.records.study import StudyConfig
from fedcare.simulation.run import SimulationResult, run_simulation
from fedcare.site.preprocess import Preprocessor

from ..conftest import require_mirror

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "heart-disease.yaml"


@dataclass(frozen=True)
class Trained:
    study: StudyConfig
    result: SimulationResult
    data: FederatedDataset
    files: dict[str, bytes]

    def expected(self, site: SiteData) -> np.ndarray:
        """The federated model's scores of ``site``'s test rows, preprocessed by the site code."""
        model = self.result.model
        prep = Preprocessor.for_task(self.study.plan()["preprocessing"], model.arrays, site.train)
        return model.predict(prep.apply(site.test).X)

    def frame(self, site: SiteData) -> pd.DataFrame:
        """``site``'s raw test rows (NaN where missing) with a patient id and a column the
        model does not use."""
        df = pd.DataFrame(site.test.X, columns=list(self.data.feature_names))
        df.insert(0, "patient", [f"{site.site_id}-{i}" for i in range(len(df))])
        df["note"] = "unused"
        return df


def train(**overrides: Any) -> Trained:
    require_mirror()
    study = StudyConfig.from_yaml(EXAMPLE).with_overrides(
        rounds=3, baselines={"local": False, "pooled": False, "cross_site": False}, **overrides
    )
    result = run_simulation(study)
    data = load_dataset(study.dataset.name, **study.dataset.options)
    files = bundle_from_study(
        study.model_dump(mode="json"),
        params=dict(result.model.params),
        task_arrays=result.model.arrays,
        feature_names=data.feature_names,
        input_shape=data.sites[0].train.input_shape,
        task=result["task"],
        card=result["model_card"],
        source={"study_id": study.name},
    )
    return Trained(study, result, data, files)


@pytest.fixture(scope="session")
def trained() -> Trained:
    return train()


@pytest.fixture(scope="session")
def bundle_dir(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model's bundle, written to a folder."""
    return write_bundle(trained.files, tmp_path_factory.mktemp("bundle") / "heart")
