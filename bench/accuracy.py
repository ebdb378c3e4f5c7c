"""The side-by-side accuracy table of one bundled model: every contender, same calibration
inputs, scored by the model's own `evaluate` over its whole test split.

A contender that fails (a missing package, an exporter or quantizer error) becomes a row holding
the error instead of metrics; the other rows still run. MiniLM also gets nearest-neighbour
agreement, computed from the embeddings each contender produced during `evaluate`, against the
float torch model's.
"""

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from lowbit.bench.contender import Contender, float_torch
from lowbit.bench.lowbit_int8 import lowbit_float, lowbit_int8, lowbit_w4a8
from lowbit.bench.lowbit_mixed import SIZE_FRACTION, lowbit_mixed
from lowbit.bench.neighbours import neighbour_agreement
from lowbit.bench.peers_nncf import nncf_int8, nncf_int8_transformer, nncf_version
from lowbit.bench.peers_onnxruntime import onnxruntime_qdq, onnxruntime_qdq_w4a8
from lowbit.bench.peers_pt2e import torch_pt2e, torch_pt2e_w4a8
from lowbit.models import BundledModel
from lowbit.models.bundled import ArrayDict, PredictFn

FLOAT = "float (torch)"
LOWBIT_FLOAT = "lowbit float interpreter"
LOWBIT_INT8 = "lowbit INT8 integer-only"
ORT_QDQ = "onnxruntime QDQ INT8"
NNCF = "NNCF INT8"
NNCF_TRANSFORMER = "NNCF INT8 model_type=TRANSFORMER"
PT2E = "torch PT2E INT8"
LOWBIT_W4A8 = "lowbit W4A8 integer-only"
ORT_W4A8 = "onnxruntime QDQ W4A8"
PT2E_W4A8 = "torch PT2E W4A8"
LOWBIT_MIXED = f"lowbit mixed W4/W8A8 @ size {SIZE_FRACTION}"

INT8_PEERS = (ORT_QDQ, NNCF, NNCF_TRANSFORMER, PT2E)
W4A8_PEERS = (ORT_W4A8, PT2E_W4A8)
"""Peer rows per setting. NNCF has no W4A8 row (see `peers_nncf`)."""

CONTENDERS: tuple[Contender, ...] = (
    Contender(FLOAT, "the eager float32 torch module (reference)", float_torch),
    Contender(LOWBIT_FLOAT, "the captured float graph run by lowbit's numpy interpreter",
              lowbit_float),
    Contender(LOWBIT_INT8, "`compile_graph` defaults (8 bits, min/max, asymmetric activations); "
              "the integer program run by lowbit's numpy int64 interpreter", lowbit_int8),
    Contender(ORT_QDQ, "legacy ONNX export (opset 17), `quant_pre_process`, `quantize_static` "
              "QDQ, per-channel int8 weights, int8 activations, MinMax; ORT CPU session",
              onnxruntime_qdq),
    Contender(NNCF, f"NNCF {nncf_version() or '(not installed)'} `nncf.quantize` (ONNX "
              "backend) on the same opset-17 export, `nncf.Dataset` of the calibration samples, "
              "`subset_size` = all of them, default preset and options (symmetric per-channel "
              "int8 weights, symmetric 8-bit activations, fast bias correction); ORT CPU session. "
              "No W4A8 row: its ONNX backend writes only 8-bit Q/DQ", nncf_int8),
    Contender(NNCF_TRANSFORMER, "as NNCF INT8 with `model_type=nncf.ModelType.TRANSFORMER`, "
              "which NNCF documents for transformers (mixed preset: asymmetric activations; "
              "transformer ignored patterns); also run on the CNN, where in effect only the "
              "preset changes", nncf_int8_transformer),
    Contender(PT2E, "`torch.export`, torchao `prepare_pt2e` with X86InductorQuantizer default "
              "config, `convert_pt2e`; reference representation run eagerly", torch_pt2e),
    Contender(LOWBIT_W4A8, "`compile_graph` with 4-bit per-channel weights and 8-bit "
              "activations (`lowbit compile --bits w4a8`), other options at their defaults; "
              "numpy int64 interpreter", lowbit_w4a8),
    Contender(ORT_W4A8, "as onnxruntime QDQ INT8 with `weight_type=QInt4` (per-channel INT4 "
              "weight initializers, `com.microsoft` Q/DQ ops as opset 17 has no int4 Q/DQ)",
              onnxruntime_qdq_w4a8),
    Contender(PT2E_W4A8, "as torch PT2E INT8 with the weight spec's range set to [-8, 7] "
              "(4-bit codes in int8, per-channel symmetric)", torch_pt2e_w4a8),
    Contender(LOWBIT_MIXED, "HAWQ-V3 widths per conv/linear layer (Hutchinson Hessian traces, "
              "8 to 32 products, on 64 calibration samples; ILP at 60% of the INT8 weight size, "
              "the sensitivity `lowbit compile --bits mixed --budget size=0.6` uses), 8-bit "
              "activations; numpy int64 interpreter. No peer does mixed widths, so no target; "
              "issue 7's targets are in the mixed suite", lowbit_mixed),
)

