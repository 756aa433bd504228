"""Module <-> params for the torch adapter, without needless work or copies of a large model.

**Building to load.** A module built only to receive given params does not need torch's random
initialisation (over a second for a 100M-parameter model): :func:`build_module` constructs it
on the ``meta`` device (shapes, no storage, no draws) and gives it uninitialised CPU storage
(``to_empty``) that :func:`load_params` then fills, copying each array once (``copy_`` from a
``torch.from_numpy`` view, also of a read-only memory-mapped array). Skipping the draws leaves
torch's generator where it was before construction instead of after it, so results change
when something reads that generator afterwards. Hence the init-free path is taken only when
nothing can: every layer is a built-in ``torch.nn`` layer other than dropout and ``RReLU``, all
its buffers are in its state dict (``to_empty`` leaves the others uninitialised), and the
caller says no custom hook or DP-SGD noise comes next. Otherwise the module is built as
before, with its random initialisation, and the generator state is exactly the old one.
Initial params (``init_params``) always draw their initialisation.

**Export.** :func:`export` returns the module's float32 tensors as numpy arrays that share the
tensors' CPU memory (no copy; a tensor of another dtype, on another device or sharing storage
with another key is copied). Each is a read-only view of a private writeable array, so the
owner of a fit's result may compute into it (:attr:`fedcare.models.base.FitResult.owned`);
the module must not be used to train after that.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from fedcare.errors import ModelError
from fedcare.records.arrays import ArrayRecord
from fedcare.records.pages import release_all

if TYPE_CHECKING:
    from fedcare.models.torch_offload import ParamOffload

__all__ = ["RANDOM_LAYERS", "build_module", "export", "load_params", "meta_shapes"]

#: Built-in layers that draw from torch's generator in their forward pass.
RANDOM_LAYERS = frozenset(
    {"Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout", "FeatureAlphaDropout"}
    | {"RReLU"}
)


def _checked(torch: Any, module: object, name: str) -> Any:
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{name}: factory returned {type(module).__name__}, not nn.Module")
    return module


def _on_meta(torch: Any, factory: Callable[[tuple[int, ...]], Any], shape: tuple[int, ...]) -> Any:
    """The factory's module on the meta device, or ``None`` when it cannot be built there."""
    try:
        with torch.device("meta"):
            module = factory(shape)
    except Exception:  # a factory that needs real tensors (or fails anyway): built normally
        return None
    return module if isinstance(module, torch.nn.Module) else None


def init_free_safe(torch: Any, module: Any) -> bool:
    """True when leaving ``module`` uninitialised and torch's generator undrawn changes nothing
    once its state dict is loaded: only deterministic built-in layers, all buffers saved."""
    for layer in module.modules():
        kind = type(layer)
        if not kind.__module__.startswith("torch.nn.modules.") or kind.__name__ in RANDOM_LAYERS:
            return False
    saved = module.state_dict(keep_vars=True)
    return all(name in saved for name, _ in module.named_buffers(remove_duplicate=False))


def build_module(
    torch: Any,
    factory: Callable[[tuple[int, ...]], Any],
    input_shape: tuple[int, ...],
    *,
    name: str,
    skip_init: bool,
) -> Any:
    """A module of ``factory`` for ``input_shape`` whose params are about to be loaded.

    Parameters
    ----------
    skip_init:
        Whether the caller reads torch's generator after loading only through the module's
        layers (no custom hooks, no DP-SGD noise); the random initialisation is then skipped
        when :func:`init_free_safe` holds.

    Returns
    -------
    torch.nn.Module
        On the CPU; uninitialised (to be loaded) or randomly initialised as before.
    """
    shape = tuple(int(v) for v in input_shape)
    if skip_init:
        before = torch.get_rng_state()
        module = _on_meta(torch, factory, shape)
        if module is not None and init_free_safe(torch, module):
            return module.to_empty(device="cpu")
        torch.set_rng_state(before)  # as if the meta attempt never ran
    return _checked(torch, factory(shape), name)


def meta_shapes(
    torch: Any, factory: Callable[[tuple[int, ...]], Any], input_shape: tuple[int, ...]
) -> dict[str, tuple[int, ...]] | None:
    """The state dict's shapes of the factory's module, built on the meta device (no
    storage); ``None`` when it cannot be built there."""
    module = _on_meta(torch, factory, tuple(int(v) for v in input_shape))
    if module is None:
        return None
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _torch_view(torch: Any, value: np.ndarray) -> Any:
    """A tensor over ``value``'s memory (a copy only for a non-native byte order or negative
    strides, which torch cannot view)."""
    arr = np.asarray(value)
    if not arr.dtype.isnative or any(s < 0 for s in arr.strides):
        arr = np.array(arr, dtype=arr.dtype.newbyteorder("="), order="C")
    with warnings.catch_warnings():  # read-only (e.g. memory-mapped) params: only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


def load_params(
    torch: Any, module: Any, params: ArrayRecord, offload: ParamOffload | None = None
) -> None:
    """Copy ``params`` into ``module`` (``load_state_dict``: each array copied once, converted
    to the state dict's dtype), into a scratch file's mapping when ``offload`` says the site's
    memory budget is too small for them (:mod:`fedcare.models.torch_offload`). Names and
    shapes are the caller's to check."""
    if offload is not None:
        offload.place(torch, module, params.nbytes)
    state = module.state_dict()
    module.load_state_dict({k: _torch_view(torch, params[k]) for k in state})
    for k in state:  # copied: a memory-mapped task's pages leave the process
        release_all(np.asarray(params[k]))


def export(module: Any, order: list[str]) -> ArrayRecord:
    """The module's state dict as float32 arrays in ``order``, sharing the tensors' memory.

    Each array is a read-only view of a writeable array nothing else holds (see the module
    docstring); tensors sharing storage with an earlier key are copied so no two arrays alias.
    """
    state = module.state_dict()
    seen: set[int] = set()
    out: dict[str, np.ndarray] = {}
    for k in order:
        tensor = state[k].detach()
        storage = tensor.untyped_storage().data_ptr() if tensor.device.type == "cpu" else None
        arr = tensor.cpu().numpy()
        if storage in seen or arr.dtype != np.float32:
            arr = arr.astype(np.float32)  # a copy
        if storage is not None:
            seen.add(storage)
        out[k] = arr.view()  # the record marks the view read-only, ``arr`` stays writeable
    return ArrayRecord(out, copy=False)
