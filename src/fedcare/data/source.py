"""Getting a dataset file: verified cache, then canonical download, then offline mirror.

:func:`fetch` looks for a file in three places, in order:

1. the cache, ``$FEDCARE_CACHE/<folder>/<file>`` (default ``~/.cache/fedcare/<folder>/``);
2. each canonical URL of the file (skipped when ``FEDCARE_OFFLINE=1``);
3. the offline mirror, ``$FEDCARE_DATA_MIRROR/<folder>/<file>`` (laid out like
   ``shared/datasets``).

Every copy is checked against the SHA-256 (and the MD5, where one is known) recorded in
``checksums/files.json``, copied from the mirror READMEs. A copy that does not match is never
used: a corrupt cache file is deleted and replaced, a download or mirror copy that does not match
is discarded. When no place yields a verified file, :class:`~fedcare.errors.ChecksumError` is
raised if some copy had the wrong digest, else :class:`~fedcare.errors.DatasetUnavailableError`;
both messages name the file and every place tried with the reason it failed.

A failed connection to a host is remembered for the rest of the process, so that later files
on the same host do not wait for the network again (on a machine without internet a failed
attempt costs about 20 ms when name resolution fails fast, up to ``timeout`` seconds when it
hangs).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import BinaryIO

from fedcare.errors import ChecksumError, DataError, DatasetUnavailableError

__all__ = [
    "CACHE_ENV",
    "MIRROR_ENV",
    "OFFLINE_ENV",
    "FileSpec",
    "cache_root",
    "fetch",
    "fetch_files",
    "file_spec",
    "forget_failed_hosts",
]

log = logging.getLogger(__name__)

CACHE_ENV = "FEDCARE_CACHE"
MIRROR_ENV = "FEDCARE_DATA_MIRROR"
OFFLINE_ENV = "FEDCARE_OFFLINE"

Opener = Callable[[str, float], BinaryIO]
_CHUNK = 1 << 16


@dataclass(frozen=True)
class FileSpec:
    """One file of a dataset and how to verify it.

    Attributes
    ----------
    name:
        File name inside the dataset folder (in the cache and in the mirror).
    urls:
        Canonical download addresses, tried in order.
    sha256:
        Expected SHA-256, lowercase hex.
    md5:
        Expected MD5 where the publisher gives one (checked as well), else ``None``.
    """

    name: str
    urls: tuple[str, ...]
    sha256: str
    md5: str | None = None


@dataclass(frozen=True)
class _Mismatch:
    place: str
    algorithm: str
    expected: str
    actual: str


class _FailedHosts:
    """Hosts whose connection failed in this process (thread-safe)."""

    def __init__(self) -> None:
        self._hosts: dict[str, str] = {}
        self._lock = threading.Lock()

    def reason(self, host: str) -> str | None:
        with self._lock:
            return self._hosts.get(host)

    def remember(self, host: str, reason: str) -> None:
        with self._lock:
            self._hosts.setdefault(host, reason)

    def clear(self) -> None:
        with self._lock:
            self._hosts.clear()


_FAILED_HOSTS = _FailedHosts()


def forget_failed_hosts() -> None:
    """Forget the hosts remembered as unreachable, so the next fetch tries them again."""
    _FAILED_HOSTS.clear()


@lru_cache(maxsize=1)
def _checksum_table() -> dict[str, dict[str, object]]:
    text = resources.files("fedcare.data").joinpath("checksums/files.json").read_text("utf-8")
    table: dict[str, dict[str, object]] = json.loads(text)
    return table


def file_spec(folder: str, name: str) -> FileSpec:
    """The recorded :class:`FileSpec` of ``name`` in dataset folder ``folder``.

    Raises
    ------
    DataError
        If no checksum is recorded for that folder or file.
    """
    table = _checksum_table()
    if folder not in table:
        raise DataError(
            f"no checksums recorded for dataset folder {folder!r}; known: {sorted(table)}"
        )
    files = table[folder]["files"]
    assert isinstance(files, dict)
    if name not in files:
        raise DataError(f"no checksum recorded for {folder}/{name}; known files: {sorted(files)}")
    entry = files[name]
    return FileSpec(
        name=name,
        urls=tuple(entry.get("urls", ())),
        sha256=str(entry["sha256"]).lower(),
        md5=None if entry.get("md5") is None else str(entry["md5"]).lower(),
    )


def cache_root() -> Path:
    """The cache root: ``$FEDCARE_CACHE`` or ``~/.cache/fedcare``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedcare"


