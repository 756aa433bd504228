"""Build a model adapter from a study's ``model:`` mapping.

=========  ==========================================================================
kind       options (all optional unless marked)
=========  ==========================================================================
logistic   ``init_scale`` (float >= 0, default 0: zero init)
cox        ``init_scale`` (float >= 0, default 0)
sklearn    ``init_scale`` (float >= 0, default 0)
torch      ``architecture`` (required: ``cnn_small`` or ``mlp``), ``task`` (``binary``
           default, or ``survival``), ``predict_batch_size`` (int, default 1024);
           ``cnn_small``: ``channels`` (list of ints, default [16, 32]), ``hidden`` (int,
           default 64); ``mlp``: ``hidden`` (list of ints, default [32]), ``dropout``
           (float in [0, 1), default 0)
echo       ``parameters`` (int >= 1, default 1,000,000): a model that does not learn, for
           benchmarks (:mod:`fedcare.models.echo`)
package    ``package`` (required: a package folder, a signed ``.fcpkg`` archive or
           ``sha256:<hash>``), ``options`` (the entry point's keyword arguments); see
           :mod:`fedcare.packages.resolve`
=========  ==========================================================================

Every kind also accepts ``task``, which must match the model's task. Unknown kinds, options or
bad values raise :class:`~fedcare.errors.ConfigError` naming them and listing the valid ones.
Nothing here imports torch until a torch model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

from fedcare.data.base import TaskType
from fedcare.errors import ConfigError
from fedcare.models.base import ModelAdapter
from fedcare.models.cox import CoxPH
from fedcare.models.echo import EchoModel
from fedcare.models.logistic import LogisticRegression
from fedcare.models.sklearn import SklearnLogistic

__all__ = ["MODEL_KINDS", "TORCH_ARCHITECTURES", "PackageBuilder", "build_model"]

_LINEAR_OPTIONS = frozenset({"kind", "task", "init_scale"})
_TORCH_OPTIONS = frozenset({"kind", "task", "architecture", "predict_batch_size"})

#: Architecture name -> its own options (beyond the torch options).
TORCH_ARCHITECTURES: dict[str, frozenset[str]] = {
    "cnn_small": frozenset({"channels", "hidden"}),
    "mlp": frozenset({"hidden", "dropout"}),
}


def _where(spec: Mapping[str, Any]) -> str:
    return f"model spec (kind {spec.get('kind')!r})"


def _check_options(spec: Mapping[str, Any], valid: frozenset[str]) -> None:
    unknown = sorted(str(k) for k in spec if k not in valid)
    if unknown:
        raise ConfigError(
            f"{_where(spec)}: unknown option(s) {unknown}; valid options: {sorted(valid)}"
        )


def _check_task(spec: Mapping[str, Any], valid: tuple[str, ...]) -> str:
    task = spec.get("task", valid[0])
    if task not in valid:
        raise ConfigError(f"{_where(spec)}: task {task!r} is not supported; valid: {list(valid)}")
    return str(task)


def _number(
    spec: Mapping[str, Any], key: str, default: float, *, below: float | None = None
) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"{_where(spec)}: {key} must be a number >= 0, got {value!r}")
    if below is not None and not value < below:
        raise ConfigError(f"{_where(spec)}: {key} must be < {below}, got {value!r}")
    return float(value)


def _positive_int(spec: Mapping[str, Any], key: str, default: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{_where(spec)}: {key} must be an integer >= 1, got {value!r}")
    return value


def _int_list(spec: Mapping[str, Any], key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    value = spec.get(key, default)
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, (list, tuple))
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    ):
        raise ConfigError(f"{_where(spec)}: {key} must be a list of integers >= 1, got {value!r}")
    return tuple(value)


def _linear(cls: type[LogisticRegression | CoxPH | SklearnLogistic]) -> Callable[..., ModelAdapter]:
    def build(spec: Mapping[str, Any]) -> ModelAdapter:
        _check_options(spec, _LINEAR_OPTIONS)
        _check_task(spec, (cls.task,))
        return cls(init_scale=_number(spec, "init_scale", 0.0))

    return build


def _architecture_options(spec: Mapping[str, Any], architecture: str) -> dict[str, Any]:
    if architecture == "cnn_small":
        return {
            "channels": _int_list(spec, "channels", (16, 32)),
            "hidden": _positive_int(spec, "hidden", 64),
        }
    return {
        "hidden": _int_list(spec, "hidden", (32,)),
        "dropout": _number(spec, "dropout", 0.0, below=1.0),
    }


def _torch(spec: Mapping[str, Any]) -> ModelAdapter:
    architecture = spec.get("architecture")
    if architecture not in TORCH_ARCHITECTURES:
        raise ConfigError(
            f"{_where(spec)}: architecture {architecture!r} is not built in; valid "
            f"architectures: {sorted(TORCH_ARCHITECTURES)}"
        )
    _check_options(spec, _TORCH_OPTIONS | TORCH_ARCHITECTURES[architecture])
    task = _check_task(spec, ("binary", "survival"))
    options = _architecture_options(spec, architecture)
    batch = _positive_int(spec, "predict_batch_size", 1024)
    # Only here is torch imported (ModelError with the install hint when it is missing).
    from fedcare.models.torch import import_torch, make_torch_adapter

    import_torch()
    from fedcare.models.torch_nets import architecture_factory

    factory = architecture_factory(architecture, **options)
    return make_torch_adapter(
        factory, cast(TaskType, task), name=architecture, predict_batch_size=batch
    )


def _echo(spec: Mapping[str, Any]) -> ModelAdapter:
    _check_options(spec, frozenset({"kind", "task", "parameters"}))
    _check_task(spec, (EchoModel.task,))
    return EchoModel(_positive_int(spec, "parameters", 1_000_000))


def _package_in_process(spec: Mapping[str, Any]) -> ModelAdapter:
    """A resolved package spec's adapter, loaded in this process from the default store, its
    outputs checked as a site checks them."""
    from fedcare.models.packaged import CheckedPackage, load_adapter
    from fedcare.packages.resolve import resolve_package_model
    from fedcare.packages.store import PackageStore

    store = PackageStore()
    resolved = resolve_package_model(spec, store)
    folder, manifest = store.folder(resolved["package"]), store.manifest(resolved["package"])
    return CheckedPackage(load_adapter(folder, manifest, resolved["options"]), manifest)


#: Model kind -> builder.
MODEL_KINDS: dict[str, Callable[[Mapping[str, Any]], ModelAdapter]] = {
    "cox": _linear(CoxPH),
    "echo": _echo,
    "logistic": _linear(LogisticRegression),
    "sklearn": _linear(SklearnLogistic),
    "torch": _torch,
}


#: Resolves a ``kind: package`` spec to its adapter: in-process (simulation, the default) or
#: through the site's sandboxed package runner.
PackageBuilder = Callable[[Mapping[str, Any]], ModelAdapter]


def build_model(spec: Mapping[str, Any], *, packages: PackageBuilder | None = None) -> ModelAdapter:
    """Build the model adapter a study's ``model:`` mapping describes.

    Parameters
    ----------
    spec:
        ``{"kind": ..., **options}``; see the module docstring for each kind's options.
    packages:
        How a ``kind: package`` spec becomes an adapter; ``None`` loads the package's code in
        this process from the default :class:`~fedcare.packages.store.PackageStore`.

    Returns
    -------
    ModelAdapter
        A fresh, stateless adapter.

    Raises
    ------
    ConfigError
        For a missing or unknown kind, an unknown option or a bad value (naming it).
    ModelError
        For ``kind: torch`` when torch is not installed.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"model spec must be a mapping, got {type(spec).__name__}")
    kind = spec.get("kind")
    if kind == "package":
        return (packages or _package_in_process)(spec)
    if kind not in MODEL_KINDS:
        what = "has no 'kind'" if kind is None else f"has unknown kind {kind!r}"
        valid = sorted([*MODEL_KINDS, "package"])
        raise ConfigError(f"model spec {what}; valid kinds: {valid}")
    return MODEL_KINDS[kind](spec)
