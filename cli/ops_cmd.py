"""``lowbit ops``: the op table, one row per op with its inputs, attributes and summary."""

from __future__ import annotations

import argparse

from lowbit.cli.command import Command
from lowbit.compiler.ops import OP_TABLE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def run(args: argparse.Namespace) -> int:
    for name in sorted(OP_TABLE):
        spec = OP_TABLE[name]
        attrs = ", ".join(spec.attrs)
        print(f"{name:<12} ({', '.join(spec.inputs)})" + (f" {{{attrs}}}" if attrs else ""))
        print(f"{'':<12} {spec.summary}")
    return 0


COMMAND = Command("ops", "list the op table", add_arguments, run)
