"""Compatibility shim: this module moved to :mod:`keysplit.hazmat.shamir` (hazmat).

``import keysplit.shamir`` returns that very module object (same functions, same
private names, one place to monkeypatch); new code imports ``keysplit.hazmat.shamir``.
"""

from __future__ import annotations

import sys

from .hazmat import shamir as _impl
from .hazmat.shamir import *  # noqa: F403

sys.modules[__name__] = _impl
