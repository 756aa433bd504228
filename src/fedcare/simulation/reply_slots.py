"""Replies of the parallel grid's workers through shared memory: a few *slots* per worker.

A reply of a 1M-parameter model holds 4 MB of arrays. Pickled through a worker's pipe it is
copied four times (pickle, the 64 KB pipe, in dozens of reads, unpickle into fresh pages) and
costs the coordinator more than summing it. Instead a worker writes a reply's arrays into one of
its slots, a file under a private folder in ``/dev/shm`` (a RAM-backed file system; the system's
temporary folder where there is none) that both processes map, and sends through the pipe only
the reply without its arrays and a :class:`Layout` (slot, file, and each array's name, dtype,
shape and offset). The coordinator rebuilds the reply with arrays that are read-only views of its
own mapping of the slot: no copy on its side.

Design:

* **Files, not** ``multiprocessing.shared_memory``. On Python 3.11 every process that attaches a
  ``SharedMemory`` registers it with the resource tracker, which unlinks it or warns when that
  process ends. Plain files in a folder the coordinator made (:class:`ReplySlots`) need no
  tracker: the coordinator removes the folder when the grid closes, also after a worker died or
  was terminated, and a finalizer removes it at exit if the grid was never closed. A coordinator
  killed outright cannot: it holds a lock on its folder while it runs (``flock``, which the
  kernel drops however the process ends), and the next grid to start removes the unlocked
  folders last changed over a minute ago (:func:`remove_orphans`). The
  coordinator unlinks a slot's file as soon as it has mapped it (the mappings stay valid), so the
  folder only holds files it has not seen yet.
* **Who may write.** Each worker has :data:`SLOTS` flags in shared memory (``multiprocessing``'s
  ``Array``): a worker sets a slot's flag before writing into it; the coordinator clears it when
  the reply's arrays are gone, with :func:`weakref.finalize` on the one base array of each reply
  (every array of the reply is a view of it, so the base lives as long as any of them), or at
  once when it drops the reply unread (a stale reply, a closed call). A worker never writes into
  a slot whose flag is set, so a reply the coordinator keeps never changes under it.
* **Bounded memory, nothing blocks.** A worker uses a free slot, grown (a new, larger file) when
  the reply is bigger. When none is free it waits for one only while the coordinator has not
  read every message the worker sent (a pipe reply would wait as long: it is read after them);
  once it has read them all and still holds every slot (a strategy that keeps every reply,
  replies waiting to be summed in site order) the reply goes through the pipe whole, as it always
  did. The coordinator counts the messages it read in a shared counter per worker. Small replies
  (under :data:`MIN_BYTES` of arrays) and errors go through the pipe too. Bits are copied as they
  are: the coordinator sees the same arrays the worker had.
* **Room and pages.** A slot's space is reserved when its file is made (``posix_fallocate``): a
  full ``/dev/shm`` sends the reply through the pipe instead of killing the worker with a bus
  error. The coordinator maps slots writable (its arrays are read-only all the same), so
  :func:`fedcare.records.pages.release_pages` leaves their pages mapped: a slot read again
  costs no page faults.
* **Task parameters the other way.** A round's large parameters, sent once per worker, go in a
  new file of the same folder (:meth:`ReplySlots.put_params`) rather than pickled through the
  worker's queue; the worker maps it and removes it at once (:func:`take_params`), so its memory
  is freed when the worker drops those parameters, and the folder's removal covers the files of
  tasks a worker never read.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.records.arrays import ArrayRecord
from fedcare.records.messages import Reply

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locks, so no clean-up of orphans
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MIN_BYTES",
    "PREFIX",
    "SLOTS",
    "Layout",
    "ReplySlots",
    "SlotWriter",
    "remove_orphans",
    "take_params",
]

#: Slot folders are named ``PREFIX`` + a random suffix (:func:`tempfile.mkdtemp`).
PREFIX = "fedcare-slots-"
#: Seconds after its last change before an unlocked slot folder counts as an orphan.
ORPHAN_AFTER_S = 60.0
#: Slots per worker: replies the coordinator may hold from one worker before the pipe is used.
SLOTS = 4
#: Replies with fewer bytes of arrays than this go through the pipe (a slot saves nothing).
MIN_BYTES = 1 << 16
#: Offsets of the arrays in a slot are multiples of this (cache lines; any dtype's alignment).
ALIGN = 64
#: Seconds between a waiting worker's looks at its slots' flags: the first wait and the longest
#: (each wait doubles the last; a slot is usually freed within a reply's summing, about 2 ms).
POLL_S = (0.0001, 0.001)

#: One array of a slot: name, dtype (``numpy.dtype.str``), shape, offset in bytes.
Entry = tuple[str, str, tuple[int, ...], int]


@dataclass(frozen=True)
class Layout:
    """Where a reply's arrays are: ``slot`` of its worker, in the file ``name`` of the slots'
    folder, ``nbytes`` bytes from its start, one :data:`Entry` per array in record order."""

    slot: int
    name: str
    nbytes: int
    entries: tuple[Entry, ...]


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _entries(arrays: ArrayRecord) -> tuple[tuple[Entry, ...], int]:
    """Where ``arrays`` go in a slot, one after another (aligned), and the bytes they take."""
    entries: list[Entry] = []
    offset = 0
    for name, arr in arrays.items():
        entries.append((name, arr.dtype.str, tuple(arr.shape), offset))
        offset = _aligned(offset + arr.nbytes)
    return tuple(entries), offset


def _views(base: np.ndarray, entries: tuple[Entry, ...]) -> ArrayRecord:
    """The arrays of ``entries``: views of ``base`` (bytes), so ``base`` lives while they do."""
    arrays: dict[str, np.ndarray] = {}
    for name, dtype, shape, at in entries:
        kind = np.dtype(dtype)
        size = kind.itemsize * int(np.prod(shape, dtype=np.int64))
        arrays[name] = base[at : at + size].view(kind).reshape(shape)
    return ArrayRecord(arrays, copy=False)


def _map(path: Path, *, unlink: bool) -> mmap.mmap:
    """A writable shared mapping of the file ``path`` (writable, so :mod:`fedcare.records.pages`
    never drops its pages: reading it again costs no page faults); ``unlink``: remove the file
    once mapped (the mapping stays valid, nothing is left behind)."""
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, 0)
    finally:
        os.close(fd)
    if unlink:
        path.unlink(missing_ok=True)
    return mm


def _reserved(path: Path, size: int) -> int:
    """A descriptor of the new file ``path`` (``OSError`` if it exists) of ``size`` bytes whose
    space is reserved (``posix_fallocate``): writing into it can never hit a full ``/dev/shm``,
    which would kill the writer with a bus error instead of failing here."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if hasattr(os, "posix_fallocate"):
            os.posix_fallocate(fd, 0, size)
        os.ftruncate(fd, size)  # its size where there is no fallocate (macOS: a sparse file)
    except OSError:
        os.close(fd)
        raise
    return fd


