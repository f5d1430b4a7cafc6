"""Bounded JSON parsing: every JSON keysplit reads from a file or the wire goes through here.

``json.loads`` recurses once per nesting level, so 100,000 ``[`` raise RecursionError (a
traceback, not a clean error), and it allocates in proportion to its input. This module
refuses by size before parsing and by nesting depth with a linear, non-recursive scan, so
hostile input ends in one :class:`~keysplit.errors.FormatError` (or the caller's subclass).
"""

from __future__ import annotations

import json
from typing import Any

from .errors import FormatError, KeysplitError

__all__ = ["MAX_DEPTH", "check_depth", "is_unicode", "loads"]

MAX_DEPTH = 32


def check_depth(text: str, max_depth: int) -> bool:
    """True if the nesting of ``[``/``{`` outside strings never exceeds ``max_depth``."""
    if text.count("[") + text.count("{") <= max_depth:
        return True  # cannot nest deeper than it opens: skip the per-character scan
    depth = 0
    in_str = False
    escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def loads(
    data: bytes | str,
    *,
    what: str,
    max_bytes: int,
    max_depth: int = MAX_DEPTH,
    encoding: str = "utf-8",
    error: type[KeysplitError] = FormatError,
    **kwargs: Any,
) -> Any:
    """Parse JSON from a file or the wire, bounded in size and depth.

    ``what`` names the input in the error ("keyring metadata"); ``kwargs`` go to
    :func:`json.loads` (hooks). NaN/Infinity are refused unless ``parse_constant`` is given.
    Every failure raises ``error`` (a :class:`~keysplit.errors.KeysplitError`).
    """
    if len(data) > max_bytes:
        raise error(f"{what} is too large ({len(data)} bytes, at most {max_bytes})")
    try:
        text = data.decode(encoding) if isinstance(data, bytes) else data
    except UnicodeDecodeError:
        raise error(f"{what} is not valid {encoding} JSON") from None
    if not check_depth(text, max_depth):
        raise error(f"{what} is nested too deeply (at most {max_depth} levels)")
    kwargs.setdefault("parse_constant", _reject_constant)
    try:
        return json.loads(text, **kwargs)
    except (ValueError, RecursionError):
        raise error(f"{what} is not valid JSON") from None


def is_unicode(text: str) -> bool:
    """Whether ``text`` has a UTF-8 form: a JSON string escape can spell a lone surrogate
    (``"\\ud800"``), which :func:`loads` returns as is and no encoder takes back."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
