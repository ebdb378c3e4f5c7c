"""Pictures of relevance: a heatmap PNG for image inputs, token-coloured HTML for text inputs.

Colour convention (both): red for positive, blue for negative relevance, white for zero,
scaled per sample by that sample's largest |relevance| so samples are readable side by side
(the numbers themselves are in ``relevance.npz`` and the JSON files). Matplotlib is used through
its Agg canvas directly, without pyplot's global state, and imported only when a heatmap is
drawn, so the rest of lowbit does not need it.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence

import numpy as np

MAX_PANELS = 16
"""Image samples drawn per heatmap (the npz holds them all)."""


def _limit(values: np.ndarray) -> float:
    peak = float(np.abs(values).max())
    return peak if peak > 0 else 1.0


def heatmap_png(images: np.ndarray, relevance: np.ndarray, titles: Sequence[str]) -> bytes:
    """Input (top row, grey, channel mean) over relevance (bottom row, summed over channels)
    for ``images[N, C, H, W]``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = min(len(images), MAX_PANELS)
    figure = Figure(figsize=(1.7 * count + 0.3, 3.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, count, squeeze=False)
    for n in range(count):
        heat = relevance[n].sum(axis=0)
        limit = _limit(heat)
        axes[0, n].imshow(images[n].mean(axis=0), cmap="gray")
        axes[0, n].set_title(titles[n], fontsize=8)
        axes[1, n].imshow(heat, cmap="bwr", vmin=-limit, vmax=limit)
        axes[1, n].set_xlabel(f"max |R| {limit:.3g}", fontsize=7)
        for axis in axes[:, n]:
            axis.set_xticks([])
            axis.set_yticks([])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def _colour(value: float, limit: float) -> str:
    strength = min(abs(value) / limit, 1.0)
    rgb = "255, 0, 0" if value >= 0 else "0, 0, 255"
    return f"rgba({rgb}, {strength:.3f})"


def tokens_line(tokens: Sequence[str], relevance: np.ndarray) -> str:
    limit = _limit(relevance)
    return "".join(f'<span class="t" style="background:{_colour(r, limit)}" '
                   f'title="{r:.4g}">{html.escape(t)}</span>'
                   for t, r in zip(tokens, relevance))


def token_names(bundled_model: str | None, ids: np.ndarray) -> list[list[str]]:
    """Readable tokens of id rows: MiniLM's WordPiece vocabulary, else ``#id``."""
    if bundled_model == "minilm":
        from lowbit.models.minilm import _tokenizer

        return [_tokenizer().convert_ids_to_tokens(row.tolist()) for row in ids]
    return [[f"#{i}" for i in row] for row in ids.tolist()]


def tokens_html(title: str, tokens: Sequence[Sequence[str]], relevance: Sequence[np.ndarray],
                positional: Sequence[np.ndarray] | None, captions: Sequence[str]) -> str:
    """One block per sample: tokens coloured by their relevance; with ``positional``, a second
    line coloured by token + positional relevance (PA-LRP's combined attribution)."""
    blocks = []
    for n, caption in enumerate(captions):
        lines = [f"<h2>{html.escape(caption)}</h2>",
                 f"<div class='line'>{tokens_line(tokens[n], relevance[n])}</div>"]
        if positional is not None:
            lines += ["<h3>token + positional relevance (PA-LRP)</h3>",
                      f"<div class='line'>{tokens_line(tokens[n], relevance[n] + positional[n])}"
                      "</div>"]
        blocks.append("\n".join(lines))
    return ("<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title>\n<style>"
            "body{font-family:sans-serif} .line{line-height:2em}"
            " span.t{font-family:monospace;padding:2px 3px;margin:1px;border-radius:3px}"
            "</style></head><body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p>red: positive relevance, blue: negative; "
            "scaled per line by its largest |relevance|; hover a token for its value.</p>\n"
            + "\n".join(blocks) + "\n</body></html>\n")
