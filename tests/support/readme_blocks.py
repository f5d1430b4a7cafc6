"""The README's sections and code blocks, for the tests that run them as written."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from paths import REPO

README = (REPO / "README.md").read_text()


def section(heading: str, text: str = README) -> str:
    """The text from ``heading`` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    rest = text[text.index(heading + "\n") + len(heading) + 1 :]
    nxt = re.search(rf"^#{{1,{len(level)}}} ", rest, flags=re.M)
    return rest[: nxt.start()] if nxt else rest


def blocks(text: str, lang: str = "") -> list[str]:
    """The fenced code blocks of ``text`` in language ``lang`` ('' for a bare ```)."""
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def short_tempdir(prefix: str) -> Iterator[Path]:
    """A temporary directory under /tmp (a Unix socket path must stay short), removed after."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_lines(runs: list[list[str]], cwd: Path, *, timeout: float = 60) -> None:
    """Run each argv (one shell line, or its variants for several custodians or nodes) as the
    installed ``keysplit``; a ``> FILE`` at the end keeps stdout in ``cwd/FILE``."""
    from service_helpers import cli

    for argv in runs:
        out = None
        if ">" in argv:
            out, argv = argv[argv.index(">") + 1], argv[: argv.index(">")]
        r = cli(*argv, cwd=cwd, timeout=timeout)
        assert r.returncode == 0, (argv, r.stderr)
        if out is not None:
            (cwd / out).write_text(r.stdout)