def take_params(folder: Path, layout: Layout) -> ArrayRecord:
    """A worker's side of task parameters sent in a file (:meth:`ReplySlots.put_params`): read
    them as views of the file, which is removed at once (its memory goes with the views)."""
    mm = _map(Path(folder) / layout.name, unlink=True)
    return _views(np.frombuffer(mm, np.uint8, count=layout.nbytes), layout.entries)


def shm_folder() -> Path:
    """A new private folder for slot files: under ``/dev/shm`` when it exists (RAM), else
    under the system's temporary folder. The folders of coordinators that are gone are removed
    first (:func:`remove_orphans`)."""
    shm = "/dev/shm"
    parent = shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()
    remove_orphans(Path(parent))
    return Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))


def _locked(folder: Path) -> int | None:
    """A descriptor of ``folder`` that holds an exclusive lock on it, or ``None`` when another
    open descriptor holds one (or there are no locks). The kernel drops the lock when its
    process ends, however it ends: a killed coordinator's folder is unlocked."""
    if fcntl is None:  # pragma: no cover - not POSIX
        return None
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def remove_orphans(parent: Path, *, older_than_s: float = ORPHAN_AFTER_S) -> list[Path]:
    """Remove the slot folders under ``parent`` whose coordinator is gone (killed before it
    could remove them): those no process holds locked (:class:`ReplySlots` locks its folder
    for its lifetime) that were last changed more than ``older_than_s`` seconds ago (a folder
    just made may not be locked yet). Returns the folders removed."""
    removed: list[Path] = []
    for path in sorted(parent.glob(PREFIX + "*")):
        try:
            if not path.is_dir() or time.time() - path.stat().st_mtime < older_than_s:
                continue
            fd = _locked(path)
        except OSError:  # another user's folder, or removed meanwhile
            continue
        if fd is None:
            continue  # its coordinator runs
        try:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)
        removed.append(path)
    return removed


