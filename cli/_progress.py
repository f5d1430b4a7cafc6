"""Progress bars for long ceremony steps (rich, on stderr so stdout stays data)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._common import err_console

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """A ``progress(done, total)`` callback that shows its bar only once work starts, so
    the quorum prompts before it are not drawn over."""

    def __init__(self, description: str) -> None:
        self._description = description
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def _start(self) -> tuple[Progress, TaskID]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        if self._bar is None or self._task is None:
            self._bar = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err_console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self._description, total=None)
        return self._bar, self._task

    def __call__(self, done: int, total: int) -> None:
        bar, task = self._start()
        bar.update(task, completed=done, total=total)

    def finish(self, done: int) -> None:
        """End at ``done`` of ``done`` (nothing to do ends "0/0", not one short of done)."""
        bar, task = self._start()
        bar.update(task, completed=done, total=done)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextmanager
def progress_bar(description: str) -> Iterator[ProgressBar]:
    """A :class:`ProgressBar` stopped on the way out (also on errors)."""
    bar = ProgressBar(description)
    try:
        yield bar
    finally:
        bar.stop()
