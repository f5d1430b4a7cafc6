"""Where the tests find their data, wherever in the tree a test file lives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
VECTORS_DIR = TESTS / "vectors"
REPO = TESTS.parent
KEYSPLIT = Path(sys.executable).parent / "keysplit"
"""The installed ``keysplit`` executable of this interpreter's environment."""


def run_keysplit(args: list[object], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the installed executable (a real process: no stdin, text output, bounded)."""
    return subprocess.run(
        [str(KEYSPLIT), *map(str, args)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
