"""The study's event stream over real TLS: status first, past rounds, a new round within 2 s
of being recorded, ``end`` when the study finishes (the stream then closes)."""

from __future__ import annotations

import time

from .helpers import Api, example_config
from .rounds import play_round, running_study
from .sse import EventStream

V1 = "/api/v1"


def test_rounds_arrive_within_two_seconds_and_end_closes_the_stream(api: Api) -> None:
    sid = running_study(api.store, owner="study-lead-person")
    play_round(api.store, sid, 1)
    stream = EventStream(api, f"{V1}/studies/{sid[:10]}/events", api.tokens["study-lead"])
    try:
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        name, data, _ = stream.next()
        assert name == "status" and data["id"] == sid and data["rounds_done"] == 1
        name, data, _ = stream.next()  # the past round
        assert name == "round" and data["round"] == 1
        assert data["sites"]["swiss"]["status"] == "refused"
        time.sleep(0.3)
        recorded = time.monotonic()
        play_round(api.store, sid, 2)
        events = [stream.next(), stream.next()]
        (round_event,) = [e for e in events if e and e[0] == "round"]
        assert round_event[1]["round"] == 2
        assert round_event[1]["sites"]["hungary"]["status"] == "aggregated"
        assert round_event[2] - recorded <= 2.0
        api.store.set_study_status(sid, "completed")
        seen = []
        while (event := stream.next()) is not None:
            seen.append(event)
        assert seen[-1][0] == "end" and seen[-1][1]["status"] == "completed"
    finally:
        stream.close()


def test_after_round_skips_past_rounds(api: Api) -> None:
    sid = running_study(api.store, owner="study-lead-person")
    for n in (1, 2):
        play_round(api.store, sid, n)
    api.store.set_study_status(sid, "cancelled", "cancelled by test")
    stream = EventStream(api, f"{V1}/studies/{sid}/events?after_round=1", api.tokens["operator"])
    names = []
    while (event := stream.next()) is not None:
        names.append((event[0], event[1].get("round")))
    assert names == [("status", None), ("round", 2), ("end", None)]


def test_streams_are_limited_per_person_and_hidden_from_other_leads(api: Api) -> None:
    sid = running_study(api.store, owner="study-lead-person")
    token = api.tokens["auditor"]
    streams = [EventStream(api, f"{V1}/studies/{sid}/events", token) for _ in range(10)]
    try:
        assert all(s.status == 200 for s in streams)
        extra = EventStream(api, f"{V1}/studies/{sid}/events", token)
        assert extra.status == 429
        assert b"10 event streams" in extra.response.read()
        # another person has their own allowance
        other = EventStream(api, f"{V1}/studies/{sid}/events", api.tokens["operator"])
        assert other.status == 200
        other.close()
    finally:
        for s in streams:
            s.close()
    theirs = _running_other(api)
    assert EventStream(api, f"{V1}/studies/{theirs}/events", api.tokens["study-lead"]).status == 404
    deadline = time.monotonic() + 5  # closed streams are given back (seen at the next poll)
    while time.monotonic() < deadline:
        again = EventStream(api, f"{V1}/studies/{sid}/events", token)
        again.close()
        if again.status == 200:
            break
        time.sleep(0.2)
    assert again.status == 200


def _running_other(api: Api) -> str:
    sid = api.store.create_study("theirs", example_config(rounds=3), 7, owner="someone-else")
    return sid
