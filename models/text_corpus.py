"""Real English sentences shipped with Python: first sentences of standard-library docstrings.

The corpus is the first prose sentence of the docstring of each of a fixed, sorted list of
standard-library modules and of their public members (in sorted name order), de-duplicated. A
fixed-seed permutation splits it into disjoint "calib" and "test" parts. The text depends only on
the Python version's standard library.
"""

import importlib
import inspect
import re
import warnings
from functools import lru_cache

import numpy as np

MODULES = (
    "abc", "argparse", "base64", "bisect", "calendar", "collections", "colorsys", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "difflib", "enum", "filecmp",
    "fnmatch", "fractions", "functools", "glob", "gzip", "heapq", "hmac", "html", "inspect",
    "ipaddress", "itertools", "json", "keyword", "logging", "math", "mimetypes", "operator",
    "os.path", "pathlib", "pprint", "queue", "random", "re", "shlex", "shutil", "statistics",
    "string", "struct", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "traceback", "types", "typing", "unicodedata", "urllib.parse", "uuid", "warnings", "weakref",
    "zipfile", "zlib",
)  # fmt: skip
SPLIT_SEED = 0
TEST_FRACTION = 0.3
_SENTENCE = re.compile(r"[A-Z][a-z]+(?: [\w'\-,;:]+){3,}\.")
_SENTENCE_END = re.compile(r"(?<=\.)\s")


def _first_sentence(doc: str) -> str | None:
    for paragraph in doc.split("\n\n"):
        first = _SENTENCE_END.split(" ".join(paragraph.split()), maxsplit=1)[0]
        if _SENTENCE.fullmatch(first):
            return first
    return None


def _documented(module_name: str) -> list[object]:
    module = importlib.import_module(module_name)
    members = [getattr(module, name) for name in sorted(dir(module)) if not name.startswith("_")]
    return [module] + [m for m in members if inspect.isroutine(m) or inspect.isclass(m)]


@lru_cache(maxsize=1)
def all_sentences() -> tuple[str, ...]:
    """Every corpus sentence once, in module-then-member order."""
    seen: dict[str, None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in sorted(MODULES):
            for obj in _documented(module_name):
                sentence = _first_sentence(inspect.getdoc(obj) or "")
                if sentence is not None:
                    seen.setdefault(sentence)
    return tuple(seen)


@lru_cache(maxsize=2)
def sentences(split: str) -> tuple[str, ...]:
    """The sentences of split "calib" or "test"; the two splits never share a sentence."""
    if split not in ("calib", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'calib' or 'test'")
    corpus = all_sentences()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(corpus))
    test_count = round(len(corpus) * TEST_FRACTION)
    chosen = order[:test_count] if split == "test" else order[test_count:]
    return tuple(corpus[i] for i in chosen)
