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

TRAIN_THREADS = 2


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; all of them enter the cache key."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    seed: int
    max_shift: int = 0
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


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each [C,H,W] image by a random whole-pixel offset in [-max_shift, max_shift], zero-filled."""
    count, _, height, width = images.shape
    side = 2 * max_shift + 1
    padded = F.pad(images, (max_shift,) * 4)
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)  # [N, C, side, side, H, W]
    dy, dx = torch.randint(0, side, (2, count), generator=generator)
    return windows[torch.arange(count), :, dy, dx]


def train_classifier(
    model: torch.nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    config: TrainConfig,
    desc: str,
) -> None:
    """Train `model` in place: AdamW, one-cycle (warm-up then cosine) learning rate, cross-entropy."""
    x = torch.tensor(images)
    y = torch.tensor(labels, dtype=torch.long)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(x) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=steps)
    model.train()
    for _ in tqdm(range(config.epochs), desc=desc, disable=None, file=sys.stderr, leave=False):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.batch_size):
            batch = order[start : start + config.batch_size]
            inputs = x[batch]
            if config.max_shift:
                inputs = random_shift(inputs, config.max_shift, generator)
            loss = F.cross_entropy(model(inputs), y[batch], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
