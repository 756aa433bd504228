"""Verify an audit log: every line, the chain, the signatures and the signed head checkpoint.

:func:`verify_bytes` is the pure check (bytes in, verdict out); :func:`verify_log` reads the
files. Entries are numbered by line, from 1; in a valid log the number equals ``seq``. The
first problem found is the one reported, so ``first_bad`` is the first entry that cannot be
trusted: an edit, deletion, insertion or swap at entry *k* is reported at *k* (a line's own
hash, form and signature cover its content; ``seq`` and ``prev`` tie it to its place), and a
deletion of the newest entries at the first missing number.

Keys: after a rotation, give every key the participant has had. The key of the first entry
is in force; a different key may sign only the entry right after a ``key-rotated`` entry
(signed with the key in force) that names it (``new_key``); any other change of key is refused.

Decisions: time going backwards is a *warning* (clock steps happen; the time is signed anyway);
a head exactly one entry behind the log is a warning (a crash between writing the line and the
checkpoint, repaired by the next append); without a public key the chain is checked but not
the signatures, which the result says (``signatures_checked=False``) and warns about.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec

from fedcare.audit._format import (
    GENESIS,
    HANDOVER_EVENT,
    CertPaths,
    PublicKeys,
    head_message,
    load_public_keys,
    parse_time,
    public_key_text,
    signature_problem,
)
from fedcare.audit.entry import check_line
from fedcare.audit.head import Checkpoint, head_path, parse_head
from fedcare.errors import ConfigError

__all__ = ["LogVerifier", "VerifyResult", "verify_bytes", "verify_log"]


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on one log.

    ``count`` is the number of entries that verified (all of them when ``ok``);
    ``first_bad`` the 1-based number (line) of the first entry that did not, or None when
    the log is fine or only the head checkpoint is at fault; ``reason`` says why, naming it.
    ``checkpoint`` is the verified newest entry (``seq:hash``) when ``ok``, for a witness.
    """

    ok: bool
    count: int
    first_bad: int | None
    reason: str
    warnings: tuple[str, ...] = ()
    signatures_checked: bool = True
    checkpoint: Checkpoint | None = None


class _Bad(Exception):
    def __init__(self, number: int | None, reason: str) -> None:
        super().__init__(reason)
        self.number = number
        self.reason = reason


class _Line(NamedTuple):
    """What verification needs from a line that passed every check it holds by itself."""

    seq: int
    prev: str
    hash: str
    time: str
    when: dt.datetime
    signer: int  # index of the key that signed it, -1 when signatures are not checked
    hands_to: str | None = None  # a key-rotated entry: the key it hands the log over to


def _signer(keys: Sequence[ec.EllipticCurvePublicKey], message: bytes, sig: Any) -> int:
    """Index of the (newest) key that signed ``message``; _Bad's reason if none did."""
    problem = "no key"
    for index in reversed(range(len(keys))):
        found = signature_problem(keys[index], message, sig)
        if found is None:
            return index
        problem = found
    raise ValueError(problem)


def _check_line(
    line: bytes, number: int, prev: str, keys: Sequence[ec.EllipticCurvePublicKey]
) -> _Line:
    """Check a new line: form, then its place (``seq``, ``prev``), then hash and signature."""
    record, problem = check_line(line)
    if record is None:
        raise _Bad(number, f"entry {number}: {problem}")
    when = parse_time(record["time"])
    data = record["data"]
    hands_to = None
    if record["event"] == HANDOVER_EVENT and isinstance(data, dict):
        hands_to = str(data.get("new_key"))
    checked = _Line(
        record["seq"], record["prev"], record["hash"], record["time"], when, -1, hands_to
    )
    _check_place(checked, number, prev)
    if problem:
        raise _Bad(number, f"entry {number}: {problem}")
    if not keys:
        return checked
    try:
        return checked._replace(signer=_signer(keys, record["hash"].encode("ascii"), record["sig"]))
    except ValueError as err:
        raise _Bad(number, f"entry {number}: {err}") from None


def _check_place(line: _Line, number: int, prev: str) -> None:
    if line.seq != number:
        raise _Bad(
            number,
            f"entry {number}: seq is {line.seq}, expected {number} "
            "(an entry was deleted, inserted or moved)",
        )
    if line.prev != prev:
        raise _Bad(number, f"entry {number}: prev does not match the hash of entry {number - 1}")


