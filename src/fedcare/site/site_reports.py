"""Reports a site writes for itself only: saliency maps of image models (issue 15).

On the final model's evaluation with the study's validation report on, a site whose model is
a torch image model (inputs of rank >= 2) explains a few of its own test images
(:mod:`fedcare.evaluation.saliency`) and writes them with the images into
``ROOT/<study>-<hash>/saliency/`` (:mod:`fedcare.evaluation.saliency_page`), where ``ROOT`` is

* a deployed site: ``<state dir>/<dataset>/reports`` (the runtime's ``state_dir`` + ``reports``);
* a simulation: ``<out>/sites/<site>`` when ``fedcare simulate --out`` gives a folder
  (``run_simulation(site_reports=...)``); without one nothing is computed.

The evaluation reply carries only ``info["saliency_site_report"]``, the number of images the
report holds, or ``info["saliency_note"]`` saying why none was written; no path, image, map or
per-image value. A failure never fails the evaluation.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedcare.data.base import Dataset
from fedcare.errors import FedcareError
from fedcare.models.base import ModelAdapter
from fedcare.records.messages import Task

__all__ = ["list_site_reports", "saliency_folder", "saliency_report"]

#: Reply info keys this module may set (nothing else of the report is sent).
INFO_COUNT, INFO_NOTE = "saliency_site_report", "saliency_note"


def saliency_folder(root: Path, study_id: str) -> Path:
    """The folder of ``study_id``'s saliency report under ``root``: a readable slug of the
    study id plus a short hash (study ids may hold ``/`` and differ only in punctuation)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", study_id).strip("._-")[:60] or "study"
    digest = hashlib.sha256(study_id.encode()).hexdigest()[:8]
    return root / f"{slug}-{digest}" / "saliency"


def _explained(task: str, target: int) -> str:
    return {
        "binary": "logit",
        "multiclass": f"logit of class {target}",
        "multilabel": f"logit of label {target}",
        "survival": "risk score",
    }.get(task, "value")


def _label(y: Any) -> str:
    values = np.asarray(y).reshape(-1)
    text = ", ".join(f"{float(v):g}" for v in values[:8])
    return text if values.size == 1 else f"[{text}]"


def _write(task: Task, adapter: ModelAdapter, data: Dataset, scores: np.ndarray, root: Path) -> int:
    from fedcare.evaluation.saliency import attribute, choose_images, model_output
    from fedcare.evaluation.saliency_page import write_saliency_report

    spec = dict(task.plan["validation"]["saliency"])
    rng = np.random.default_rng([int(task.config.get("seed", 0)), 15, 1])
    rows = choose_images(adapter.task, data.y, scores, int(spec.get("images", 8)), rng)
    if len(rows) == 0:
        return 0
    images = np.asarray(data.X)[rows]
    output, target = model_output(adapter, task.params, images)
    saliency = attribute(
        output,
        images,
        method=str(spec.get("method", "integrated_gradients")),
        steps=int(spec.get("steps", 32)),
    )
    s = np.asarray(scores, dtype=np.float64)
    shown = s.reshape(len(s), -1).max(axis=1) if s.ndim > 1 else s
    captions = [
        {
            "label": _label(np.asarray(data.y)[r]),
            "score": float(shown[r]),
            "explained": _explained(adapter.task, int(t)),
        }
        for r, t in zip(rows, target, strict=True)
    ]
    write_saliency_report(
        saliency_folder(root, task.study_id),
        saliency,
        study_id=task.study_id,
        site_id=task.site_id,
        task=adapter.task,
        captions=captions,
    )
    return len(rows)


def saliency_report(
    task: Task,
    adapter: ModelAdapter,
    data: Dataset,
    scores: np.ndarray,
    root: Path | None,
) -> dict[str, str]:
    """Write the saliency report of ``task``'s model on the test rows ``data`` under ``root``
    when the plan asks for one and the model is an image model; return the reply info that
    says so (module docstring). ``{}`` when it does not apply."""
    from fedcare.evaluation.saliency import is_image_model

    validation = task.plan.get("validation")
    spec = validation.get("saliency") if isinstance(validation, Mapping) else None
    if not spec or root is None or not is_image_model(adapter, np.asarray(data.X)):
        return {}
    try:
        count = _write(task, adapter, data, np.asarray(scores), root)
    except FedcareError as err:  # an optional part: the evaluation goes on without it
        return {INFO_NOTE: f"saliency not written: {err}"[:300]}
    except Exception as err:  # torch, disk: the type only (no paths, no values)
        return {INFO_NOTE: f"saliency not written: {type(err).__name__}"}
    return {INFO_COUNT: str(count)}


def list_site_reports(state: Path) -> Iterator[dict[str, Any]]:
    """The site-only reports under a site's state folder (any depth: one folder per dataset),
    each ``report.json``'s content with ``path`` (its ``index.html``), newest first."""
    found = []
    for meta in state.rglob("saliency/report.json"):
        try:
            entry = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(entry, dict):
            found.append({**entry, "path": str(meta.parent / "index.html")})
    yield from sorted(found, key=lambda e: str(e.get("created", "")), reverse=True)
