"""Compatibility shim: this module moved to :mod:`keysplit.hazmat.pycryptodome` (hazmat).

``import keysplit.interop`` returns that very module object (same functions, same
private names, one place to monkeypatch); new code imports ``keysplit.hazmat.pycryptodome``.
"""

from __future__ import annotations

import sys

from .hazmat import pycryptodome as _impl
from .hazmat.pycryptodome import *  # noqa: F403

sys.modules[__name__] = _impl
