"""How each metric is labelled and printed: fractions as percentages (deltas in points),
cosines as plain numbers."""

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricFormat:
    label: str
    percent: bool

    def value(self, x: float) -> str:
        return f"{100 * x:.2f}%" if self.percent else f"{x:.5f}"

    def delta(self, d: float) -> str:
        return f"{100 * d:+.2f} pt" if self.percent else f"{d:+.5f}"


FORMATS: dict[str, MetricFormat] = {
    "accuracy": MetricFormat("top-1 accuracy", percent=True),
    "mean_cosine_to_float": MetricFormat("mean cosine to float", percent=False),
    "min_cosine_to_float": MetricFormat("min cosine to float", percent=False),
    "nn_agreement": MetricFormat("NN agreement", percent=True),
}


def metric_format(key: str) -> MetricFormat:
    """The format of `key`; unknown metrics print as plain numbers under their own name."""
    return FORMATS.get(key, MetricFormat(key, percent=False))
