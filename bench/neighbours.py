"""Nearest-neighbour agreement of two embedding sets of the same sentences (MiniLM).

For each sentence, its nearest other sentence by cosine similarity is found once under each
embedding; the metric is the fraction of sentences whose nearest neighbour is the same.
"""

import numpy as np


def nearest_neighbours(embeddings: np.ndarray) -> np.ndarray:
    """Index of each row's most cosine-similar other row."""
    rows = np.asarray(embeddings, dtype=np.float64)
    unit = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    return similarity.argmax(axis=1)


def neighbour_agreement(embeddings: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """{"nn_agreement": fraction of rows whose nearest neighbour matches `reference`'s}."""
    if embeddings.shape != reference.shape or len(reference) < 2:
        raise ValueError(f"need two equal-shaped sets of >= 2 embeddings, got "
                         f"{embeddings.shape} and {reference.shape}")
    same = nearest_neighbours(embeddings) == nearest_neighbours(reference)
    return {"nn_agreement": float(same.mean())}
