"""Where the tests find their data, wherever in the tree a test file lives."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
VECTORS_DIR = TESTS / "vectors"
REPO = TESTS.parent
