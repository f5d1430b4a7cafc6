"""Compatibility shim: this module moved to :mod:`keysplit.hazmat.gf256` (hazmat).

``import keysplit.gf256`` returns that very module object (same functions, same
private names, one place to monkeypatch); new code imports ``keysplit.hazmat.gf256``.
"""

from __future__ import annotations

import sys

from .hazmat import gf256 as _impl
from .hazmat.gf256 import *  # noqa: F403

sys.modules[__name__] = _impl