def _remove_folder(folder: str, lock: int | None) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    if lock is not None:
        os.close(lock)


class SlotWriter:
    """A worker's side: writes replies' arrays into its free slots (see module docstring).

    Parameters
    ----------
    folder:
        The slots' folder (made by the coordinator's :class:`ReplySlots`).
    worker:
        This worker's number (names its files).
    flags:
        This worker's :data:`SLOTS` shared flags: nonzero while the coordinator may read a slot.
    read:
        The shared count of this worker's messages the coordinator read.
    """

    def __init__(self, folder: Path, worker: int, flags: Any, read: Any) -> None:
        self.folder, self.worker, self.flags, self.read = Path(folder), worker, flags, read
        self.maps: list[mmap.mmap | None] = [None] * len(flags)
        self.names: list[str] = [""] * len(flags)
        self.made = 0  # files made so far: each has a new name
        self.sent = 0  # messages sent (each :meth:`pack` is one)

    def pack(self, reply: Reply) -> tuple[Reply, Layout | None]:
        """``reply`` without its arrays and their :class:`Layout` in a slot, or ``reply`` as it
        is and ``None`` when it goes through the pipe (an error, small, or no slot free)."""
        self.sent += 1
        arrays = reply.arrays
        if reply.error is not None or arrays.nbytes < MIN_BYTES:
            return reply, None
        free = self._free()
        if not free:
            return reply, None
        entries, offset = _entries(arrays)
        sizes = {k: len(m) if (m := self.maps[k]) is not None else 0 for k in free}
        fits = [k for k in free if sizes[k] >= offset]
        slot = min(fits, key=lambda k: sizes[k]) if fits else max(free, key=lambda k: sizes[k])
        if sizes[slot] < offset and not self._grow(slot, offset):
            return reply, None
        self.flags[slot] = 1
        target = self.maps[slot]
        assert target is not None
        for (_, _, _, at), arr in zip(entries, arrays.values(), strict=True):
            view = np.ndarray(arr.shape, arr.dtype, buffer=target, offset=at)
            view[...] = arr
            del view  # no export may outlive the write: a growing slot closes its map
        layout = Layout(slot, self.names[slot], offset, entries)
        return replace(reply, arrays=ArrayRecord()), layout

    def _free(self) -> list[int]:
        """The free slots, once one is free or the coordinator read all this worker sent (it
        holds every slot: none is waited for); none when the coordinator is gone."""
        parent = mp.parent_process()
        pause, longest = POLL_S
        while True:
            free = [k for k in range(len(self.flags)) if self.flags[k] == 0]
            if free or self.read.value >= self.sent - 1:
                return free
            if parent is not None:
                parent.join(pause)  # a sleep that ends when the coordinator dies
                if not parent.is_alive():
                    return []
            else:  # a writer outside a worker process (tests)
                time.sleep(pause)
            pause = min(2 * pause, longest)

    def release(self, layout: Layout) -> None:
        """Free ``layout``'s slot (its header could not be sent)."""
        self.flags[layout.slot] = 0

    def _grow(self, slot: int, size: int) -> bool:
        """Replace ``slot``'s file by one of ``size`` bytes; ``False`` when there is no room
        (the space is reserved first: writing to a full ``/dev/shm`` would kill the worker)."""
        old = self.maps[slot]
        if old is not None:
            old.close()
            (self.folder / self.names[slot]).unlink(missing_ok=True)  # unless the parent did
            self.maps[slot], self.names[slot] = None, ""
        self.made += 1
        path = self.folder / f"w{self.worker}-s{slot}-{self.made}"
        try:
            fd = _reserved(path, size)
            try:
                self.maps[slot] = mmap.mmap(fd, size)
            finally:
                os.close(fd)
        except OSError:
            path.unlink(missing_ok=True)
            return False
        self.names[slot] = path.name
        return True


