"""Dataset fingerprints: a SHA-256 that names exactly the rows a site trained and tested on.

A fingerprint is a pure function of the site's train and test arrays (``X``, ``y`` and
``time``: each as dtype, shape and little-endian C-order bytes) and the dataset's name and
options, encoded canonically (length-prefixed fields, options as sorted-key JSON). Equal
fingerprints mean equal data; one changed value changes it. Only the digest leaves a site.

:func:`site_fingerprint` caches the digest per :class:`SiteData` object (and name), so a site
hashes its data once, not once per task.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedcare.data.base import Dataset, SiteData
from fedcare.errors import DataError

__all__ = ["FINGERPRINT_PREFIX", "dataset_fingerprint", "site_fingerprint"]

FINGERPRINT_PREFIX = "sha256:"
_VERSION = b"fedcare-dataset-fingerprint/1"

_cache: weakref.WeakKeyDictionary[SiteData, dict[str, str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _field(h: Any, data: bytes) -> None:
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def _array(h: Any, name: str, value: np.ndarray | None) -> None:
    _field(h, name.encode())
    if value is None:
        _field(h, b"none")
        return
    arr = np.ascontiguousarray(value)
    if arr.dtype == object:
        raise DataError(f"cannot fingerprint array {name!r}: dtype object")
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    _field(h, arr.dtype.str.encode())
    _field(h, json.dumps(list(arr.shape)).encode())
    _field(h, arr.tobytes(order="C"))


def _split(h: Any, label: str, data: Dataset) -> None:
    _array(h, f"{label}/X", data.X)
    _array(h, f"{label}/y", data.y)
    _array(h, f"{label}/time", data.time)


def dataset_fingerprint(
    site: SiteData, *, name: str = "", options: Mapping[str, Any] | None = None
) -> str:
    """``"sha256:<64 hex>"`` over the site's train and test arrays, ``name`` and ``options``.

    Parameters
    ----------
    site:
        The site's data (never modified).
    name:
        The dataset's name (as studies refer to it).
    options:
        The dataset's loader options; must be JSON-serializable.

    Raises
    ------
    DataError
        If an array has dtype object or ``options`` has no JSON form (names it).
    """
    h = hashlib.sha256()
    _field(h, _VERSION)
    _field(h, name.encode())
    try:
        text = json.dumps(dict(options or {}), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise DataError(f"dataset {name!r}: options {options!r} have no JSON form: {err}") from None
    _field(h, text.encode())
    _split(h, "train", site.train)
    _split(h, "test", site.test)
    return FINGERPRINT_PREFIX + h.hexdigest()


def site_fingerprint(site: SiteData, name: str = "") -> str:
    """:func:`dataset_fingerprint` of ``site`` under ``name``, computed once per object."""
    with _lock:
        known = _cache.get(site, {}).get(name)
    if known is not None:
        return known
    digest = dataset_fingerprint(site, name=name)
    with _lock:
        _cache.setdefault(site, {})[name] = digest
    return digest
