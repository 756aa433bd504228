"""What the client sends when it submits a study, and how it names a downloaded file.

A study whose model is a package names it, in the study file, by a path relative to that file.
The coordinator cannot read the researcher's disk, so the client uploads the signed archive
(``POST /packages``) and sends the study with ``package: sha256:<hex>`` instead, the hash the
coordinator answered. A package *folder* is refused here, before anything is sent: a
deployment runs only signed archives (``fedcare package build``), exactly as ``fedcare study
submit`` on the coordinator's host refuses one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedcare.errors import ConfigError

__all__ = ["download_name", "study_text"]


def _read(study_file: Path) -> tuple[str, Any]:
    import yaml

    try:
        text = study_file.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read study file {study_file}: {err}") from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"study file {study_file} is not valid YAML: {err}") from None


def study_text(study_file: Path, upload: Callable[[Path], Mapping[str, Any]]) -> str:
    """The study YAML to send: the file's text, or, when its model is ``kind: package`` named
    by a local archive, the study with ``model.package`` replaced by the hash ``upload``
    (``POST /packages``) returned.

    Raises
    ------
    ConfigError
        The file cannot be read or is not YAML; the package is a folder (build and sign it
        first, the message gives the command) or no such file.
    """
    import yaml

    text, data = _read(study_file)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict) or model.get("kind") != "package":
        return text
    ref = model.get("package")
    if not isinstance(ref, str) or not ref or ref.startswith("sha256:"):
        return text  # a stored hash, or a mistake the coordinator names
    path = Path(ref).expanduser()
    path = path if path.is_absolute() else study_file.parent / path
    if path.is_dir():
        raise ConfigError(
            f"{study_file}: model.package {ref} is a package folder; a coordinator runs only "
            f"signed archives: build and sign it first (`fedcare package build {ref} --kit "
            "RESEARCHER_KIT --out NAME.fcpkg`) and name the .fcpkg file in the study"
        )
    if not path.is_file():
        raise ConfigError(f"{study_file}: model.package {ref}: no such file ({path})")
    uploaded = upload(path)
    data["model"] = {**model, "package": uploaded["package"]}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


_FILENAME = re.compile(r"""filename\*?=(?:UTF-8'')?"?([^";]+)"?""", re.IGNORECASE)


def download_name(headers: Mapping[str, str], version: str) -> str:
    """The file name of a download: the ``Content-Disposition`` one, without any folder part
    (a server cannot make the client write outside the folder), else ``model-VERSION.zip``."""
    import urllib.parse

    match = _FILENAME.search(headers.get("content-disposition", ""))
    name = Path(urllib.parse.unquote(match.group(1))).name if match else ""
    if name in ("", ".", ".."):
        name = f"model-{re.sub(r'[^A-Za-z0-9._-]', '_', version)}.zip"
    return name
