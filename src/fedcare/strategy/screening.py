"""Checks on what one site claims, applied by the round loop before anything is aggregated.

A reply that fails a check is dropped for its site only and named, with the reason, in the
round's ``failed_sites``; the round goes on while ``min_sites`` usable replies remain. The
checks need only the grid's declared rows (:meth:`fedcare.grid.Grid.declared_rows`):

* a fit reply's weight (``num_samples``) must not exceed the site's declared training rows
  (a site cannot outweigh the rows it said it holds; 2^31 - 1 once moved the model by 15);
* an evaluate reply's metrics must summarize (:func:`site_metrics_problem`: ``n`` present,
  whole, ``>= 0``, at most the declared test rows; values numbers), and the clinical validation
  summary it may carry (``info["validation"]``, the final model's) must pass
  :func:`fedcare.evaluation.validation.validation_problem`;
* under masking (secure, private) or encryption the coordinator sees only the sum, so the
  weight check applies to the total: the securely summed weight must not exceed the declared
  rows of the sites whose inputs it holds. A violation cannot be traced to one site there
  (that is what masking is for), so the round fails with the reason instead. What is not
  checkable under masking: one site's weight, dtype or values on their own (a site can put
  anything in its masked vector; the decoded mean still passes ``ValidateUpdates`` inside the
  secure sum: finite, the template's shapes and dtype). Mode ``private`` sends weight 1 per
  site (its noise layer sets it), so its summed weight is the number of sites.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from fedcare.errors import RoundFailedError
from fedcare.evaluation.summary import site_metrics_problem
from fedcare.evaluation.validation import validation_problem
from fedcare.records.messages import Reply

__all__ = [
    "check_summed_weight",
    "weight_problem",
    "with_valid_metrics",
    "with_valid_validation",
    "within_declared",
]


def weight_problem(reply: Reply, declared: Mapping[str, int]) -> str | None:
    """Why ``reply``'s weight is not acceptable, or ``None``."""
    n = reply.num_samples  # an int >= 0 (a Reply checks that when it is made)
    limit = declared.get(reply.site_id)
    if limit is not None and n > limit:
        return (
            f"site {reply.site_id!r} sent num_samples {n}, more than the {limit} training rows "
            "it declared"
        )
    return None


def within_declared(
    replies: Iterable[Reply], declared: Mapping[str, int], failures: dict[str, str]
) -> Iterator[Reply]:
    """Pass on the fit replies whose weight is within their site's declared rows."""
    for reply in replies:
        reason = weight_problem(reply, declared)
        if reason is None:
            yield reply
        else:
            failures[reply.site_id] = f"rejected: {reason}"
        del reply  # not held while the next one is awaited


def with_valid_metrics(
    replies: Iterable[Reply], declared: Mapping[str, int], failures: dict[str, str]
) -> Iterator[Reply]:
    """Pass on the evaluate replies whose metrics summarize (see the module docstring)."""
    for reply in replies:
        reason = site_metrics_problem(
            reply.site_id, reply.metrics, max_rows=declared.get(reply.site_id)
        )
        if reason is None:
            yield reply
        else:
            failures[reply.site_id] = f"rejected: {reason}"


def with_valid_validation(
    replies: Iterable[Reply],
    declared: Mapping[str, int],
    failures: dict[str, str],
    into: dict[str, dict[str, Any]],
) -> Iterator[Reply]:
    """Pass on the evaluate replies whose validation summary (if any) is acceptable, keeping
    each parsed summary in ``into[site]``; a reply with a bad one is rejected for its site."""
    for reply in replies:
        text = reply.info.get("validation")
        if text is None:
            yield reply
            continue
        summary, reason = validation_problem(
            reply.site_id, text, max_rows=declared.get(reply.site_id)
        )
        if summary is None:
            failures[reply.site_id] = f"rejected: {reason}"
            continue
        into[reply.site_id] = summary
        yield reply


#: Slack on a securely summed weight: fixed-point decoding is exact to far below one row.
SUMMED_WEIGHT_SLACK = 0.5


def check_summed_weight(
    round: int, measurements: Mapping[str, Any], declared: Mapping[str, int]
) -> None:
    """Raise ``RoundFailedError`` when a secure or encrypted sum's weight exceeds the rows
    its contributing sites declared (only checkable when each of them declared rows)."""
    sites = [str(s) for s in measurements.get("contributing_sites", [])]
    total = measurements.get("total_weight")
    if total is None or not sites or any(s not in declared for s in sites):
        return
    limit = sum(declared[s] for s in sites)
    if not float(total) <= limit + SUMMED_WEIGHT_SLACK:
        raise RoundFailedError(
            f"round {round}: the summed weight {float(total):.6g} of sites {sites} exceeds the "
            f"{limit} training rows they declared; under masking the site that overstated its "
            "weight cannot be named, so the round's sum is discarded",
            round=round,
            replied=len(sites),
            required=len(sites),
        )
