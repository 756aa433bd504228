"""The coordinator's judgement of a site's audit head against the last one it countersigned."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fedcare.coordinator.anchoring import judge
from fedcare.coordinator.store_anchors import AnchorInfo

H = {k: format(k, "x") * 64 for k in range(1, 6)}
AT = datetime(2026, 12, 1, tzinfo=timezone.utc)


def last(seq: int, hash_: str) -> AnchorInfo:
    return AnchorInfo("s", seq, hash_, "sig", "counter", "anchored", None, AT)


def test_judge_accepts_the_first_the_same_and_a_continuing_head() -> None:
    assert judge(None, 3, H[1], 0, "") == ("", "")
    assert judge(last(3, H[1]), 3, H[1], 0, "") == ("", "")
    assert judge(last(3, H[1]), 7, H[2], 3, H[1]) == ("", "")


@pytest.mark.parametrize(
    ("seq", "hash_", "proof_seq", "proof_hash", "kind", "needle"),
    [
        (2, H[2], 0, "", "audit-rollback", "ends at entry 2, but the coordinator countersigned"),
        (3, H[2], 0, "", "audit-rollback", "rewritten"),
        (9, H[2], 0, "", "anchor-proof-needed", "entry 3"),
        (9, H[2], 3, H[3], "audit-rollback", "rolled back and written again"),
        (9, H[2], 3, "", "audit-rollback", "missing"),
    ],
)
def test_judge_refuses_a_head_that_contradicts_the_last_anchor(
    seq: int, hash_: str, proof_seq: int, proof_hash: str, kind: str, needle: str
) -> None:
    got_kind, message = judge(last(3, H[1]), seq, hash_, proof_seq, proof_hash)
    assert got_kind == kind and needle in message, message
