"""Every `keysplit ...` command the documents show names a real command and real options.

Commands are taken from code blocks (a line starting with ``keysplit`` or ``$ keysplit``,
and each part after ``&&``, ``;`` or ``|``) and from inline code spans starting with
``keysplit ``. The command path must resolve in the CLI's tree, and every ``-x``/``--xyz``
word (``[--json]`` notation included) must be an option of that command: a renamed or
removed flag in the docs fails here, without running anything.
"""

from __future__ import annotations

import importlib
import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from keysplit_cli.app import app
from paths import REPO

DOCS = [
    "README.md",
    "SECURITY.md",
    "docs/API.md",
    "docs/DEVELOPING.md",
    "docs/MIGRATION.md",
    "benchmarks/README.md",
    *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs" / "format").glob("*.md")),
]
ROOT = typer.main.get_command(app)


def references(text: str) -> Iterator[str]:
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|", line):
                m = re.match(r"\s*(?:\$\s+)?keysplit\s+(.*)", part)
                if m:
                    yield m.group(1).split(" #")[0]
    for span in re.findall(r"`([^`\n]*)`", text):
        m = re.match(r"keysplit\s+(.*)", span)
        if m:
            yield m.group(1)


def check(ref: str) -> str | None:
    """What is wrong with one reference, or None."""
    try:
        words = shlex.split(ref, comments=True)
    except ValueError:
        words = ref.split()
    cmd: Any = ROOT
    ctx = ROOT.context_class(ROOT)
    while words and hasattr(cmd, "list_commands"):
        sub = cmd.get_command(ctx, words[0])
        if sub is None:
            break
        cmd = sub
        words.pop(0)
    if hasattr(cmd, "list_commands"):  # the top, or a group: the next word must be a command
        if words and re.fullmatch(r"[a-z][a-z-]*", words[0]):
            return f"no command {words[0]!r}"
        return None
    known = {"--help"}
    for param in cmd.params:
        known.update(param.opts)
        known.update(param.secondary_opts)
    for w in words:
        opt = w.strip("[]").split("=")[0]
        if re.fullmatch(r"--?[A-Za-z][\w-]*", opt) and opt not in known:
            return f"{cmd.name}: no option {opt}"
    return None


CASES = [(doc, ref) for doc in DOCS for ref in references((REPO / doc).read_text())]


def test_the_docs_show_commands() -> None:
    assert len(CASES) > 100


@pytest.mark.parametrize(("doc", "ref"), CASES)
def test_documented_command_exists(doc: str, ref: str) -> None:
    problem = check(ref)
    assert problem is None, f"{doc}: `keysplit {ref}`: {problem}"


def test_a_wrong_flag_is_caught() -> None:
    assert check("init vault --bogus") == "init: no option --bogus"
    assert check("keyring status vault") == "no command 'status'"
    assert check("frobnicate vault") == "no command 'frobnicate'"


def help_texts(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    ctx = cmd.context_class(cmd)
    texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
    yield " ".join(path), re.sub(r"\s+", " ", "\n".join(texts))
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            yield from help_texts(cmd.get_command(ctx, name), (*path, name))


def test_help_texts_quote_real_commands() -> None:
    """A command quoted in --help ('keysplit unseal --server URL') or given as its Example exists
    with its options."""
    quoted = [
        (where, ref)
        for where, text in help_texts(ROOT)
        for ref in re.findall(r"'keysplit ([^']+)'", text)
        + re.findall(r"Example: keysplit (.*?)(?= Exit codes| Example:| On failure|$)", text)
    ]
    assert len(quoted) > 50
    problems = [f"{where}: 'keysplit {ref}': {check(ref)}" for where, ref in quoted if check(ref)]
    assert not problems


def test_every_make_target_is_in_developing_md() -> None:
    makefile = (REPO / "Makefile").read_text()
    (phony,) = re.findall(r"^\.PHONY: (.*)$", makefile, flags=re.M)
    developing = (REPO / "docs" / "DEVELOPING.md").read_text()
    missing = [t for t in phony.split() if f"make {t}" not in developing]
    assert not missing, f"docs/DEVELOPING.md does not mention: {missing}"


def python_names(text: str) -> Iterator[str]:
    """Dotted ``keysplit.x.y`` names in inline code (a SQL table or a ``*`` pattern aside)."""
    for span in re.findall(r"`([^`\n]+)`", text):
        if span.startswith("VACUUM"):
            continue
        for m in re.finditer(r"(?<![\w/.])(keysplit(?:\.[A-Za-z_]\w*)+)(?![\w*])", span):
            yield m.group(1)


def resolve(name: str) -> object:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for p in parts[i:]:
            obj = getattr(obj, p)
        return obj
    raise ImportError(name)


def test_every_python_name_the_docs_give_exists() -> None:
    """`keysplit.jobs.encrypt_column`, `keysplit.audit.events.SCHEMAS`...: each one imports.
    (docs/MIGRATION.md's last sections name removed paths on purpose: test_layering checks them.)"""
    missing, count = [], 0
    for doc in DOCS:
        text = (REPO / doc).read_text()
        if doc == "docs/MIGRATION.md":  # from here on it names removed paths on purpose
            text = text.split("## Removed import paths")[0]
        for name in sorted(set(python_names(text))):
            count += 1
            try:
                resolve(name)
            except (ImportError, AttributeError):
                missing.append(f"{doc}: {name}")
    assert count > 60
    assert not missing


def leaf_commands(cmd: Any = ROOT, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if not hasattr(cmd, "list_commands"):
        yield path
        return
    ctx = cmd.context_class(cmd)
    for name in cmd.list_commands(ctx):
        yield from leaf_commands(cmd.get_command(ctx, name), (*path, name))


def test_every_command_help_states_exit_codes_and_readable_metavars() -> None:
    """Each command's --help ends in 'Exit codes: 0 ...', and no option is shown by its Python
    type ('<list[Path]>', '<list[str]>' told a reader nothing about what to give)."""
    from typer.testing import CliRunner

    runner = CliRunner()
    leaves = list(leaf_commands())
    assert len(leaves) > 40
    problems = []
    for path in leaves:
        r = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"}, terminal_width=200)
        assert r.exit_code == 0, (path, r.output)
        if "Exit codes: 0" not in r.output:
            problems.append(f"{' '.join(path)}: no 'Exit codes:' line")
        for leak in sorted(set(re.findall(r"<(?:list|tuple|dict)\[[^>]*>", r.output))):
            problems.append(f"{' '.join(path)}: metavar {leak}")
    assert not problems, "\n".join(problems)


def test_top_level_help_lists_every_exit_code() -> None:
    """`keysplit --help` gives the codes a script can meet, as README's 'Exit codes' does:
    0, 1, 2, shred's 3 and 4, and 141 for a reader of stdout gone away."""
    from keysplit_cli._common import EXIT_CLOSED_PIPE, EXIT_NO_KEY, EXIT_NOT_ACKNOWLEDGED
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}, terminal_width=200)
    text = re.sub(r"[\s│]+", " ", r.output)
    codes = re.search(r"Exit codes: (.*?)\.(?: |$)", text)
    assert codes is not None, text
    for code in (0, 1, 2, EXIT_NO_KEY, EXIT_NOT_ACKNOWLEDGED, EXIT_CLOSED_PIPE):
        assert re.search(rf"\b{code}\b", codes.group(1)), (code, codes.group(1))
