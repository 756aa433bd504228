from pathlib import Path

import pytest

from fedcare.errors import ConfigError
from fedcare.site.policy import SitePolicy, mode_satisfies

GOOD = """
allowed_studies: [heart]
min_privacy_mode: secure
epsilon_cap: {heart-disease: 3.0}
min_cohort: 20
allowed_outputs: [model_updates, metrics]
max_rounds: 50
resources: {task_time_limit_s: 120, memory_limit_mb: 2048}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def test_a_policy_file_is_read_and_validated(tmp_path: Path) -> None:
    policy = SitePolicy.from_yaml(write(tmp_path, GOOD))
    assert policy.allowed_studies == ("heart",) and policy.allows_study("heart")
    assert not policy.allows_study("other")
    assert policy.epsilon_cap == {"heart-disease": 3.0} and policy.min_cohort == 20
    assert policy.resources.task_time_limit_s == 120.0
    assert policy.summary()["min_privacy_mode"] == "secure"


def test_the_default_policy_allows_any_study_in_any_mode() -> None:
    policy = SitePolicy.from_dict(None)
    assert policy.allows_study("anything") and policy.min_privacy_mode == "open"
    assert set(policy.allowed_outputs) == {
        "model_updates",
        "metrics",
        "statistics",
        "validation",
        "monitoring",
    }


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("min_privacy_mode: hidden\n", "min_privacy_mode", "hidden"),
        ("allowed_outputs: [model_updates, rows]\n", "allowed_outputs.1", "rows"),
        ("min_cohort: -3\n", "min_cohort", "-3"),
        ("resources: {memory_limit_mb: 1}\n", "resources.memory_limit_mb", "1"),
        ("max_rounds: 0\n", "max_rounds", "0"),
        ("epsilon_cap: {heart-disease: -1}\n", "epsilon_cap", "heart-disease"),
    ],
)
def test_a_bad_field_is_named_with_the_file_and_value(
    tmp_path: Path, text: str, field: str, value: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        SitePolicy.from_yaml(path)
    message = str(err.value)
    assert str(path) in message and f"field {field}" in message and value in message


def test_unknown_fields_and_bad_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="field min_cohrt: Extra inputs"):
        SitePolicy.from_yaml(write(tmp_path, "min_cohrt: 5\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        SitePolicy.from_yaml(write(tmp_path, "- a\n"))
    with pytest.raises(ConfigError, match="cannot read site policy"):
        SitePolicy.from_yaml(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("mode", "minimum", "ok"),
    [
        ("open", "open", True),
        ("open", "secure", False),
        ("secure", "open", True),
        ("private", "secure", True),
        ("encrypted", "secure", True),
        ("secure", "private", False),
        ("encrypted", "private", False),  # no DP on the decrypted sum
        ("private", "encrypted", True),  # both hide each update; private also adds DP
        ("secure", "encrypted", True),  # both let the coordinator learn only the sum
        ("private", "private", True),
        ("encrypted", "encrypted", True),
        ("unknown", "open", False),
    ],
)
def test_privacy_modes_are_ordered_by_their_guarantees(mode: str, minimum: str, ok: bool) -> None:
    assert mode_satisfies(mode, minimum) is ok


def test_min_cell_defaults_to_5_and_must_be_at_least_1(tmp_path: Path) -> None:
    assert SitePolicy().min_cell == 5
    assert SitePolicy.from_yaml(write(tmp_path, "min_cell: 1\n")).min_cell == 1  # exact KM
    with pytest.raises(ConfigError, match=r"field min_cell: .*greater than or equal to 1.*0"):
        SitePolicy.from_yaml(write(tmp_path, "min_cell: 0\n"))
    example = Path(__file__).resolve().parents[2] / "examples" / "site" / "policy.yaml"
    assert SitePolicy.from_yaml(example).min_cell == 5
