"""A site's memory budget for a large torch model: its parameters in a memory-mapped scratch file.

A fit task's module normally keeps its parameters in anonymous memory (``to_empty`` storage,
filled by :func:`fedcare.models.torch_params.load_params`), and training adds the gradients:
about two model copies that the kernel can only move to swap. When the site data file sets
``memory_budget_mb`` (:class:`fedcare.site.config.SiteDataConfig`) and the task's params take
more than a quarter of it (:data:`BUDGET_SHARE`: params, gradients and Adam's two moments
would then fill the budget), :meth:`ParamOffload.place` moves the module's floating-point
parameters and saved buffers into one writable **shared** mapping of a scratch file before the
params are copied in. Those pages are file-backed: under memory pressure the kernel writes
them back to the file and drops them, so they are not anonymous memory. Gradients and the
optimizer's state stay where torch puts them.

The scratch file is created owner-only (``0600``, ``O_EXCL``) in the folder the caller gives
(a site's worker: its hand-over folder ``STATE/transfers/worker``, which the sandbox may write
and which is cleared whenever a worker starts), its disk space reserved up front
(``posix_fallocate``: a full disk is an error now, not a ``SIGBUS`` in training), then
mapped tensor by tensor (each replacing its uninitialised storage at once, so the address
space holds one copy of the model plus a tensor) and unlinked: nothing is left on disk once the
last array over the mapping is gone (the reply written from the exported update), and a worker
killed before the unlink leaves a file the next worker's start clears. The folder must be on a
disk, not ``tmpfs``, for the pages to leave memory.

Training, :func:`~fedcare.models.torch_params.export` and the site's in-place update
(:func:`fedcare.site.update.consume_update`) work over the mapped storage as over any other:
the same values, bit for bit. Each tensor is its own mapping of the file (at a page boundary:
aligned as torch's allocator aligns, and a storage of its own, so ``export`` sees no aliasing).
Modules whose saved tensors share storage, and modules not on the CPU, keep the old path.
Importing this module does not import torch.
"""

from __future__ import annotations

import mmap
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.errors import ModelError

__all__ = ["BUDGET_SHARE", "SCRATCH_PREFIX", "ParamOffload", "scratch_map"]

#: Params taking more than ``budget / BUDGET_SHARE`` bytes are placed in the scratch file.
BUDGET_SHARE = 4
#: The name prefix of a scratch file (unlinked as soon as it is mapped).
SCRATCH_PREFIX = "params-"


def scratch_map(folder: Path, sizes: list[int]) -> Iterator[mmap.mmap]:
    """Writable shared mappings of ``sizes`` bytes, one after the other (each at a page
    boundary) of a new owner-only file in ``folder`` whose disk space is reserved first; each
    is mapped when the caller takes it, and the file is unlinked once all are.

    Raises
    ------
    ModelError
        When the file cannot be created or its space reserved (naming folder and size).
    """
    folder = Path(folder)
    path = folder / f"{SCRATCH_PREFIX}{uuid.uuid4().hex}.bin"
    starts, end = [], 0
    for size in sizes:
        starts.append(end)
        end += -(-size // mmap.ALLOCATIONGRANULARITY) * mmap.ALLOCATIONGRANULARITY
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as err:
        raise ModelError(f"cannot create the parameter scratch file in {folder}: {err}") from None
    try:
        try:
            os.posix_fallocate(fd, 0, max(end, 1))
        except OSError as err:
            raise ModelError(
                f"cannot reserve {end / 1e6:,.1f} MB for the parameter scratch file in "
                f"{folder}: {err}"
            ) from None
        access = {"flags": mmap.MAP_SHARED, "prot": mmap.PROT_READ | mmap.PROT_WRITE}
        for size, at in zip(sizes, starts, strict=True):
            yield mmap.mmap(fd, size, offset=at, **access)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)


def _saved_tensors(module: Any) -> tuple[list[Any], dict[int, list[tuple[Any, str, bool]]]] | None:
    """The floating-point CPU parameters and saved buffers of ``module``, each tensor once,
    and where each is registered (``id -> [(owner, name, is_param)]``); ``None`` when two
    share storage or one is not contiguous (left as they are)."""
    unique: dict[int, Any] = {}
    where: dict[int, list[tuple[Any, str, bool]]] = {}
    storages: dict[int, int] = {}
    for owner in module.modules():
        skip: set[str] = getattr(owner, "_non_persistent_buffers_set", set())
        items = [(n, t, True) for n, t in owner._parameters.items()]
        items += [(n, t, False) for n, t in owner._buffers.items() if n not in skip]
        for name, tensor, is_param in items:
            if tensor is None or not tensor.is_floating_point() or tensor.device.type != "cpu":
                continue
            if tensor.numel() == 0:
                continue
            ptr = tensor.untyped_storage().data_ptr()
            if storages.setdefault(ptr, id(tensor)) != id(tensor) or not tensor.is_contiguous():
                return None  # views of one another (or of one storage): not split apart
            unique.setdefault(id(tensor), tensor)
            where.setdefault(id(tensor), []).append((owner, name, is_param))
    return list(unique.values()), where


@dataclass(frozen=True)
class ParamOffload:
    """A site's memory budget and the folder its scratch files go to (one per fit task).

    Attributes
    ----------
    budget_bytes:
        The site's ``memory_budget_mb`` in bytes.
    folder:
        Where scratch files are created (owner-only, writable by the worker).
    """

    budget_bytes: int
    folder: Path

    @classmethod
    def from_budget(cls, budget_mb: float | None, folder: Path) -> ParamOffload | None:
        """The offload of a budget in MB (10^6 bytes), or ``None`` without one."""
        if budget_mb is None:
            return None
        if not budget_mb > 0:
            raise ModelError(f"memory_budget_mb must be > 0, got {budget_mb!r}")
        return cls(int(budget_mb * 1e6), Path(folder))

    def applies(self, nbytes: int) -> bool:
        """Whether params of ``nbytes`` go to the scratch file: more than the budget's share."""
        return nbytes * BUDGET_SHARE > self.budget_bytes

    def place(self, torch: Any, module: Any, nbytes: int) -> bool:
        """Move ``module``'s floating-point parameters and saved buffers into one scratch
        mapping when params of ``nbytes`` exceed the budget's share. Their values are NOT
        kept: the caller loads the params next. Returns whether they were moved."""
        found = _saved_tensors(module) if self.applies(nbytes) else None
        if not found or not found[0]:
            return False
        unique, where = found
        sizes = [t.numel() * t.element_size() for t in unique]
        for tensor, mapped in zip(unique, scratch_map(self.folder, sizes), strict=True):
            raw = torch.from_numpy(np.frombuffer(mapped, dtype=np.uint8))  # a storage of its own
            view = raw.view(tensor.dtype).view(tensor.shape)
            for owner, name, is_param in where[id(tensor)]:  # the old storage goes at once
                if is_param:
                    tensor.data = view  # the same Parameter (tied layers share it)
                else:
                    owner._buffers[name] = view
        return True
