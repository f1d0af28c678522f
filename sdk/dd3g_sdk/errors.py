"""Errors that the SDK raises for bad input.

Every error about a file names the file and the problem in one line, so that the CLI can print it as is
and exit non-zero.
"""
from __future__ import annotations

import os
import sys


class InputError(ValueError):
    """Bad user input (a file, an image, a checkpoint). A ValueError, so callers can catch either."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)


def report(error: BaseException, status: int) -> int:
    """Print `error` as the CLI's one line on stderr (`dd3g: error: ...`) and return `status`, the exit code."""
    print(f"dd3g: error: {error}", file=sys.stderr)
    return status
