"""A tamper-evident, append-only audit log, signed with a participant's kit key.

Each site and the coordinator keep one. An entry is one line of canonical JSON::

    {"actor","data","event","hash","prev","seq","sig","time"}

``seq`` counts from 1; ``prev`` is the previous entry's ``hash`` (64 zeros before the first);
``hash`` is SHA-256 of the entry without ``hash``/``sig``; ``sig`` is the ECDSA P-256 signature
of ``hash`` with the participant's kit key (``key.pem``), verified against its ``cert.pem``.
Beside the log, ``<log>.head`` holds the signed ``(seq, hash)`` of the newest entry, rewritten
atomically (temporary file, fsync, rename, fsync of the folder) after every append.

**Writing.** The file is opened with ``O_APPEND``. :meth:`AuditLog.append` takes a thread lock
and an exclusive ``flock`` on the file, reads and checks the tail (last line and head), writes
the new line, fsyncs, rewrites the head, and only then releases the lock; so threads and
processes appending to one log produce one valid chain (``flock`` needs a local filesystem,
not NFS). It refuses (:class:`AuditError`) to
extend a log whose last line is torn or corrupt, whose last entry is signed by another key, or
whose head checkpoint disagrees with the tail (entries deleted), instead of chaining onto it.
A crash between writing the line and renaming the head leaves the head one entry behind; the
verifier warns, and the next append repairs it.

**What the log proves (threat model).** Against someone who can read and write the files but
does not hold the participant's private key:

- editing any byte of any entry (content, hash, signature, whitespace), inserting, duplicating,
  reordering or deleting entries in the middle is detected and the first bad entry is named:
  each entry's hash covers its content and ``prev``, and only the key holder can sign a hash.
  Signatures are canonical (base64, DER, low-S), so not even an alternate spelling passes;
- deleting the newest entries is detected through the signed head checkpoint, and the head
  is signed over a different message than entries, so no entry signature can serve as a head;
  deleting the head as well fails verification too (a missing head is an error);
- they CAN stop the log: a corrupted tail makes :meth:`AuditLog.append` refuse, so the
  participant fails closed (no unaudited work) until an operator moves the log aside;
- NOT detected locally: replacing the log *and* its head by an older copy of both
  (rollback), or deleting both files. Only an outside witness helps: a site anchors its
  :meth:`AuditLog.checkpoint` at the coordinator, which countersigns and keeps it, and keeps the
  coordinator's signed heads in turn (:mod:`fedcare.audit.anchors`, the agent's ``Anchor``
  call); ``verify_log(..., witnessed=[...])`` fails when the log no longer holds a witnessed
  entry, and the coordinator refuses a head behind the last one it countersigned.

Against the key holder (the site's or coordinator's operator, or whoever steals ``key.pem``):
nothing locally. They can rewrite history, re-sign every entry and a fresh head; only
checkpoints already witnessed by others expose that. The log makes tampering by *others*
evident and binds the key holder to what others have already seen.

**Key rotation.** After a kit's key is rotated, the log's last entry is signed with an
earlier key. :meth:`AuditLog.open` given that earlier private key (``previous_keys``; a rotated
kit keeps it under ``previous/``, see :mod:`fedcare.transport.kit_history`) writes a
``key-rotated`` entry signed with the earlier key that names the new public key (the
*handover*), and the log goes on under the new key. Without the earlier key it refuses to
extend the log. The verifier accepts a change of signing key only right after such an entry:
an entry signed by any other key than the one in force is refused (a retired or foreign key).

Times are the writer's UTC clock at append (under the lock); the verifier only warns when time
goes backwards (a clock step is not tampering: the signature covers the time anyway).
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.audit._files import fsync_dir, last_line, write_all
from fedcare.audit._format import (
    GENESIS,
    HANDOVER_EVENT,
    HEAD_VERSION,
    canonical,
    check_event,
    entry_hash,
    head_message,
    load_cert_key,
    load_private_key,
    plain_data,
    public_key_text,
    sign,
    signature_problem,
    utc_now,
)
from fedcare.audit.entry import AuditEntry, check_line
from fedcare.audit.head import Checkpoint, head_path, read_head
from fedcare.errors import AuditError, ConfigError

__all__ = ["AuditLog"]


class AuditLog:
    """An open audit log that appends signed, hash-chained entries. Use :meth:`open`."""

    def __init__(
        self,
        path: Path,
        fd: int,
        key: ec.EllipticCurvePrivateKey,
        actor: str,
        trusted: Sequence[ec.EllipticCurvePublicKey] = (),
    ) -> None:
        self._path = path
        self._head_path = head_path(path)
        self._fd: int | None = fd
        self._key = key
        self._public = key.public_key()
        # Keys whose signature the tail may carry: earlier keys of this participant, and its own.
        self._tail_keys = [self._public, *trusted]
        self._actor = actor
        self._lock = threading.Lock()
        self._tail_record: dict[str, Any] | None = None
        self._tail_signer_key: ec.EllipticCurvePublicKey | None = None

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        key_path: Path,
        actor: str,
        trusted_certs: Sequence[Path] = (),
        previous_keys: Sequence[Path] = (),
    ) -> AuditLog:
        """Open (creating if needed) the log at ``path``, signing with the key at ``key_path``.

        Parameters
        ----------
        path:
            The log file; its folder is created if missing. ``<path>.head`` sits beside it.
        key_path:
            The participant's ECDSA P-256 private key in PEM (a kit's ``key.pem``).
        actor:
            Who writes: the site id, or ``coordinator``; stored in every entry.
        trusted_certs:
            After the kit's key was rotated: the certificates of the participant's earlier
            keys, whose signatures the log may end with. Verify such a log with all of them,
            oldest first, then the current ``cert.pem``.
        previous_keys:
            The private keys of earlier keys (their public halves are trusted too): when the
            log's last entry is signed with one of them, a ``key-rotated`` handover entry is
            written with it before the log goes on under ``key_path``'s key.

        Raises
        ------
        ConfigError
            If the key or a certificate cannot be read, the file cannot be opened, or
            ``actor`` is empty.
        AuditError
            If the existing log cannot be extended (torn or corrupt tail, head mismatch,
            entries signed with another key).
        """
        if not isinstance(actor, str) or not actor.strip():
            raise ConfigError(f"audit actor must be a non-empty string, got {actor!r}")
        key = load_private_key(Path(key_path))
        earlier = [load_private_key(Path(p)) for p in previous_keys]
        trusted = [load_cert_key(p) for p in trusted_certs] + [k.public_key() for k in earlier]
        path = Path(path)
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            created = not path.exists()
            fd = os.open(path, flags, 0o600)
            if created:
                fsync_dir(path.parent)
        except OSError as err:
            raise ConfigError(f"audit log {path} cannot be opened for appending ({err})") from None
        log = cls(path, fd, key, actor, trusted)
        try:
            with log._locked():
                seq, hash_, current = log._tail()
                if not current:  # a new log, or a crash before the last checkpoint
                    log._write_head(seq, hash_, key)
                log._hand_over(earlier)
        except BaseException:
            log.close()
            raise
        return log

    @property
    def path(self) -> Path:
        return self._path

    @property
    def actor(self) -> str:
        return self._actor

    def close(self) -> None:
        """Close the file; later appends raise AuditError."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def append(self, event: str, /, **data: Any) -> AuditEntry:
        """Append one signed entry and return it; safe across threads and processes.

        ``data`` must be JSON-serializable (numpy scalars, paths and sets are converted); it
        is copied, never changed. The line and the head checkpoint are on disk (fsynced) when
        this returns.

        Raises
        ------
        ValidationError
            If ``event`` is not a valid event name or ``data`` is not JSON-serializable.
        AuditError
            If the log cannot be extended safely (see :meth:`open`; nothing is written), or
            the write failed (the message says whether the entry is on disk).
        """
        check_event(event)
        body_data = plain_data(event, data)
        with self._locked():
            return self._append_locked(event, body_data, self._key)

    def _append_locked(
        self, event: str, body_data: dict[str, Any], key: ec.EllipticCurvePrivateKey
    ) -> AuditEntry:
        seq, prev, _ = self._tail()
        body: dict[str, Any] = {
            "seq": seq + 1,
            "time": utc_now(),
            "event": event,
            "actor": self._actor,
            "data": body_data,
            "prev": prev,
        }
        hash_ = entry_hash(body)
        record = {**body, "hash": hash_, "sig": sign(key, hash_.encode("ascii"))}
        assert self._fd is not None
        try:
            write_all(self._fd, canonical(record) + b"\n")
            os.fsync(self._fd)
        except OSError as err:
            raise AuditError(
                f"audit log {self._path}: writing entry {seq + 1} ({event!r}) failed ({err}); "
                "the entry may be torn and the log refuses further appends until moved aside"
            ) from err
        try:
            self._write_head(seq + 1, hash_, key)
        except OSError as err:
            raise AuditError(
                f"audit log {self._path}: entry {seq + 1} ({event!r}) is written but its "
                f"head checkpoint is not ({err}); the next append or open repairs it"
            ) from err
        return AuditEntry.from_record(record)

    def head(self) -> str:
        """The hash of the newest entry (64 zeros for an empty log), read from the file."""
        with self._locked():
            return self._tail()[1]

    def checkpoint(self) -> Checkpoint:
        """``(seq, hash)`` of the newest entry, for a witness to keep (see :class:`Checkpoint`)."""
        with self._locked():
            seq, hash_, _ = self._tail()
        return Checkpoint(seq, hash_)

    # Internals ------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            if self._fd is None:
                raise AuditError(f"audit log {self._path} is closed")
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _refuse(self, why: str) -> AuditError:
        return AuditError(
            f"audit log {self._path}: {why}; refusing to append. "
            f"Run `fedcare audit verify {self._path}` and move the log aside to start a new one"
        )

    def _tail(self) -> tuple[int, str, bool]:
        """``(seq, hash, head is current)`` of the last entry, checked with the head; locked."""
        assert self._fd is not None
        line = last_line(self._fd)
        if not line:
            seq, hash_, prev = 0, GENESIS, GENESIS
            self._tail_record = self._tail_signer_key = None
        else:
            if not line.endswith(b"\n"):
                raise self._refuse("the last line is torn (no newline: a crash mid-write?)")
            record, problem = check_line(line[:-1])
            if record is None or problem:
                raise self._refuse(f"the last entry is corrupt ({problem})")
            signer = self._signer_of(record["hash"].encode("ascii"), record["sig"])
            if signer is None:
                raise self._refuse(
                    f"the last entry (seq {record['seq']}) is not signed with the key in use "
                    "(a forged entry, or the kit's key was rotated: then pass the old "
                    "certificate in trusted_certs)"
                )
            seq, hash_, prev = record["seq"], record["hash"], record["prev"]
            self._tail_record, self._tail_signer_key = record, signer
        return seq, hash_, self._check_head(seq, hash_, prev)

    def _signed(self, message: bytes, sig: str) -> bool:
        return self._signer_of(message, sig) is not None

    def _signer_of(self, message: bytes, sig: str) -> ec.EllipticCurvePublicKey | None:
        for k in self._tail_keys:
            if signature_problem(k, message, sig) is None:
                return k
        return None

    def _hand_over(self, earlier: Sequence[ec.EllipticCurvePrivateKey]) -> None:
        """If the last entry is signed by an earlier key, hand the log over to ours (locked)."""
        record = self._tail_record
        if record is None or self._tail_signer_key is None:
            return
        mine = public_key_text(self._public)
        if public_key_text(self._tail_signer_key) == mine:
            return
        if record["event"] == HANDOVER_EVENT and record["data"].get("new_key") == mine:
            return  # handed over already; the next entry is ours
        old = next(
            (
                k
                for k in earlier
                if public_key_text(k.public_key()) == public_key_text(self._tail_signer_key)
            ),
            None,
        )
        if old is None:
            raise self._refuse(
                f"its last entry (seq {record['seq']}) is signed with an earlier key of this "
                "participant and no key-rotated entry hands the log over to the current key; "
                "start once with the earlier private key (a rotated kit keeps it in previous/)"
            )
        self._append_locked(
            HANDOVER_EVENT,
            plain_data(
                HANDOVER_EVENT,
                {
                    "new_key": mine,
                    "old_key": public_key_text(old.public_key()),
                    "reason": "the kit's key was rotated",
                },
            ),
            old,
        )

    def _check_head(self, seq: int, hash_: str, prev: str) -> bool:
        """True if the head names the last entry, False if it is one behind or absent (new)."""
        try:
            head = read_head(self._head_path)
        except ValueError as err:
            raise self._refuse(str(err)) from None
        if head is None:
            if seq == 0:
                return False
            raise self._refuse(f"its head checkpoint {self._head_path} is missing")
        hseq, hhash, hsig = head
        if not self._signed(head_message(hseq, hhash), hsig):
            raise self._refuse(f"its head checkpoint {self._head_path} is not signed by this key")
        # A crash between writing a line and renaming the head leaves the head one behind.
        if (hseq, hhash) not in ((seq, hash_), (seq - 1, prev)):
            raise self._refuse(
                f"the log ends at entry {seq} but its signed head checkpoint names entry {hseq} "
                "with another hash (entries deleted or replaced?)"
            )
        return (hseq, hhash) == (seq, hash_)

    def _write_head(self, seq: int, hash_: str, key: ec.EllipticCurvePrivateKey) -> None:
        doc = {
            "version": HEAD_VERSION,
            "seq": seq,
            "hash": hash_,
            "sig": sign(key, head_message(seq, hash_)),
        }
        tmp = self._head_path.with_name(f".{self._head_path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, canonical(doc) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._head_path)
        fsync_dir(self._head_path.parent)
