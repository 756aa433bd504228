"""A round's task payloads in the artifact store, the parameters they share written once.

The tasks a round sends differ only in their header (each site's ``site_id`` and seed): their
arrays are the same objects. :func:`store_task_payloads` frames each task
(:func:`~fedcare.transport.framed.frame_task`) and groups those whose arrays region is provably
the same bytes: the same memory, array by array, in the same order (the views a frame writes
are of the task's own arrays, not converted copies). Each group of two or more is stored with
:meth:`~fedcare.coordinator.artifacts.ArtifactStore.put_shared`: the region written once, each
task a composite of its header and that region, under the SHA-256 of exactly the bytes a site
receives; any other task is stored whole, as before. All is written non-durably: a redone
round writes the same bytes again from its checkpoint.

A redone round (``redo``: the round had earlier attempts) hashes its tasks first, from memory,
and writes nothing when every payload is already stored in full.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np

from fedcare.coordinator.artifacts import ArtifactStore
from fedcare.records.messages import Task
from fedcare.transport.framed import Framed, frame_task

__all__ = ["region_key", "store_task_payloads"]

#: ``(address, length)`` of each array's bytes: two frames with the same key have the same body.
RegionKey = tuple[tuple[int, int], ...]


def region_key(framed: Framed) -> RegionKey | None:
    """Where ``framed``'s arrays region lives in memory, array by array; ``None`` when it
    cannot be shared safely (an array converted to a copy for the wire, or no arrays)."""
    if not framed.arrays or len(framed.sources) != len(framed.arrays):
        return None
    key: list[tuple[int, int]] = []
    for view, source in zip(framed.arrays, framed.sources, strict=True):
        if not len(view):
            key.append((0, 0))
            continue
        address = int(np.frombuffer(view, dtype=np.uint8).ctypes.data)
        if address != source.__array_interface__["data"][0] or len(view) != source.nbytes:
            return None  # a copy made for this frame: not the same memory as another's
        key.append((address, len(view)))
    return tuple(key)


def _body(framed: Framed) -> Iterator[memoryview]:
    """Everything after the header: the arrays and their padding."""
    return itertools.islice(framed.parts(), 1, None)


def store_task_payloads(
    artifacts: ArtifactStore, tasks: Sequence[Task], *, redo: bool = False
) -> list[str]:
    """Store each task's framed payload; their digests, in order.

    Parameters
    ----------
    artifacts:
        Where the payloads go.
    tasks:
        One call's tasks.
    redo:
        The round was attempted before: nothing is written if every payload is stored.

    Raises
    ------
    StoreError
        If a payload cannot be written.
    """
    stored_before = _all_stored(artifacts, tasks) if redo else None
    if stored_before is not None:
        return stored_before
    digests = [""] * len(tasks)
    frames: dict[int, Framed] = {}
    groups: dict[RegionKey, list[int]] = {}
    for i, task in enumerate(tasks):
        framed = frame_task(task)
        key = region_key(framed)
        if key is None:  # stored now: a copy made for its frame is not kept for the others
            digests[i] = artifacts.put_stream(framed.parts(), durable=False)
            continue
        frames[i] = framed
        groups.setdefault(key, []).append(i)
    for members in groups.values():
        if len(members) == 1:
            digests[members[0]] = artifacts.put_stream(frames[members[0]].parts(), durable=False)
            continue
        headers = [frames[i].header for i in members]
        stored = artifacts.put_shared(headers, _body(frames[members[0]]), durable=False)
        for i, digest in zip(members, stored, strict=True):
            digests[i] = digest
    return digests


def _all_stored(artifacts: ArtifactStore, tasks: Sequence[Task]) -> list[str] | None:
    """The tasks' digests if every payload is stored in full (hashed from memory, nothing
    written); else ``None``."""
    digests = []
    for task in tasks:
        framed = frame_task(task)
        digest = framed.sha256()
        if not artifacts.holds(digest, framed.size):
            return None
        digests.append(digest)
    return digests
