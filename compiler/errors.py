"""Errors that users see: each names the file, node and op it concerns, on one line.

The CLI turns a ``LowbitError`` into exit code 2 and its one-line message; anything else is a
bug in lowbit and keeps its traceback.
"""

from __future__ import annotations


class LowbitError(Exception):
    """A problem with the user's input: a model, a file, an array or an option."""

    def __init__(self, message: str, *, file: str | None = None, node: str | None = None,
                 op: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.node = node
        self.op = op

    def located(self, *, file: str | None = None) -> "LowbitError":
        """The same error with the file filled in where it was not known yet."""
        if self.file is None and file is not None:
            self.file = file
        return self

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(f"file {self.file}")
        if self.node:
            where.append(f"node {self.node}")
        if self.op:
            where.append(f"op {self.op}")
        prefix = ", ".join(where)
        text = " ".join(self.message.split())
        return f"{prefix}: {text}" if prefix else text


class GraphError(LowbitError):
    """The graph breaks an IR invariant (found by ``Graph.verify``)."""


class UnsupportedOpError(LowbitError):
    """A captured op has no row in the importer's table."""


class InputError(LowbitError):
    """An input array does not match the graph's declared input."""
