"""Whether this process can start another Python interpreter.

keysplit starts ``sys.executable`` with interpreter options for a bulk job's driver
(``-m keysplit._jobs_boot``, :mod:`keysplit.jobs._isolate`) and for a replacement worker
of ``keysplit serve`` (``-P -c ...``, :mod:`keysplit.service.fleet`). In a frozen build
(PyInstaller, cx_Freeze, py2exe: ``sys.frozen``) ``sys.executable`` is the application
itself, which takes those options as its own arguments (keysplit's CLI: a usage error); an
interpreter embedded in another program may have none.
"""

from __future__ import annotations

import os
import sys

__all__ = ["unavailable"]


def unavailable() -> str | None:
    """Why no Python interpreter can be started from this process (None: it can)."""
    if getattr(sys, "frozen", False):
        return "a frozen build has no Python interpreter to start (sys.executable is the app)"
    if not sys.executable or not os.access(sys.executable, os.X_OK):
        return (
            "no Python interpreter to start (sys.executable is empty or not executable: "
            "an embedded interpreter)"
        )
    return None
