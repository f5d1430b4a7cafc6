"""Compatibility shim: this module moved to :mod:`keysplit.hazmat._parallel` (hazmat).

``import keysplit._parallel`` returns that very module object (same functions, same
private names, one place to monkeypatch); new code imports ``keysplit.hazmat._parallel``.
"""

from __future__ import annotations

import sys

from .hazmat import _parallel as _impl
from .hazmat._parallel import *  # noqa: F403

sys.modules[__name__] = _impl
