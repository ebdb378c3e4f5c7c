"""The ``lowbit`` command line: a table of subcommands, each in its own module.

Contract (fixed; later work adds commands and options, never renames): exit 0 on success;
exit 2 on a user error with a one-line message naming the file, node and op where one is
involved, never a traceback for bad input. npz files hold one array per graph input or output,
keyed by name.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from collections.abc import Sequence

from lowbit.cli import (bench_cmd, capture_cmd, check_cmd, compile_cmd, explain_cmd, ops_cmd,
                        pass_cmd, run_cmd, show_cmd)
from lowbit.cli.command import Command
from lowbit.compiler.errors import LowbitError

COMMANDS: tuple[Command, ...] = (capture_cmd.COMMAND, show_cmd.COMMAND, compile_cmd.COMMAND,
                                 run_cmd.COMMAND, check_cmd.COMMAND, explain_cmd.COMMAND,
                                 bench_cmd.COMMAND, ops_cmd.COMMAND, pass_cmd.COMMAND)

EXIT_USER_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lowbit", description="Capture models into one graph IR, compile them to integer-only "
        "programs, run, explain and benchmark them.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.summary,
                                  description=command.summary)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `lowbit show x | head` ends quietly
    # torch.export's own deprecation notice, raised inside torch on every capture
    warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except LowbitError as err:
        print(f"lowbit {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"lowbit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
