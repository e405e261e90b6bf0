"""The `distill` command: a thin dispatcher over each package's own subcommands.

Each package keeps its subcommands in its own ``cli`` module exposing ``register(subparsers)``;
those modules import nothing heavy at import time, so ``distill --help`` stays fast. Packages
are looked up by name so that this lower layer does not import the layers above it.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

_COMMAND_MODULES = (
    "teacher_store.commands",
    "teacher_store.image_commands",
    "api.cli",
    "student.cli",
    "models.cli",
)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class CommandError(Exception):
    """An expected failure of a command: printed as one line, exit status 1."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (it would print the whole usage first); subcommands'
    parsers are of this class too (``add_subparsers`` makes them so)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="distill",
        description="Knowledge distillation from a precomputed sparse teacher store.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:  # a real missing dependency, not an absent command module
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # OpenMP threads that spin while waiting starve DataLoader workers and servers sharing the
    # cores (measured: 12 vs ~270 img/s training on 2 shared cores); torch is imported by the
    # commands, after this, so the setting takes effect. A user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as e:
        print(f"distill {args.command}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in _NO_SPACE:
            print(f"distill {args.command}: error: {e}", file=sys.stderr)
            return 2
        # Out of space is no bad input: the job failed, and re-running it resumes or redoes it.
        name = e.filename if isinstance(e.filename, (str, bytes, os.PathLike)) else None
        where = f" writing {os.fsencode(name).decode('utf-8', 'backslashreplace')}" if name else ""
        print(
            f"distill {args.command}: {e.strerror}{where}; free space and re-run the same command",
            file=sys.stderr,
        )
        return 1
    except ValueError as e:
        # Bad input (paths, configs, stores): one line per problem, never a traceback (nor
        # pydantic's multi-line dump of a config's errors).
        from teacher_store.options import error_lines

        for line in error_lines(e):
            print(f"distill {args.command}: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # `python -m teacher_store.cli`: run the imported module, not this __main__ copy, whose
    # CommandError is another class than the one the commands raise (that would be a traceback).
    from teacher_store import cli

    sys.exit(cli.main())
