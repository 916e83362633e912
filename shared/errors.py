"""User errors: one clear message and a non-zero exit, never a traceback."""
from __future__ import annotations

import errno
import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class UserError(Exception):
    """A mistake the user can fix (bad flag, missing file, corrupt checkpoint, unknown name).

    The message must say what is wrong and how to fix it.
    """


_FULL = ("the disk is full or a file-size limit was reached: free space (or raise the limit), "
         "then continue the run with --resume")
_DENIED = ("choose an --experiments folder you may write to, or fix its permissions, then "
           "start again (or continue with --resume)")
_PATH = "a part of that path is not what it must be: pass another --experiments (or path)"
# Errors of the file system a run cannot fix itself: one line instead of a traceback.
_WRITE_ERRORS = {errno.ENOSPC: _FULL, errno.EDQUOT: _FULL, errno.EFBIG: _FULL,
                 errno.EACCES: _DENIED, errno.EPERM: _DENIED, errno.EROFS: _DENIED,
                 errno.ENOTDIR: _PATH, errno.EISDIR: _PATH, errno.ENAMETOOLONG: _PATH}


def cli_entry(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a script's ``main`` so a UserError prints ``error: ...`` and exits with status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        from shared.cli import door

        door.enter(main)  # checkpoints record which door wrote them
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except OSError as exc:
            hint = _WRITE_ERRORS.get(exc.errno or 0)
            if hint is None:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {where}{exc.strerror or exc}; {hint}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted; resume with --resume", file=sys.stderr)
            sys.exit(130)

    return wrapper
