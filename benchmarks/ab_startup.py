"""Before/after: the CPU one ``keysplit`` process start costs, per command, of two trees.

    git archive <rev> keysplit cli | tar -x -C /tmp/before
    .venv/bin/python -m benchmarks.ab_startup /tmp/before [--rounds 9]

Three arms, each a directory put first on ``PYTHONPATH`` holding ``keysplit`` and
``keysplit_cli`` (symlinks): ``before`` (the tree given), ``after`` and ``after2`` (this
checkout, or ``--after DIR``, twice: the A/A). Each runs the commands of an operator's day
on a fixture made once in a temporary directory with this tree (a 2-of-3 keyring, a pinned
fingerprint, a cluster directory whose nodes are unreachable): ``--help``, ``status``,
``cluster status``, ``encrypt`` of a 300-byte file, ``serve --help``. A round runs every
(command, arm) pair once, arms in turn (:func:`in_turn`); the figure is the child's user +
system CPU (``os.wait4``, so the machine's other load counts only through caches), its
median over rounds, and the median of each round's ratio to ``before``. Not a ``bench_*``
module: the harness does not run it. Every arm compiles its bytecode first (a warm-up run), as
``make pytest`` does.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.harness.timing import in_turn

_LAUNCH = (
    "import sys; from keysplit_cli.app import main; sys.argv[0] = 'keysplit'; sys.exit(main())"
)
_HERE = Path(__file__).resolve().parent.parent

COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "status": ["status", "vault"],
    "cluster status": ["cluster", "status", "nodes"],
    "encrypt": ["encrypt", "vault", "small.bin", "out.ks"],
    "serve --help": ["serve", "--help"],
}
"""What each start runs (in the fixture directory); ``cluster status`` exits 1 (no node)."""


def _arm(root: Path, tree: Path) -> Path:
    """A directory with ``keysplit`` and ``keysplit_cli`` of ``tree``, for ``PYTHONPATH``."""
    root.mkdir()
    (root / "keysplit").symlink_to(tree / "keysplit")
    (root / "keysplit_cli").symlink_to(tree / "cli")
    return root


def _fixture(work: Path, env: dict[str, str]) -> None:
    """A keyring ``vault`` pinned in a known-keyrings file of its own, ``small.bin`` and a
    cluster directory ``nodes`` of three unreachable nodes, made with this tree."""
    import keysplit
    from keysplit.service.cluster_config import ClusterConfig, ClusterNodeInfo

    _, shares = keysplit.Keyring.create(work / "vault", threshold=2, custodians=["a", "b", "c"])
    del shares
    fp = keysplit.Keyring.open(work / "vault").fingerprint
    (work / "small.bin").write_bytes(os.urandom(300))
    nodes = tuple(
        ClusterNodeInfo(f"n{i}", i, f"unix:{work}/n{i}.sock", f"{i:032x}", "ab" * 32, "cd" * 32)
        for i in range(1, 4)
    )
    cfg = ClusterConfig("0f" * 16, "in", 2, nodes, "ef" * 32, commitments=("ef" * 32,) * 2)
    (work / "nodes").mkdir()
    cfg.write(work / "nodes")
    pin = [sys.executable, "-c", _LAUNCH, "keyring", "pin", "vault", "--expect", fp]
    subprocess.run(pin, cwd=work, env=env, check=True, capture_output=True, timeout=120)


def _cpu(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    """User + system CPU seconds of one ``keysplit ARGS`` process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read() if proc.stderr else b""
    if proc.stderr:
        proc.stderr.close()
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and args[0] != "cluster"):
        raise SystemExit(f"keysplit {' '.join(args)}: exit {proc.returncode}: {err[-500:]!r}")
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path, help="a tree holding keysplit/ and cli/")
    ap.add_argument(
        "--after", type=Path, default=_HERE, help="the tree to compare (default: this checkout)"
    )
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--only", action="append", choices=sorted(COMMANDS), help="these commands")
    args = ap.parse_args()
    commands = {k: v for k, v in COMMANDS.items() if not args.only or k in args.only}
    with tempfile.TemporaryDirectory(prefix="ab-startup-") as tmp:
        base = Path(tmp)
        work = base / "work"
        work.mkdir()
        env = dict(os.environ, KEYSPLIT_KNOWN_KEYRINGS=str(base / "known"), COLUMNS="100")
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        _fixture(work, env)
        arms = {
            "before": _arm(base / "before", args.before.resolve()),
            "after": _arm(base / "after", args.after.resolve()),
            "after2": _arm(base / "after2", args.after.resolve()),
        }
        envs = {name: dict(env, PYTHONPATH=str(p)) for name, p in arms.items()}
        for name in arms:  # bytecode, and a check that every command runs in every arm
            for cmd in commands.values():
                _cpu(cmd, work, envs[name])
                shutil.rmtree(work / "out.ks", ignore_errors=True)
                (work / "out.ks").unlink(missing_ok=True)
        cpu: dict[tuple[str, str], list[float]] = {}
        pairs = [(c, a) for c in commands for a in arms]
        for r in range(args.rounds):
            for c, a in in_turn(pairs, r):
                cpu.setdefault((c, a), []).append(_cpu(commands[c], work, envs[a]))
                (work / "out.ks").unlink(missing_ok=True)
        load = os.getloadavg()
    print(f"# {args.rounds} rounds, load after {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print(f"{'command':16} {'before':>8} {'after':>8} {'after2':>8} {'after/b':>8} {'a2/a':>8}")
    for c in commands:
        before, after, after2 = (cpu[(c, arm)] for arm in arms)
        ratio = statistics.median(x / y for x, y in zip(after, before, strict=True))
        control = statistics.median(x / y for x, y in zip(after2, after, strict=True))
        med = [statistics.median(v) for v in (before, after, after2)]
        print(f"{c:16} {med[0]:8.3f} {med[1]:8.3f} {med[2]:8.3f} {ratio:8.3f} {control:8.3f}")


if __name__ == "__main__":
    main()