class ReplySlots:
    """The coordinator's side: makes the slots' folder and flags, rebuilds replies from slots
    and removes the folder on :meth:`close` (see module docstring).

    Parameters
    ----------
    ctx:
        The ``multiprocessing`` context of the workers (it makes the shared flags).
    workers:
        How many workers write replies.
    """

    def __init__(self, ctx: Any, workers: int) -> None:
        self.folder = shm_folder()
        lock = _locked(self.folder)  # held while this coordinator runs (see remove_orphans)
        self._remove = weakref.finalize(self, _remove_folder, str(self.folder), lock)
        self.flags = [ctx.Array("b", SLOTS, lock=False) for _ in range(workers)]
        self.read = [ctx.Value("q", 0, lock=False) for _ in range(workers)]
        self._maps: dict[tuple[int, int], tuple[str, mmap.mmap]] = {}
        #: Replies rebuilt from a slot (tests and benchmarks read it).
        self.mapped = 0
        self.made = 0  # files of task parameters made so far: each has a new name

    def writer_args(self, worker: int) -> tuple[Path, int, Any, Any]:
        """The arguments of worker ``worker``'s :class:`SlotWriter`."""
        return self.folder, worker, self.flags[worker], self.read[worker]

    def seen(self, worker: int) -> None:
        """Count one message of ``worker`` read (every reply, header or whole)."""
        self.read[worker].value += 1

    def unpack(self, worker: int, reply: Reply, layout: Layout) -> Reply:
        """``reply`` with its arrays: read-only views of ``layout``'s slot, which is free again
        once none of them is referenced."""
        key = (worker, layout.slot)
        name, mm = self._maps.get(key, ("", None))
        if mm is None or name != layout.name:
            mm = _map(self.folder / layout.name, unlink=True)
            self._maps[key] = (layout.name, mm)
        base = np.frombuffer(mm, np.uint8, count=layout.nbytes)
        weakref.finalize(base, self.flags[worker].__setitem__, layout.slot, 0).atexit = False
        self.mapped += 1
        return replace(reply, arrays=_views(base, layout.entries))

    def put_params(self, worker: int, params: ArrayRecord) -> Layout | None:
        """Write a task's ``params`` for ``worker`` into a new file of the folder (the worker
        removes it once mapped: :func:`take_params`); ``None`` when there is no room."""
        entries, nbytes = _entries(params)
        self.made += 1
        path = self.folder / f"p{worker}-{self.made}"
        try:
            fd = _reserved(path, max(nbytes, 1))
            try:
                for (_, _, _, at), arr in zip(entries, params.values(), strict=True):
                    data = np.ascontiguousarray(arr).reshape(-1).view(np.uint8).data
                    while data:  # a regular file takes it in one write; loop to be sure
                        done = os.pwrite(fd, data, at)
                        data, at = data[done:], at + done
            finally:
                os.close(fd)
        except OSError:
            path.unlink(missing_ok=True)
            return None
        return Layout(-1, path.name, nbytes, entries)

    def drop(self, worker: int, layout: Layout) -> None:
        """Free ``layout``'s slot of a reply the coordinator does not keep."""
        self.flags[worker][layout.slot] = 0

    def close(self) -> None:
        """Remove the slots' folder (arrays still referenced stay readable: they are mapped)."""
        self._maps.clear()
        self._remove()
