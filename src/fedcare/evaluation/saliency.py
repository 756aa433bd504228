"""Saliency maps of an image model on a few of one site's test images (issue 15).

Nothing computed here leaves a site: :mod:`fedcare.site.site_reports` writes the maps with the
images themselves into a report in the site's own folder, and the evaluation reply says only
how many images that report holds.

Two methods, both on the model's *raw* output for the explained class (the logit of a binary
or multilabel model, the logit of the predicted class of a multiclass model, the value or risk
score otherwise), in the model's input space (after the study's preprocessing):

* ``gradient``: the plain input gradient ``d f(x) / d x`` (Simonyan et al. 2014);
* ``integrated_gradients``: ``(x - x0) * mean_k d f(x0 + a_k (x - x0)) / d x`` over ``steps``
  midpoints ``a_k = (k + 1/2) / steps`` of the straight path from the baseline ``x0`` (an
  all-zero, i.e. black, image) to ``x`` (Sundararajan et al. 2017). Its attributions add up
  to ``f(x) - f(x0)`` (completeness) up to the Riemann error.

Torch is imported inside the functions: importing this module needs numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcare.errors import ModelError

__all__ = [
    "SALIENCY_METHODS",
    "Saliency",
    "attribute",
    "choose_images",
    "is_image_model",
    "model_output",
]

#: The methods :func:`attribute` knows.
SALIENCY_METHODS = ("integrated_gradients", "gradient")

#: ``f(inputs) -> outputs``: a differentiable torch function from a ``(n, *shape)`` float32
#: tensor to the ``(n,)`` raw outputs being explained.
Output = Callable[[Any], Any]


@dataclass(frozen=True)
class Saliency:
    """Attributions of ``images`` (same shape), the explained outputs and, for integrated
    gradients, the baseline's outputs (``None`` for ``gradient``)."""

    images: np.ndarray
    attributions: np.ndarray
    outputs: np.ndarray
    baseline_outputs: np.ndarray | None
    method: str
    steps: int


def is_image_model(adapter: Any, X: np.ndarray) -> bool:
    """Whether saliency applies: a torch adapter (it can build its module) on inputs of rank
    >= 2 per example (images; tabular rows are rank 1)."""
    from fedcare.models.torch import TorchAdapter  # no torch import: the adapter module is light

    return isinstance(adapter, TorchAdapter) and np.ndim(X) >= 3


def model_output(adapter: Any, params: Any, X: np.ndarray) -> tuple[Output, np.ndarray]:
    """The explained output of ``adapter`` with ``params`` (module docstring) as a torch
    function, and for each row of ``X`` the explained output index (multiclass and multilabel:
    the highest-scored class; else 0)."""
    from fedcare.models.torch import import_torch
    from fedcare.models.torch_runtime import seeded

    torch = import_torch()
    with seeded(None):  # construction draws an init that the params overwrite
        module = adapter.load(params, tuple(np.shape(X)[1:]))
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    head, step = adapter.head, adapter.eval_step

    def raw(inputs: Any) -> Any:
        out = module(inputs) if step is None else step(module, inputs)
        return head.shape_outputs(out, len(inputs), model=adapter.name)

    with torch.no_grad():
        first = raw(torch.from_numpy(np.asarray(X, dtype=np.float32)))
    target = first.argmax(dim=1).numpy() if first.ndim == 2 else np.zeros(len(X), dtype=np.int64)
    index = torch.from_numpy(target).reshape(-1, 1)

    def output(inputs: Any) -> Any:
        out = raw(inputs)
        return out.gather(1, index[: len(inputs)]).reshape(-1) if out.ndim == 2 else out

    return output, target


def attribute(
    output: Output, images: np.ndarray, *, method: str = "integrated_gradients", steps: int = 32
) -> Saliency:
    """Attributions of ``output`` (see :data:`Output`) on ``images``, one map per image with
    the image's shape.

    Raises
    ------
    ModelError
        For an unknown ``method`` or ``steps < 1``.
    """
    if method not in SALIENCY_METHODS:
        raise ModelError(f"unknown saliency method {method!r}; valid: {list(SALIENCY_METHODS)}")
    if steps < 1:
        raise ModelError(f"saliency steps must be >= 1, got {steps}")
    from fedcare.models.torch import import_torch

    torch = import_torch()
    x = torch.from_numpy(np.array(images, dtype=np.float32))
    with torch.no_grad():
        outputs = output(x).double().numpy()
    if method == "gradient":
        maps, base = _gradient(torch, output, x), None
    else:
        baseline = torch.zeros_like(x)
        maps = _integrated_gradients(torch, output, x, baseline, steps)
        with torch.no_grad():
            base = output(baseline).double().numpy()
    return Saliency(
        images=np.asarray(images),
        attributions=maps,
        outputs=outputs,
        baseline_outputs=base,
        method=method,
        steps=steps if method == "integrated_gradients" else 1,
    )


def _gradient(torch: Any, output: Output, x: Any) -> np.ndarray:
    point = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(output(point).sum(), point)
    return np.asarray(grad.double().numpy())


def _integrated_gradients(torch: Any, output: Output, x: Any, baseline: Any, steps: int) -> Any:
    """``(x - x0) * mean_k grad f(x0 + a_k (x - x0))``, ``a_k`` the midpoints of ``steps``
    equal parts of [0, 1]; float64 accumulation, one batch of all images per step."""
    total = torch.zeros_like(x, dtype=torch.float64)
    for k in range(steps):
        alpha = (k + 0.5) / steps
        point = (baseline + alpha * (x - baseline)).requires_grad_(True)
        (grad,) = torch.autograd.grad(output(point).sum(), point)
        total += grad.double()
    return ((x - baseline).double() * total / steps).numpy()


def choose_images(
    task: str, y: np.ndarray, scores: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Row indices of the images to explain, at most ``count``.

    Binary tasks: half (rounded up) the highest-scored rows labelled positive, the rest the
    lowest-scored rows labelled negative: the cases the model is surest of, per class (one
    class short: more of the other). Other tasks: a random sample drawn with ``rng``. Ties
    are broken with ``rng`` too.
    """
    n = len(scores)
    count = min(int(count), n)
    order = rng.permutation(n)  # a random order first: the stable sorts break ties with it
    if task != "binary":
        return np.sort(order[:count])
    s = np.asarray(scores, dtype=np.float64).reshape(n, -1)[:, -1][order]
    labels = np.asarray(y).reshape(n, -1)[:, 0][order]
    pos = order[labels == 1][np.argsort(-s[labels == 1], kind="stable")]
    neg = order[labels != 1][np.argsort(s[labels != 1], kind="stable")]
    want_pos = min(len(pos), max(count - len(neg), (count + 1) // 2))
    return np.concatenate([pos[:want_pos], neg[: count - want_pos]]).astype(np.int64)
