"""Cache-or-train entry point for the bundled classifiers trained by lowbit itself."""

import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import torch

from lowbit.models import cache
from lowbit.models.training import TRAIN_THREADS, TrainConfig, deterministic, train_classifier

CACHE_FORMAT = 1


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def load_or_train(
    name: str,
    build: Callable[[], torch.nn.Module],
    config: TrainConfig,
    images: np.ndarray,
    labels: np.ndarray,
    score: Callable[[torch.nn.Module], dict[str, float]],
) -> torch.nn.Module:
    """An eval-mode `build()` with trained weights, from the cache or freshly trained and cached.

    The cache key covers the training config and thread count, a fingerprint of the training data
    and the parameter names and shapes of `build()`, so changing any of them retrains. Training is
    deterministic for a fixed config; `score` (test metrics) is recorded and reported on stderr.
    """
    with torch.random.fork_rng(devices=[]):
        model = build()
    key = cache.config_hash(
        {
            "format": CACHE_FORMAT,
            "train": asdict(config),
            "threads": TRAIN_THREADS,
            "data": _fingerprint(images, labels),
            "parameters": {k: list(v.shape) for k, v in model.state_dict().items()},
        }
    )
    cached = cache.load(name, key)
    if cached is not None:
        model.load_state_dict(cached[0])
        return model.eval()
    start = time.perf_counter()
    with deterministic(config.seed):
        model = build()
        train_classifier(model, images, labels, config, desc=f"training {name}")
    seconds = time.perf_counter() - start
    metrics = score(model)
    info = {"metrics": metrics, "train_seconds": seconds}
    path = cache.store(name, model.state_dict(), key, info)
    summary = ", ".join(f"{metric} {value:.4f}" for metric, value in metrics.items())
    print(
        f"lowbit: trained {name} in {seconds:.1f} s (test {summary}), cached at {path}",
        file=sys.stderr,
    )
    return model.eval()
