"""``python -m lowbit.models.sample MODEL --count N --out X.npz``: real test inputs of a bundled
model as an npz keyed by input name (the demo feeds them to ``lowbit run``)."""

from __future__ import annotations

import argparse

from lowbit.models.registry import get_model
from lowbit.runtime.npz import save_npz


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--split", choices=("calib", "test"), default="test")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    save_npz(args.out, get_model(args.model).sample_inputs(args.count, args.split))


if __name__ == "__main__":
    main()