def _copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    while chunk := src.read(_CHUNK):
        sha.update(chunk)
        md5.update(chunk)
        dst.write(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _mismatch(spec: FileSpec, place: str, sha: str, md5: str) -> _Mismatch | None:
    if sha != spec.sha256:
        return _Mismatch(place, "SHA-256", spec.sha256, sha)
    if spec.md5 is not None and md5 != spec.md5:
        return _Mismatch(place, "MD5", spec.md5, md5)
    return None


def _store(spec: FileSpec, src: BinaryIO, target: Path, place: str) -> _Mismatch | None:
    """Copy ``src`` to a temporary file beside ``target``; move it there only if it verifies."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            sha, md5 = _copy_hashing(src, out)
        bad = _mismatch(spec, place, sha, md5)
        if bad is None:
            os.replace(tmp, target)
        return bad
    finally:
        tmp.unlink(missing_ok=True)


def _default_opener(url: str, timeout: float) -> BinaryIO:
    response: BinaryIO = urllib.request.urlopen(url, timeout=timeout)
    return response


def _is_connection_failure(exc: BaseException) -> bool:
    """True for failures to reach the host; False when the server answered (HTTP error)."""
    return not isinstance(exc, urllib.error.HTTPError)


def _try_download(
    spec: FileSpec, url: str, target: Path, opener: Opener, timeout: float
) -> tuple[bool, str, _Mismatch | None]:
    """One download attempt: (stored?, reason when not, checksum mismatch if any)."""
    host = urllib.parse.urlsplit(url).netloc
    earlier = _FAILED_HOSTS.reason(host)
    if earlier is not None:
        return False, f"skipped: {host} was unreachable earlier in this process ({earlier})", None
    try:
        with opener(url, timeout) as response:
            bad = _store(spec, response, target, place=url)
    except (OSError, ValueError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
        if _is_connection_failure(exc):
            _FAILED_HOSTS.remember(host, reason)
        return False, f"download failed ({reason})", None
    if bad is not None:
        log.warning("download of %s from %s discarded: %s", spec.name, url, _describe(bad))
        return False, _describe(bad), bad
    return True, "", None


def _describe(bad: _Mismatch) -> str:
    return f"{bad.algorithm} mismatch: expected {bad.expected}, got {bad.actual}"


def _check_cache(spec: FileSpec, target: Path) -> tuple[bool, str, _Mismatch | None]:
    if not target.is_file():
        return False, "not cached yet", None
    bad = _mismatch(spec, f"cache {target}", *_digests(target))
    if bad is None:
        return True, "", None
    log.warning("cached %s is corrupt (%s); deleting it", target, _describe(bad))
    target.unlink(missing_ok=True)
    return False, f"corrupt, deleted ({_describe(bad)})", bad


def _try_mirror(
    spec: FileSpec, folder: str, target: Path, mirror: str | os.PathLike[str] | None
) -> tuple[str, str, _Mismatch | None]:
    """Copy the mirror's file into the cache: (place, reason when not, mismatch if any)."""
    if not mirror:
        return f"mirror (${MIRROR_ENV})", f"{MIRROR_ENV} is not set", None
    source = Path(mirror).expanduser() / folder / spec.name
    place = f"mirror {source}"
    if not source.is_file():
        return place, "no such file", None
    try:
        with source.open("rb") as f:
            bad = _store(spec, f, target, place=place)
    except OSError as exc:
        return place, f"could not copy into the cache ({type(exc).__name__}: {exc})", None
    return place, ("" if bad is None else _describe(bad)), bad


def fetch(
    folder: str,
    spec: FileSpec,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    mirror: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    timeout: float = 10.0,
    opener: Opener | None = None,
) -> Path:
    """Return a verified local copy of one dataset file.

    Parameters
    ----------
    folder:
        Dataset folder name (``heart_disease``, ``tcga_brca``, ``eicu_demo``, ``pneumoniamnist``):
        the subfolder in the cache and in the mirror.
    spec:
        The file, its canonical URLs and its checksums.
    cache_dir:
        Cache folder for this dataset; default ``$FEDCARE_CACHE/<folder>`` or
        ``~/.cache/fedcare/<folder>``.
    mirror:
        Mirror root with ``<folder>/`` subfolders; default ``$FEDCARE_DATA_MIRROR``.
    offline:
        Skip downloads; default true when ``FEDCARE_OFFLINE=1``.
    timeout:
        Socket timeout in seconds for each download attempt.
    opener:
        ``opener(url, timeout)`` returning a readable binary response (a context manager);
        default :func:`urllib.request.urlopen`. Tests inject a fake one.

    Returns
    -------
    pathlib.Path
        The verified file in the cache.

    Raises
    ------
    ChecksumError
        If no verified copy was found and some copy had the wrong digest.
    DatasetUnavailableError
        If no place had the file.
    """
    target = Path(cache_dir) if cache_dir is not None else cache_root() / folder
    target = target.expanduser() / spec.name
    if offline is None:
        offline = os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}
    if mirror is None:
        mirror = os.environ.get(MIRROR_ENV) or None
    ok, reason, bad = _check_cache(spec, target)
    if ok:
        return target
    tried = [(f"cache {target}", reason)]
    mismatches = [bad] if bad else []
    if offline:
        tried.extend((url, f"skipped ({OFFLINE_ENV}=1)") for url in spec.urls)
    else:
        for url in spec.urls:
            ok, reason, bad = _try_download(spec, url, target, opener or _default_opener, timeout)
            if ok:
                return target
            tried.append((url, reason))
            mismatches += [bad] if bad else []
    place, reason, bad = _try_mirror(spec, folder, target, mirror)
    if not reason:
        return target
    tried.append((place, reason))
    mismatches += [bad] if bad else []
    raise _failure(folder, spec, tried, mismatches)


