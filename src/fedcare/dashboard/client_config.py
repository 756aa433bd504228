"""Where the Python client and the remote CLI find the coordinator, the token and the CA, and
how they read a server-sent event stream.

Each setting comes from the first place that gives it: the argument, then the environment
(``FEDCARE_COORDINATOR``, ``FEDCARE_TOKEN``, ``FEDCARE_CA``), then the config file
(``$FEDCARE_CONFIG``, else ``~/.config/fedcare/client.yaml``) with the keys ``coordinator``,
``token`` and ``ca``::

    coordinator: https://coordinator.example.org:8443
    token: fc_1a2b3c.s3cr3t          # from `fedcare users add`; keep this file chmod 600
    ca: ca.pem                       # the federation CA; relative to this file's folder
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcare.errors import ConfigError

__all__ = [
    "API_PREFIX",
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "ClientSettings",
    "api_base",
    "parse_sse",
    "resolve_settings",
]

API_PREFIX = "/api/v1"
CONFIG_ENV = "FEDCARE_CONFIG"
DEFAULT_CONFIG = Path("~/.config/fedcare/client.yaml")
_KEYS = frozenset({"coordinator", "token", "ca"})


@dataclass(frozen=True)
class ClientSettings:
    """The resolved settings; ``repr`` never shows the token."""

    url: str
    token: str | None = field(repr=False)
    ca: Path | None
    #: Where each setting came from (``argument``, ``FEDCARE_TOKEN``, the config file's path).
    sources: dict[str, str] = field(default_factory=dict, compare=False)


def _config_file(environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The config file and whether it was named explicitly (then it must exist)."""
    named = environ.get(CONFIG_ENV)
    if named:
        return Path(named).expanduser(), True
    return DEFAULT_CONFIG.expanduser(), False


def _read_config(path: Path, required: bool) -> dict[str, Any]:
    import yaml

    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"client config {path} ({CONFIG_ENV}) does not exist") from None
        return {}
    except OSError as err:
        raise ConfigError(f"client config {path} cannot be read: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"client config {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"client config {path} must be a mapping of coordinator, token, ca")
    unknown = sorted(set(map(str, data)) - _KEYS)
    if unknown:
        raise ConfigError(f"client config {path}: unknown key(s) {unknown}; valid: {sorted(_KEYS)}")
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"client config {path}: {key} must be a string, got {value!r}")
    return data


def api_base(url: str) -> str:
    """``https://host:port/api/v1`` from a coordinator URL given with or without the prefix.

    Raises
    ------
    ConfigError
        If the URL is not ``https://HOST[:PORT]`` (the API is served over TLS only).
    """
    text = url.strip().rstrip("/")
    if not text.startswith("https://") or len(text) <= len("https://"):
        raise ConfigError(
            f"coordinator URL {url!r} must start with https:// (the API is served over TLS "
            "only), e.g. https://coordinator.example.org:8443"
        )
    if text.endswith(API_PREFIX):
        text = text[: -len(API_PREFIX)]
    return text + API_PREFIX


def resolve_settings(
    url: str | None = None,
    token: str | None = None,
    ca: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientSettings:
    """The coordinator URL, token and CA: each from the argument, else the environment, else
    the config file (a relative ``ca`` there is relative to the file's folder).

    Raises
    ------
    ConfigError
        No coordinator URL anywhere, a URL that is not https, an unreadable or invalid config
        file (one named by ``$FEDCARE_CONFIG`` must exist).
    """
    env = os.environ if environ is None else environ
    path, required = _config_file(env)
    config: dict[str, Any] | None = None

    def pick(key: str, given: Any, variable: str) -> tuple[Any, str | None]:
        nonlocal config
        if given is not None and given != "":
            return given, "argument"
        if env.get(variable):
            return env[variable], variable
        if config is None:
            config = _read_config(path, required)
        value = config.get(key)
        return (value, str(path)) if value else (None, None)

    sources: dict[str, str | None] = {}
    found_url, sources["coordinator"] = pick("coordinator", url, "FEDCARE_COORDINATOR")
    if not found_url:
        raise ConfigError(
            "no coordinator URL: pass --coordinator URL (or Client(url=...)), set "
            f"FEDCARE_COORDINATOR, or write 'coordinator:' in {path}"
        )
    found_token, sources["token"] = pick("token", token, "FEDCARE_TOKEN")
    found_ca, sources["ca"] = pick("ca", ca, "FEDCARE_CA")
    ca_path = None
    if found_ca:
        ca_path = Path(found_ca).expanduser()
        if sources["ca"] == str(path) and not ca_path.is_absolute():
            ca_path = path.parent / ca_path
    return ClientSettings(
        api_base(str(found_url)),
        str(found_token) if found_token else None,
        ca_path,
        {k: v for k, v in sources.items() if v is not None},
    )


def parse_sse(lines: Iterable[str]) -> Iterator[tuple[str, Any] | None]:
    """The events of a ``text/event-stream`` as ``(event, data)``, data parsed as JSON (text
    that is not JSON stays a string); ``None`` for each comment line (``: ping``), so a reader
    sees that the stream is alive.

    Follows the HTML standard's rules: ``field: value`` lines (one space after the colon
    dropped), data lines joined by newlines, an event dispatched at a blank line, the event
    name ``message`` when none is given, events without data dropped, ``id`` and ``retry``
    ignored, a last event without its blank line dropped (the stream was cut).
    """
    name = ""
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    value: Any = json.loads(text)
                except ValueError:
                    value = text
                yield name or "message", value
            name, data = "", []
            continue
        if line.startswith(":"):
            yield None
            continue
        key, _, value_text = line.partition(":")
        value_text = value_text[1:] if value_text.startswith(" ") else value_text
        if key == "event":
            name = value_text
        elif key == "data":
            data.append(value_text)
