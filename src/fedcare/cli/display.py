"""Text an operator can read and copy: reasons as sentences, hex serials, study-id prefixes.

Ids and plan hashes are printed whole (never cut by a table); reasons that carry a Python
dict of ``site -> reason`` (``failures: {'a': 'timeout'}``) read as ``site: reason`` lines.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from fedcare.errors import ConfigError

__all__ = ["hex_serial", "readable_reason", "resolve_study_id"]

_DICT = re.compile(r"\{[^{}]*\}")


def hex_serial(serial: int) -> str:
    """A certificate serial as the agent and coordinator log it (lower-case hex)."""
    return f"{serial:x}"


def _lines(mapping: dict[Any, Any], indent: str) -> str:
    if not mapping:
        return "none"
    return "".join(f"\n{indent}{key}: {value}" for key, value in mapping.items())


def readable_reason(reason: str | None, indent: str = "  ") -> str:
    """``reason`` with each dict literal in it rendered as ``key: value`` lines (an empty
    dict as ``none``); text that holds no dict is returned unchanged."""
    if not reason:
        return ""

    def render(match: re.Match[str]) -> str:
        try:
            value = ast.literal_eval(match.group(0))
        except (ValueError, SyntaxError):
            return match.group(0)
        return _lines(value, indent) if isinstance(value, dict) else match.group(0)

    return _DICT.sub(render, reason)


def resolve_study_id(store: Any, given: str) -> str:
    """The study id that ``given`` names: a whole id, or a unique prefix of one (a trailing
    ``…`` copied from a cut table is ignored).

    Raises
    ------
    ConfigError
        If the prefix matches several studies (names them).
    """
    text = given.strip().rstrip("…").rstrip(".")
    ids = [s.id for s in store.list_studies()]
    if text in ids or not text:
        return text or given
    matches = [i for i in ids if i.startswith(text)]
    if len(matches) > 1:
        raise ConfigError(f"study id prefix {text!r} matches {len(matches)} studies: "
                          f"{', '.join(sorted(matches))}; give more of the id")  # fmt: skip
    return matches[0] if matches else given