def _check_head(
    head: bytes | None,
    hashes: list[str],
    keys: Sequence[ec.EllipticCurvePublicKey],
    allowed: set[int],
    require_head: bool,
) -> list[str]:
    """Compare the log with its head checkpoint; return warnings or raise _Bad."""
    count = len(hashes)
    if head is None:
        if require_head:
            raise _Bad(
                None, "head checkpoint is missing: deleting the newest entries cannot be ruled out"
            )
        return ["no head checkpoint: deleting the newest entries cannot be ruled out"]
    try:
        hseq, hhash, hsig = parse_head(head)
    except ValueError as err:
        raise _Bad(None, str(err)) from None
    if keys:
        try:
            signer = _signer(keys, head_message(hseq, hhash), hsig)
        except ValueError:
            raise _Bad(
                None, "head checkpoint: signature does not verify with the signer's public key"
            ) from None
        if allowed and signer not in allowed:
            raise _Bad(None, "head checkpoint: signed with another key than the last entry's")
    if hseq > count:
        raise _Bad(
            count + 1,
            f"entry {count + 1}: missing; the signed head checkpoint names entry {hseq} "
            f"but the log ends at entry {count} (newest entries deleted)",
        )
    if hhash != ([GENESIS, *hashes])[hseq]:
        raise _Bad(hseq, f"entry {hseq}: differs from the signed head checkpoint")
    if hseq == count - 1:
        return [
            f"entry {count} is newer than the signed head checkpoint (a crash before the "
            "checkpoint was written; the next append repairs it)"
        ]
    if hseq < count:
        raise _Bad(
            hseq + 1,
            f"entry {hseq + 1}: entries {hseq + 1} to {count} are not covered by the signed "
            f"head checkpoint (entry {hseq}): an old head was put back",
        )
    return []


def _checkpoints(witnessed: Iterable[Checkpoint | str]) -> list[Checkpoint]:
    try:
        return [p if isinstance(p, Checkpoint) else Checkpoint.parse(p) for p in witnessed]
    except ValueError as err:
        raise ConfigError(f"witnessed: {err}") from None


def _check_witnessed(points: list[Checkpoint], hashes: list[str]) -> None:
    """Fail on the lowest witnessed checkpoint the log no longer holds."""
    for seq, hash_ in sorted(points):
        if seq > len(hashes):
            raise _Bad(
                len(hashes) + 1,
                f"entry {len(hashes) + 1}: missing; a witnessed checkpoint names entry {seq} but "
                f"the log ends at entry {len(hashes)} (rolled back to an older copy?)",
            )
        if ([GENESIS, *hashes])[seq] != hash_:
            raise _Bad(seq, f"entry {seq}: differs from a witnessed checkpoint (history rewritten)")


class LogVerifier:
    """Verifies logs signed by one key, remembering the lines it has already checked.

    Re-verifying a log that grew (a dashboard refreshing, a watcher polling) or a copy that
    differs in a few lines then costs one dictionary lookup per known line: a line's own
    checks (form, hash, signature) depend only on its bytes and the key, so a byte-identical
    line needs them once; its place in the chain (``seq``, ``prev``) is checked every time.
    Only lines that passed are remembered, at most ``remember`` of them (then it starts over).
    """

    def __init__(
        self,
        public_key: PublicKeys | None = None,
        *,
        require_head: bool = True,
        remember: int = 1_000_000,
    ) -> None:
        self._keys = load_public_keys(None, public_key)
        self._texts = [public_key_text(k) for k in self._keys]
        self._require_head = require_head
        self._remember = remember
        self._known: dict[bytes, _Line] = {}

    def _line(self, line: bytes, number: int, prev: str) -> _Line:
        known = self._known.get(line)
        if known is not None:
            _check_place(known, number, prev)
            return known
        checked = _check_line(line, number, prev, self._keys)
        if len(self._known) >= self._remember:
            self._known.clear()
        self._known[line] = checked
        return checked

    def _handed_to(self, key_text: str | None) -> int | None:
        """Index of the key a handover names (-2: a key not given; None: no handover)."""
        if key_text is None or not self._keys:
            return None
        return next((i for i, k in enumerate(self._texts) if k == key_text), -2)

    def _check_key(self, line: _Line, number: int, epoch: int, handover: int | None) -> None:
        """The entry is signed with the key in force, or the one a handover just named."""
        n = len(self._keys)
        if epoch < 0 or (handover is None and line.signer == epoch) or line.signer == handover:
            return
        if handover == -2:
            raise _Bad(
                number,
                f"entry {number}: entry {number - 1} hands the log over to a key whose "
                "certificate was not given (pass every certificate, oldest first)",
            )
        if handover is not None:
            raise _Bad(
                number,
                f"entry {number}: signed with key {line.signer + 1} of {n} but entry "
                f"{number - 1} handed the log over to key {handover + 1} (a retired key)",
            )
        raise _Bad(
            number,
            f"entry {number}: signed with key {line.signer + 1} of {n} while key {epoch + 1} "
            "was in force, without a key-rotated entry handing over to it (a retired or "
            "foreign key)",
        )

    def verify(
        self, log: bytes, head: bytes | None, witnessed: Iterable[Checkpoint | str] = ()
    ) -> VerifyResult:
        """Verify a log's bytes and its head checkpoint's bytes (None: no head file).

        Checks, entry by entry: UTF-8, JSON, exactly the entry fields with valid types,
        canonical form (re-serialising gives the same bytes), ``seq`` = line number, ``prev``
        = hash of the previous entry, ``hash`` = hash of the content, the signature (when
        there is a key); then that the last line ends in a newline, the head checkpoint, and
        that the log holds every ``witnessed`` checkpoint (``Checkpoint`` or ``"seq:hash"``).

        Raises
        ------
        ConfigError
            If a witnessed checkpoint is not ``seq:hash``.
        """
        points = _checkpoints(witnessed)
        lines = log.split(b"\n")
        torn = lines.pop()  # b"" when the file ends with a newline, as it should
        warnings: list[str] = []
        if not self._keys:
            warnings.append("signatures not checked: no certificate or public key given")
        hashes: list[str] = []
        prev, last, epoch, handover = GENESIS, None, -1, None
        try:
            for number, raw in enumerate(lines, start=1):
                line = self._line(raw, number, prev)
                self._check_key(line, number, epoch, handover)
                prev, epoch = line.hash, line.signer
                handover = self._handed_to(line.hands_to)
                hashes.append(prev)
                if last is not None and line.when < last.when:
                    warnings.append(
                        f"entry {number}: time {line.time} is before entry {number - 1}'s"
                    )
                last = line
            if torn:
                number = len(lines) + 1
                raise _Bad(number, f"entry {number}: the last line is torn (no newline at the end)")
            allowed = {epoch} | ({handover} if handover is not None else set())
            warnings.extend(_check_head(head, hashes, self._keys, allowed, self._require_head))
            _check_witnessed(points, hashes)
        except _Bad as bad:
            return VerifyResult(
                False, len(hashes), bad.number, bad.reason, tuple(warnings), bool(self._keys)
            )
        ok = f"ok: {len(hashes)} entries"
        tip = Checkpoint(len(hashes), hashes[-1] if hashes else GENESIS)
        return VerifyResult(True, len(hashes), None, ok, tuple(warnings), bool(self._keys), tip)