OutputMetric = Callable[[np.ndarray, np.ndarray], dict[str, float]]
OUTPUT_METRICS: dict[str, OutputMetric] = {"minilm": neighbour_agreement}


@dataclass(frozen=True)
class Row:
    """One contender's result: metrics, or the error that stopped it (metrics then empty)."""

    contender: str
    metrics: dict[str, float]
    seconds: float
    test_samples: int
    error: str | None = None


@dataclass(frozen=True)
class ModelTable:
    model: str
    description: str
    calib_samples: int
    rows: tuple[Row, ...]

    @property
    def test_samples(self) -> int:
        """Test samples each successful row was scored on."""
        return max((row.test_samples for row in self.rows), default=0)

    def value(self, contender: str, metric: str) -> float | None:
        """`metric` of `contender`, or None when that row failed or lacks it."""
        row = next((r for r in self.rows if r.contender == contender), None)
        return None if row is None else row.metrics.get(metric)

    def metric_names(self) -> list[str]:
        """Metric keys in first-seen order over the rows."""
        return list(dict.fromkeys(key for row in self.rows for key in row.metrics))


def _recording(predict: PredictFn, output: str, outputs: list[np.ndarray],
               bar: tqdm) -> PredictFn:
    """`predict`, also keeping each batch's `output` and advancing `bar` by the batch size."""

    def wrapped(feeds: ArrayDict) -> ArrayDict:
        result = predict(feeds)
        outputs.append(np.asarray(result[output]))
        bar.update(len(outputs[-1]))
        return result

    return wrapped


def _run(model: BundledModel, contender: Contender,
         calib: ArrayDict) -> tuple[dict[str, float], np.ndarray]:
    """Build and evaluate `contender`: its metrics and its first output over the test split."""
    outputs: list[np.ndarray] = []
    with tqdm(desc=f"{model.name}: {contender.name}", unit="sample", file=sys.stderr,
              leave=False) as bar:
        bar.set_postfix_str("preparing")
        predict = contender.build(model, calib)
        bar.set_postfix_str("evaluating")
        metrics = model.evaluate(_recording(predict, model.output_names[0], outputs, bar))
    return metrics, np.concatenate(outputs)


def _error_text(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def bench_model(model: BundledModel, calib: ArrayDict,
                contenders: Sequence[Contender] = CONTENDERS) -> ModelTable:
    """Run every contender on `model`; the first one's outputs are the reference for the
    model's output metrics (skipped when that first contender fails)."""
    extra = OUTPUT_METRICS.get(model.name)
    reference: np.ndarray | None = None
    rows: list[Row] = []
    for index, contender in enumerate(contenders):
        start = time.perf_counter()
        try:
            metrics, outputs = _run(model, contender, calib)
            reference = outputs if index == 0 else reference
            if extra is not None and reference is not None:
                metrics |= extra(outputs, reference)
            rows.append(Row(contender.name, metrics, time.perf_counter() - start, len(outputs)))
        except Exception as err:  # noqa: BLE001 - a failing contender is a result, not a crash
            print(f"bench {model.name}: {contender.name} failed: {_error_text(err)}",
                  file=sys.stderr)
            rows.append(Row(contender.name, {}, time.perf_counter() - start, 0,
                            _error_text(err)))
    return ModelTable(model.name, model.description, len(next(iter(calib.values()))),
                      tuple(rows))
