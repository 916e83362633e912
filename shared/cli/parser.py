"""argparse as the doors use it: errors as one line, and the set of flags actually typed."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from shared.errors import UserError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags through UserError (one line, exit 2, no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def explicit_flags(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """Names of the flags the user actually typed (defaults excluded)."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:  # same flags, every default suppressed
        if action.option_strings and action.dest != "help":
            kwargs: dict[str, Any] = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs is not None or isinstance(action, argparse._StoreAction):
                kwargs["nargs"] = action.nargs
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                   argparse.BooleanOptionalAction)):
                kwargs["action"] = "store_const"
                kwargs["const"] = True
                kwargs.pop("nargs", None)
            probe.add_argument(*action.option_strings, **kwargs)
    ns, _ = probe.parse_known_args(argv)
    return set(vars(ns))


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None
          ) -> tuple[argparse.Namespace, set[str]]:
    """(the parsed flags, the names of those typed on the command line)."""
    args = parser.parse_args(argv)
    return args, explicit_flags(parser, argv if argv is not None else sys.argv[1:])
