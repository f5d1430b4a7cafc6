"""Progress bars for long ceremony steps (rich, on stderr so stdout stays data)."""

from __future__ import annotations

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from keysplit import RewrapResult, UnsealedKeyring

from ._common import err_console

__all__ = ["rewrap_with_progress"]


def rewrap_with_progress(ukr: UnsealedKeyring, batch_size: int) -> RewrapResult:
    """Run :meth:`UnsealedKeyring.rewrap` with a progress bar (one update per batch)."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
    ) as bar:
        task = bar.add_task("rewrapping data keys", total=None)

        def step(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = ukr.rewrap(batch_size=batch_size, progress=step)
        bar.update(task, completed=result.rewrapped, total=max(result.rewrapped, 1))
    return result