def _failure(
    folder: str, spec: FileSpec, tried: list[tuple[str, str]], mismatches: list[_Mismatch]
) -> DataError:
    places = "\n".join(f"  - {place}: {reason}" for place, reason in tried)
    hint = (
        f"Set {MIRROR_ENV} to a folder laid out like shared/datasets (the file is looked up "
        f"at ${MIRROR_ENV}/{folder}/{spec.name}), or allow downloads."
    )
    if mismatches:
        first = mismatches[0]
        return ChecksumError(
            f"{folder}/{spec.name}: {first.algorithm} mismatch for the copy from {first.place}: "
            f"expected {first.expected}, got {first.actual}; no verified copy found. "
            f"Places tried:\n{places}\n{hint}"
        )
    return DatasetUnavailableError(
        f"{folder}/{spec.name} is not available. Places tried:\n{places}\n{hint}"
    )


def fetch_files(folder: str, names: Iterable[str]) -> dict[str, Path]:
    """Fetch several recorded files of one dataset folder, configured by the environment.

    Parameters
    ----------
    folder:
        Dataset folder name.
    names:
        File names recorded for that folder in ``checksums/files.json``.

    Returns
    -------
    dict
        File name to verified local path.
    """
    return {name: fetch(folder, file_spec(folder, name)) for name in names}
