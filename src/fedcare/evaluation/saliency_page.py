"""The site-only saliency report: one PNG per image and an HTML page that explains them.

:func:`write_saliency_report` writes into a folder at the site (see
:mod:`fedcare.site.site_reports`): ``image-01.png`` ... (the image, its saliency map and the
map over the image, side by side), ``index.html`` (which links them, and says what the method
is and what it is not) and ``report.json`` (what the folder holds: study, site, method, number
of images; no pixel values). The PNGs hold patient images: the folder must stay at the site.

PNGs are encoded here with numpy and zlib (no imaging library needed).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from fedcare.evaluation.saliency import Saliency

__all__ = ["heat_colors", "magnitude", "png_bytes", "render_panels", "write_saliency_report"]

#: Anchors of the heat colour map (black, purple, red, orange, light yellow), as in "inferno".
_ANCHORS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float64
)
#: Pixels of the longest image side in a panel (nearest-neighbour upscaling).
_PANEL = 224


def png_bytes(rgb: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (``(h, w, 3)`` uint8)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + np.ascontiguousarray(row).tobytes() for row in rgb.astype(np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + (chunk(b"IEND", b""))
    )


def heat_colors(m: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as heat-map RGB floats in [0, 255] (``m.shape + (3,)``)."""
    pos = np.clip(m, 0.0, 1.0) * (len(_ANCHORS) - 1)
    lo = np.minimum(pos.astype(np.int64), len(_ANCHORS) - 2)
    frac = (pos - lo)[..., None]
    return _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac


def magnitude(attribution: np.ndarray) -> np.ndarray:
    """``(h, w)`` saliency in [0, 1]: absolute attributions summed over channels, divided by
    their 99th percentile (so one extreme pixel does not wash out the rest)."""
    a = np.abs(np.asarray(attribution, dtype=np.float64))
    a = a.sum(axis=0) if a.ndim == 3 else a.reshape(a.shape[-2:])
    top = float(np.percentile(a, 99))
    return np.clip(a / top, 0.0, 1.0) if top > 0 else np.zeros_like(a)


def _gray(image: np.ndarray) -> np.ndarray:
    """An image as ``(h, w, 3)`` floats in [0, 255]: RGB when it has 3 channels, else the
    channel mean in grey; min-max scaled (the model's inputs may be standardized)."""
    x = np.asarray(image, dtype=np.float64)
    if x.ndim == 3 and x.shape[0] == 3:
        x = np.moveaxis(x, 0, -1)
    else:
        x = x.reshape((-1, *x.shape[-2:])).mean(axis=0)[..., None].repeat(3, axis=-1)
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(x)


def render_panels(image: np.ndarray, attribution: np.ndarray) -> np.ndarray:
    """The image, its saliency map and the map over the image, side by side (uint8 RGB)."""
    base = _gray(image)
    m = magnitude(attribution)
    heat = heat_colors(m)
    alpha = 0.8 * m[..., None]
    over = (1 - alpha) * 0.6 * base + alpha * heat  # the image dimmed: the heat stands out
    h, w = m.shape
    scale = max(1, _PANEL // max(h, w))
    gap = np.full((h * scale, 4, 3), 255.0)
    parts = [np.kron(p, np.ones((scale, scale, 1))) for p in (base, heat, over)]
    return np.concatenate([parts[0], gap, parts[1], gap, parts[2]], axis=1).round().astype(np.uint8)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("fedcare.evaluation", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
    )


def write_saliency_report(
    folder: Path,
    saliency: Saliency,
    *,
    study_id: str,
    site_id: str,
    task: str,
    captions: Sequence[Mapping[str, Any]],
) -> Path:
    """Write the report of ``saliency`` into ``folder`` (made if missing; earlier PNGs of the
    same study replaced) and return its ``index.html``. ``captions`` has one entry per image:
    ``label``, ``score`` and ``explained`` (what output the map explains)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("image-*.png"):
        old.unlink()
    items = []
    for i, (image, attribution) in enumerate(
        zip(saliency.images, saliency.attributions, strict=True)
    ):
        name = f"image-{i + 1:02d}.png"
        (folder / name).write_bytes(png_bytes(render_panels(image, attribution)))
        total = float(np.sum(attribution))
        base = None if saliency.baseline_outputs is None else float(saliency.baseline_outputs[i])
        items.append(
            {
                "file": name,
                **dict(captions[i]),
                "output": float(saliency.outputs[i]),
                "baseline": base,
                "total": total,
            }
        )
    meta = {
        "kind": "saliency",
        "study_id": study_id,
        "site_id": site_id,
        "task": task,
        "method": saliency.method,
        "steps": saliency.steps,
        "images": len(items),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    html = _environment().get_template("saliency.html.j2").render(meta=meta, items=items)
    index = folder / "index.html"
    index.write_text(html, encoding="utf-8")
    (folder / "report.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return index
