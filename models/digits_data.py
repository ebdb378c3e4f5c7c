"""scikit-learn's bundled 8x8 digits with lowbit's fixed stratified train/test split."""

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from lowbit.models.bundled import ArrayDict, PredictFn

TEST_FRACTION = 0.25
SPLIT_SEED = 0
EVAL_BATCH = 256
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


@dataclass(frozen=True)
class DigitsSplit:
    """Read-only arrays: images float32 [N,1,8,8] in [0,1], labels int64 [N]."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


@lru_cache(maxsize=1)
def digits_split() -> DigitsSplit:
    """The fixed split: 25% of the 1797 digits held out, stratified by class."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    parts = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    for array in parts:
        array.setflags(write=False)
    train_images, test_images, train_labels, test_labels = parts
    return DigitsSplit(train_images, train_labels, test_images, test_labels)


def sample_images(count: int, split: str) -> ArrayDict:
    """The first `count` images of split "calib" (drawn from the training set) or "test"."""
    data = digits_split()
    pools = {"calib": data.train_images, "test": data.test_images}
    if split not in pools:
        raise ValueError(f"unknown split {split!r}; expected 'calib' or 'test'")
    pool = pools[split]
    if not 0 <= count <= len(pool):
        raise ValueError(f"count must be in [0, {len(pool)}] for split {split!r}, got {count}")
    return {INPUT_NAME: pool[:count].copy()}


def evaluate_accuracy(predict: PredictFn) -> dict[str, float]:
    """Top-1 accuracy of `predict`'s logits over the whole test split, fed in batches."""
    data = digits_split()
    correct = 0
    for start in range(0, len(data.test_images), EVAL_BATCH):
        images = data.test_images[start : start + EVAL_BATCH].copy()
        logits = np.asarray(predict({INPUT_NAME: images})[OUTPUT_NAME])
        if logits.shape != (len(images), 10):
            raise ValueError(f"expected logits of shape {(len(images), 10)}, got {logits.shape}")
        labels = data.test_labels[start : start + EVAL_BATCH]
        correct += int((logits.argmax(axis=1) == labels).sum())
    return {"accuracy": correct / len(data.test_images)}
