"""The one error type users see: it names the file (or entry) and the problem."""
from __future__ import annotations

from pathlib import Path
from typing import Union


class LumbarsegError(Exception):
    """A problem with the user's input or environment, shown as one line: `SOURCE: PROBLEM`.

    Args:
        source: the file, flag or entry at fault.
        problem: what is wrong with it.
    """

    def __init__(self, source: Union[str, Path], problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")
