"""Cache, download and mirror: verification, fallback order and error messages."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import pytest

from fedcare.data import source
from fedcare.data.source import FileSpec, fetch, file_spec
from fedcare.errors import ChecksumError, DataError, DatasetUnavailableError

FOLDER = "toy"
CONTENT = b"age,label\n63,1\n41,0\n"
SHA = hashlib.sha256(CONTENT).hexdigest()
MD5 = hashlib.md5(CONTENT, usedforsecurity=False).hexdigest()
URLS = ("https://data.example.org/a/toy.csv", "https://data.example.org/b/toy.csv")
SPEC = FileSpec(name="toy.csv", urls=URLS, sha256=SHA, md5=MD5)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (source.MIRROR_ENV, source.OFFLINE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(source.CACHE_ENV, str(tmp_path / "cache"))


@pytest.fixture
def mirror_dir(tmp_path: Path) -> Path:
    root = tmp_path / "mirror"
    (root / FOLDER).mkdir(parents=True)
    (root / FOLDER / SPEC.name).write_bytes(CONTENT)
    return root


def cached(tmp_path: Path) -> Path:
    return tmp_path / "cache" / FOLDER / SPEC.name


class Recorder:
    """A fake opener: records the URLs asked for, then fails or serves bytes."""

    def __init__(self, outcome: Callable[[str], BinaryIO]) -> None:
        self.urls: list[str] = []
        self.outcome = outcome

    def __call__(self, url: str, timeout: float) -> BinaryIO:
        self.urls.append(url)
        return self.outcome(url)


def unreachable(url: str) -> BinaryIO:
    raise urllib.error.URLError("[Errno -2] Name or service not known")


def serving(payload: bytes) -> Callable[[str], BinaryIO]:
    return lambda url: io.BytesIO(payload)


def never(url: str) -> BinaryIO:
    raise AssertionError(f"the network must not be used, but {url} was opened")


def leftovers(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "cache" / FOLDER
    return sorted(folder.iterdir()) if folder.exists() else []


def test_mirror_fallback_fills_the_cache_and_tries_each_host_once(
    tmp_path: Path, mirror_dir: Path
) -> None:
    opener = Recorder(unreachable)
    path = fetch(FOLDER, SPEC, mirror=mirror_dir, opener=opener)
    assert path == cached(tmp_path)
    assert path.read_bytes() == CONTENT
    # Both URLs are on one host: after the first connection failure the second is skipped.
    assert opener.urls == [URLS[0]]
    # Next time the verified cache answers, without network or mirror.
    assert fetch(FOLDER, SPEC, mirror=None, opener=Recorder(never)) == path


def test_download_is_verified_and_cached(tmp_path: Path) -> None:
    opener = Recorder(serving(CONTENT))
    path = fetch(FOLDER, SPEC, opener=opener)
    assert path.read_bytes() == CONTENT
    assert opener.urls == [URLS[0]]
    assert leftovers(tmp_path) == [path]


def test_corrupt_download_is_discarded_for_the_mirror(tmp_path: Path, mirror_dir: Path) -> None:
    path = fetch(FOLDER, SPEC, mirror=mirror_dir, opener=Recorder(serving(b"tampered")))
    assert path.read_bytes() == CONTENT
    assert leftovers(tmp_path) == [path]


def test_http_error_does_not_mark_the_host_unreachable(tmp_path: Path) -> None:
    def not_found_then_ok(url: str) -> BinaryIO:
        if url == URLS[0]:
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)  # type: ignore[arg-type]
        return io.BytesIO(CONTENT)

    opener = Recorder(not_found_then_ok)
    assert fetch(FOLDER, SPEC, opener=opener).read_bytes() == CONTENT
    assert opener.urls == list(URLS)


def test_mirror_checksum_mismatch_raises_and_caches_nothing(
    tmp_path: Path, mirror_dir: Path
) -> None:
    bad = b"age,label\n63,0\n41,0\n"
    (mirror_dir / FOLDER / SPEC.name).write_bytes(bad)
    with pytest.raises(ChecksumError) as info:
        fetch(FOLDER, SPEC, mirror=mirror_dir, offline=True)
    message = str(info.value)
    assert SPEC.name in message
    assert SHA in message
    assert hashlib.sha256(bad).hexdigest() in message
    assert str(mirror_dir / FOLDER / SPEC.name) in message
    assert leftovers(tmp_path) == []


def test_md5_is_checked_too(tmp_path: Path, mirror_dir: Path) -> None:
    spec = FileSpec(name=SPEC.name, urls=(), sha256=SHA, md5="0" * 32)
    with pytest.raises(ChecksumError, match="MD5"):
        fetch(FOLDER, spec, mirror=mirror_dir)
    assert leftovers(tmp_path) == []


def test_corrupt_cache_is_replaced(tmp_path: Path, mirror_dir: Path) -> None:
    cached(tmp_path).parent.mkdir(parents=True)
    cached(tmp_path).write_bytes(b"truncated")
    path = fetch(FOLDER, SPEC, mirror=mirror_dir, offline=True)
    assert path.read_bytes() == CONTENT


def test_corrupt_cache_with_no_other_source_raises_and_is_deleted(tmp_path: Path) -> None:
    cached(tmp_path).parent.mkdir(parents=True)
    cached(tmp_path).write_bytes(b"truncated")
    with pytest.raises(ChecksumError, match="cache"):
        fetch(FOLDER, SPEC, offline=True)
    assert not cached(tmp_path).exists()


def test_missing_everywhere_names_the_file_and_every_place(tmp_path: Path) -> None:
    empty_mirror = tmp_path / "empty"
    empty_mirror.mkdir()
    with pytest.raises(DatasetUnavailableError) as info:
        fetch(FOLDER, SPEC, mirror=empty_mirror, opener=Recorder(unreachable))
    message = str(info.value)
    assert f"{FOLDER}/{SPEC.name}" in message
    assert str(cached(tmp_path)) in message
    for url in URLS:
        assert url in message
    assert "Name or service not known" in message
    assert str(empty_mirror / FOLDER / SPEC.name) in message
    assert "FEDCARE_DATA_MIRROR" in message


def test_unset_mirror_is_named_as_the_reason(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="FEDCARE_DATA_MIRROR is not set"):
        fetch(FOLDER, SPEC, opener=Recorder(unreachable))


def test_offline_environment_skips_downloads(
    tmp_path: Path, mirror_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(source.OFFLINE_ENV, "1")
    monkeypatch.setenv(source.MIRROR_ENV, str(mirror_dir))
    assert fetch(FOLDER, SPEC, opener=Recorder(never)).read_bytes() == CONTENT


def test_offline_failure_says_downloads_were_skipped(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="FEDCARE_OFFLINE=1"):
        fetch(FOLDER, SPEC, offline=True)


def test_explicit_cache_dir(tmp_path: Path, mirror_dir: Path) -> None:
    path = fetch(FOLDER, SPEC, cache_dir=tmp_path / "elsewhere", mirror=mirror_dir, offline=True)
    assert path == tmp_path / "elsewhere" / SPEC.name


def test_cache_root_defaults_to_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(source.CACHE_ENV)
    assert source.cache_root() == Path.home() / ".cache" / "fedcare"


def test_unknown_spec_is_a_data_error() -> None:
    with pytest.raises(DataError, match="nope"):
        file_spec("nope", "x")
    with pytest.raises(DataError, match=r"x\.csv"):
        file_spec("heart_disease", "x.csv")


def _recorded() -> list[tuple[str, str]]:
    path = Path(source.__file__).parent / "checksums" / "files.json"
    table = json.loads(path.read_text())
    return [(folder, name) for folder in table for name in table[folder]["files"]]


@pytest.mark.parametrize(("folder", "name"), _recorded())
def test_recorded_checksums_match_the_mirror(folder: str, name: str, mirror: Path) -> None:
    spec = file_spec(folder, name)
    data = (mirror / folder / name).read_bytes()
    assert hashlib.sha256(data).hexdigest() == spec.sha256
    if spec.md5 is not None:
        assert hashlib.md5(data, usedforsecurity=False).hexdigest() == spec.md5