def verify_bytes(
    log: bytes,
    head: bytes | None,
    *,
    public_key: PublicKeys | None = None,
    require_head: bool = True,
    witnessed: Iterable[Checkpoint | str] = (),
) -> VerifyResult:
    """Verify a log's bytes and its head's bytes once; see :meth:`LogVerifier.verify`. O(n)."""
    return LogVerifier(public_key, require_head=require_head).verify(log, head, witnessed)


def verify_log(
    path: Path,
    *,
    cert_path: CertPaths | None = None,
    public_key: PublicKeys | None = None,
    require_head: bool = True,
    witnessed: Iterable[Checkpoint | str] = (),
) -> VerifyResult:
    """Verify the audit log at ``path`` (and ``<path>.head``) against the signer's key.

    Parameters
    ----------
    path:
        The log file.
    cert_path, public_key:
        The signer's certificate (a kit's ``cert.pem``) or public key; with neither, the
        signatures are not checked (``signatures_checked=False``). After key rotations, give
        every certificate (or key) the participant has had, oldest first: each entry must be
        signed by one of them, and never by an older key than the entry before it.
    require_head:
        Fail when ``<path>.head`` is missing (default); else only warn.
    witnessed:
        Checkpoints of this log that someone else kept (:meth:`AuditLog.checkpoint`); the log
        must still hold each, which catches a rollback of both files to an older copy.

    Raises
    ------
    ConfigError
        If neither the log nor its head exists, a file or certificate cannot be read.
    """
    keys = load_public_keys(cert_path, public_key)
    path = Path(path)
    head_file = head_path(path)
    try:
        head = head_file.read_bytes() if head_file.exists() else None
        if not path.exists():
            if head is None:
                raise ConfigError(f"audit log {path} does not exist")
            return VerifyResult(
                False, 0, 1, f"audit log {path} is missing but its head checkpoint exists"
            )
        log = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"audit log {path} cannot be read ({err})") from None
    return verify_bytes(log, head, public_key=keys, require_head=require_head, witnessed=witnessed)


def entry_records(log: bytes) -> list[tuple[int, Mapping[str, Any] | None, bytes]]:
    """``(number, record or None, raw line)`` for each line, for export; no verification."""
    out: list[tuple[int, Mapping[str, Any] | None, bytes]] = []
    for number, line in enumerate(log.split(b"\n"), start=1):
        if line:
            out.append((number, check_line(line)[0], line))
    return out
