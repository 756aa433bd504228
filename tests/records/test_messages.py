import pytest

from fedcare.errors import ValidationError
from fedcare.records import ArrayRecord, Reply, Task


def test_task_validates_kind_round_and_config() -> None:
    with pytest.raises(ValidationError, match="task kind"):
        Task(study_id="s", round=1, site_id="a", kind="train")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="non-negative int"):
        Task(study_id="s", round=-1, site_id="a", kind="fit")
    with pytest.raises(ValidationError, match=r"config\['lr'\]"):
        Task(study_id="s", round=1, site_id="a", kind="fit", config={"lr": [0.1]})  # type: ignore[dict-item]


def test_reply_validation_names_the_site() -> None:
    with pytest.raises(ValidationError, match=r"site .a.*num_samples=-3"):
        Reply(study_id="s", round=1, site_id="a", kind="fit", num_samples=-3)
    with pytest.raises(ValidationError, match="metric 'acc'"):
        Reply(study_id="s", round=1, site_id="a", kind="fit", metrics={"acc": "high"})  # type: ignore[dict-item]


def test_reply_matches_only_its_task() -> None:
    task = Task(study_id="s", round=2, site_id="a", kind="fit", params=ArrayRecord({"w": [1.0]}))
    good = Reply(study_id="s", round=2, site_id="a", kind="fit", num_samples=3)
    assert good.matches(task)
    assert not Reply(study_id="s", round=1, site_id="a", kind="fit").matches(task)
    assert not Reply(study_id="t", round=2, site_id="a", kind="fit").matches(task)
    failure = Reply.failure(task, "refused", "no approval")
    assert not failure.ok and failure.error is not None and failure.error.kind == "refused"
