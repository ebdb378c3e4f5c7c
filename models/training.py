"""Deterministic CPU training loop for the bundled image classifiers."""

import math
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

# One intra-op thread: these models are too small to gain from more, and with two threads the
# per-op OpenMP barriers made training 2-6x slower whenever another process shared the cores.
TRAIN_THREADS = 1


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; all of them enter the cache key."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    label_smoothing: float = 0.0


@contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seed torch, fix the thread count and force deterministic kernels; restore all on exit."""
    threads = torch.get_num_threads()
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(TRAIN_THREADS)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_num_threads(threads)


def train_classifier(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    desc: str,
) -> None:
    """Train `model` in place: AdamW, one-cycle (warm-up, cosine) learning rate, cross-entropy."""
    x = torch.tensor(images)
    y = torch.tensor(labels, dtype=torch.long)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps = config.epochs * math.ceil(len(x) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(config.epochs), desc=desc, disable=None, file=sys.stderr, leave=False):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            logits = model(x[batch])
            loss = F.cross_entropy(logits, y[batch], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
