"""lowbit.models: accuracy, deterministic training, weight cache, MiniLM fidelity and export."""

import collections
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from lowbit.models import UnknownModelError, get_model, model_names, torch_predictor
from lowbit.models import cache
from lowbit.models.bundled import PredictFn
from lowbit.models.digits_data import SPLIT_SEED, TEST_FRACTION
from lowbit.models.minilm import MAX_TOKENS, sentence_transformer, split_sentences, tokenize

aten = torch.ops.aten
KEPT_OPS = (
    aten.linear.default,
    aten.matmul.default,
    aten.layer_norm.default,
    aten.gelu.default,
    aten.softmax.int,
    aten.scaled_dot_product_attention.default,
)
COMMON_OPS = {
    "add.Tensor", "sub.Tensor", "mul.Tensor", "div.Tensor", "linear.default", "matmul.default",
    "layer_norm.default", "gelu.default", "softmax.int", "view.default", "permute.default",
    "clone.default", "mean.dim", "sym_size.int",
}  # fmt: skip
ALLOWED_OPS = {
    "digits-cnn": COMMON_OPS
    | {
        "convolution.default", "_native_batch_norm_legit_no_training.default", "relu.default",
        "hardtanh.default", "max_pool2d_with_indices.default", "<built-in function getitem>",
    },
    "digits-vit": COMMON_OPS | {"convolution.default"},
    "minilm": COMMON_OPS
    | {
        "embedding.default", "unsqueeze.default", "expand.default", "sum.dim_IntList",
        "clamp.default", "sqrt.default", "_to_copy.default", "_assert_tensor_metadata.default",
    },
}  # fmt: skip
ACCURACY_THRESHOLDS = {"digits-cnn": 0.95, "digits-vit": 0.93}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh weight cache for the whole session, so the digits models train from scratch once."""
    path = tmp_path_factory.mktemp("lowbit-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.CACHE_DIR_ENV, str(path))
        yield path


@pytest.fixture(scope="session")
def loaded(cache_dir: Path) -> dict[str, torch.nn.Module]:
    return {name: get_model(name).load() for name in model_names()}


def _predict(name: str, module: torch.nn.Module) -> PredictFn:
    model = get_model(name)
    return torch_predictor(module, model.input_names, model.output_names)


def _as_args(name: str, inputs: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(inputs[n]) for n in get_model(name).input_names)


def test_registry_lists_models_and_rejects_unknown_names() -> None:
    assert model_names() == ["digits-cnn", "digits-vit", "minilm"]
    for name in model_names():
        assert get_model(name).name == name
    with pytest.raises(UnknownModelError) as error:
        get_model("resnet")
    assert isinstance(error.value, KeyError)
    assert "resnet" in str(error.value) and "digits-cnn, digits-vit, minilm" in str(error.value)


@pytest.mark.parametrize("name", ["digits-cnn", "digits-vit"])
def test_digits_model_reaches_accuracy(name: str, loaded: dict[str, torch.nn.Module]) -> None:
    module = loaded[name]
    metrics = get_model(name).evaluate(_predict(name, module))

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    _, test_images, _, test_labels = train_test_split(
        images,
        digits.target,
        test_size=TEST_FRACTION,
        random_state=SPLIT_SEED,
        stratify=digits.target,
    )
    with torch.no_grad():
        predicted = module(torch.from_numpy(test_images)).argmax(dim=1).numpy()
    accuracy = float((predicted == test_labels).mean())

    assert accuracy >= ACCURACY_THRESHOLDS[name]
    assert metrics["accuracy"] == pytest.approx(accuracy)
    sample = get_model(name).sample_inputs(len(test_images), "test")["image"]
    np.testing.assert_array_equal(sample, test_images)


def test_digits_sample_inputs_are_real_and_deterministic() -> None:
    model = get_model("digits-cnn")
    calib = model.sample_inputs(16, "calib")["image"]
    assert calib.shape == (16, 1, 8, 8) and calib.dtype == np.float32
    assert 0.0 <= calib.min() and calib.max() <= 1.0 and calib.max() > 0.5
    np.testing.assert_array_equal(calib, model.sample_inputs(16, "calib")["image"])
    assert not np.array_equal(calib, model.sample_inputs(16, "test")["image"])
    with pytest.raises(ValueError):
        model.sample_inputs(10_000, "test")
    with pytest.raises(ValueError):
        model.sample_inputs(1, "train")


def test_cnn_training_is_deterministic(
    loaded: dict[str, torch.nn.Module],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path))
    retrained = get_model("digits-cnn").load()
    assert "trained digits-cnn" in capsys.readouterr().err
    first, second = loaded["digits-cnn"].state_dict(), retrained.state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_cache_round_trip_loads_the_same_weights(
    loaded: dict[str, torch.nn.Module], cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reloaded = get_model("digits-cnn").load()
    assert "trained" not in capsys.readouterr().err
    for key, value in loaded["digits-cnn"].state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    record = json.loads((cache_dir / "digits-cnn.json").read_text())
    assert record["metrics"]["accuracy"] >= 0.95 and record["train_seconds"] > 0
    assert not list(cache_dir.glob("*.tmp"))


def test_cache_misses_on_stale_hash_or_corrupt_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "nested"))
    state = torch.nn.Linear(3, 2).state_dict()
    cache.store("tiny", state, "key-1", {"metrics": {}})
    hit = cache.load("tiny", "key-1")
    assert hit is not None and all(torch.equal(hit[0][k], v) for k, v in state.items())
    assert cache.load("tiny", "key-2") is None
    (tmp_path / "nested" / "tiny.npz").write_bytes(b"not a zip")
    assert cache.load("tiny", "key-1") is None
    assert cache.load("absent", "key-1") is None


def test_minilm_matches_sentence_transformer(loaded: dict[str, torch.nn.Module]) -> None:
    texts = list(split_sentences("test")[:12])
    expected = sentence_transformer().encode(texts, convert_to_numpy=True)
    got = _predict("minilm", loaded["minilm"])(tokenize(texts))["embedding"]
    assert got.shape == (12, 384)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    metrics = get_model("minilm").evaluate(_predict("minilm", loaded["minilm"]))
    assert metrics["mean_cosine_to_float"] == pytest.approx(1.0, abs=1e-6)


def test_minilm_sample_inputs_are_untruncated_and_disjoint() -> None:
    calib, test = set(split_sentences("calib")), set(split_sentences("test"))
    assert len(calib) >= 256 and len(test) >= 128 and not calib & test
    inputs = get_model("minilm").sample_inputs(8, "calib")
    assert inputs["input_ids"].shape == inputs["attention_mask"].shape == (8, MAX_TOKENS)
    assert inputs["input_ids"].dtype == inputs["attention_mask"].dtype == np.int64
    sep = inputs["input_ids"] == 102  # every row keeps its closing [SEP]: nothing was truncated
    assert (sep.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(inputs["attention_mask"].sum(axis=1), sep.argmax(axis=1) + 1)


@pytest.mark.parametrize("name", ["digits-cnn", "digits-vit", "minilm"])
def test_exports_with_dynamic_batch_to_a_small_op_set(
    name: str, loaded: dict[str, torch.nn.Module]
) -> None:
    model, module = get_model(name), loaded[name]
    batch = torch.export.Dim("batch", min=1, max=1024)
    table = torch.export.default_decompositions()
    for op in KEPT_OPS:
        table.pop(op, None)
    program = torch.export.export(
        module,
        _as_args(name, model.sample_inputs(4, "calib")),
        dynamic_shapes={n: {0: batch} for n in model.input_names},
    ).run_decompositions(table)

    ops = collections.Counter(
        str(node.target).removeprefix("aten.")
        for node in program.graph.nodes
        if node.op == "call_function"
    )
    assert set(ops) <= ALLOWED_OPS[name], sorted(set(ops) - ALLOWED_OPS[name])
    args = _as_args(name, model.sample_inputs(7, "test"))
    with torch.no_grad():
        torch.testing.assert_close(program.module()(*args), module(*args), rtol=0, atol=1e-6)
