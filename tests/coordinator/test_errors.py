"""The store's errors sit in the one hierarchy, and its docstring draws them."""

from __future__ import annotations

import fedcare.errors as errors


def test_store_errors_are_drawn_in_the_hierarchy() -> None:
    tree = errors.__doc__ or ""
    assert "\n    FedcareError\n" in tree
    for name in set(errors.__all__) - {"FedcareError"}:
        assert f"── {name}" in tree, name
    assert issubclass(errors.StoreError, errors.FedcareError)
    assert issubclass(errors.NotFoundError, errors.StoreError)
    assert issubclass(errors.ReplyRefusedError, errors.ConflictError)
    assert issubclass(errors.ConflictError, errors.StoreError)
    assert issubclass(errors.ArtifactCorruptError, errors.StoreError)
    refused = errors.ReplyRefusedError("no", reason="expired", task_id="t", site_id="A")
    assert (refused.reason, refused.task_id, refused.site_id) == ("expired", "t", "A")
