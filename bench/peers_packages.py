"""Optional peer packages (the `bench` extra): their installed versions, and the ImportError a
peer raises when its package is missing, which the benchmark turns into an error row.

Invariant: nothing here imports a peer package; peers import theirs lazily, after `require`.
"""

import importlib.metadata


def installed_version(distribution: str) -> str | None:
    """The installed version of `distribution`, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def require(distribution: str, why: str = "") -> None:
    """Raise ImportError naming `distribution` (and `why`) unless it is installed."""
    if installed_version(distribution) is None:
        detail = f"; {why}" if why else ""
        raise ImportError(f"{distribution} is not installed{detail} "
                          "(`make install` installs every peer)")
