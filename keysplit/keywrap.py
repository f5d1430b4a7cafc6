"""Compatibility shim: this module moved to :mod:`keysplit.hazmat.keywrap` (hazmat).

``import keysplit.keywrap`` returns that very module object (same functions, same
private names, one place to monkeypatch); new code imports ``keysplit.hazmat.keywrap``.
"""

from __future__ import annotations

import sys

from .hazmat import keywrap as _impl
from .hazmat.keywrap import *  # noqa: F403

sys.modules[__name__] = _impl
