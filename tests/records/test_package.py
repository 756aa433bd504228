"""The study package manifest (fedcare-package.yaml): strict, with errors naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedcare.errors import ConfigError
from fedcare.records.package import PackageManifest, check_package_path

GOOD: dict[str, Any] = {
    "name": "chest_resnet",
    "version": "1.2.0",
    "entry_point": "nets.resnet:ResNetAdapter",
    "task": "multiclass",
    "dependencies": ["torch>=2.1,<3", "numpy>=1.26"],
    "outputs": {"params": True, "metrics": ["accuracy", "macro_auroc"]},
    "description": "A ResNet-18.",
}


def _manifest(**changes: Any) -> PackageManifest:
    return PackageManifest.from_data({**GOOD, **changes}, "pkg/fedcare-package.yaml")


def test_a_good_manifest_reads() -> None:
    manifest = _manifest()
    assert (manifest.module, manifest.object_name) == ("nets.resnet", "ResNetAdapter")
    assert manifest.outputs.metrics == ("accuracy", "macro_auroc")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"entry_point": "model.Adapter"}, r"field entry_point: .*'module:object'.*model\.Adapter"),
        ({"entry_point": "model:"}, r"field entry_point: .*'module:object'"),
        ({"entry_point": "my-model:X"}, r"field entry_point: .*'module:object'"),
        (
            {"dependencies": ["torch>=>2"]},
            r"field dependencies: .*'torch>=>2' is not a PEP 508 requirement",
        ),
        ({"dependencies": ["torch"]}, r"field dependencies: .*'torch' has no version range"),
        (
            {"dependencies": ["torch>=2", "Torch<3"]},
            r"field dependencies: .*\['torch'\] are listed more than once",
        ),
        (
            {"dependencies": ["x @ https://example.org/x.whl"]},
            r"field dependencies: .*URL requirement is not allowed",
        ),
        ({"task": "ranking"}, r"field task: Input should be 'binary', 'multiclass'.*'ranking'"),
        ({"name": "Chest ResNet"}, r"field name: .*a-z, 0-9 and '_'"),
        ({"version": "latest"}, r"field version: .*a version such as 1\.0\.0"),
        ({"outputs": {"metrics": ["AUROC!"]}}, r"field outputs\.metrics: .*'AUROC!' is invalid"),
        ({"secrets": "x"}, r"field secrets: Extra inputs are not permitted"),
    ],
)
def test_bad_fields_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"^pkg/fedcare-package\.yaml: " + message):
        _manifest(**changes)


def test_a_missing_field_is_named() -> None:
    data = {k: v for k, v in GOOD.items() if k != "entry_point"}
    with pytest.raises(ConfigError, match=r"field entry_point: Field required"):
        PackageManifest.from_data(data, "pkg/fedcare-package.yaml")


def test_from_folder_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read package manifest .*fedcare-package\.yaml"):
        PackageManifest.from_folder(tmp_path)


@pytest.mark.parametrize(
    "path", ["/abs.py", "../up.py", "a/../b.py", "a\\b.py", ".hidden.py", "__pycache__/x.py", ""]
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="not a safe relative path"):
        check_package_path(path)
