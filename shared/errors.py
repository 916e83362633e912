"""User errors: one clear message and a non-zero exit, never a traceback."""
from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, corrupt checkpoint, unknown name).

    The message must say what is wrong and how to fix it.
    """


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a script's ``main`` so a UserError prints ``error: ...`` and exits with status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted; resume with --resume", file=sys.stderr)
            sys.exit(130)

    return wrapper
