"""The self-contained HTML compile report: every figure from ``report.json``, pictures
embedded as base64 PNG, no external file or script."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from lowbit.report.plots import latency_png, sqnr_png

TABLE_ROWS = 40
STYLE = ("body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
         "padding:2px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
         ".line{line-height:2em}span.t{font-family:monospace;padding:2px 3px;margin:1px;"
         "border-radius:3px}img{max-width:100%}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape("" if value is None else str(value))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def image(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _accuracy(figures: Mapping[str, Any]) -> str:
    measured = figures["accuracy"]
    if "integer" in measured:
        metrics = sorted(measured["float"])
        rows = [[m, measured["float"][m], measured["integer"][m],
                 measured["integer"][m] - measured["float"][m]] for m in metrics]
        return (f"<p>On {html.escape(measured['data'])}:</p>"
                + table(["metric", "float", "integer program", "difference"], rows))
    rows = [[name, entry.get("relative_error"), entry.get("top1_agreement")]
            for name, entry in measured["outputs"].items()]
    return (f"<p>Integer program against float on {html.escape(measured['data'])}:</p>"
            + table(["output", "max error / float range", "top-1 agreement"], rows))


def _nodes(figures: Mapping[str, Any]) -> str:
    rows = figures["nodes"]
    shown = [[r["node"], r["op"], r["sqnr_db"], r["relative_error"], r["dtype"],
              r["weight_bits"], r["scale"], r["kernels"], 1e3 * r["seconds"]]
             for r in rows[:TABLE_ROWS]]
    more = (f"<p>{len(rows) - TABLE_ROWS} better nodes are in report.json.</p>"
            if len(rows) > TABLE_ROWS else "")
    order = sorted(rows, key=lambda r: r["order"])
    return (image(sqnr_png([r["node"] for r in order], [r["sqnr_db"] for r in order]),
                  "SQNR per node")
            + table(["node", "op", "SQNR (dB)", "max error / range", "codes", "weight bits",
                     "scale", "integer kernels", "interpreter ms"], shown) + more)


def render(figures: Mapping[str, Any], relevance_rule: str, relevance_fragment: str,
           extra_images: Mapping[str, bytes]) -> str:
    settings = table(["setting", "value"], list(figures["settings"].items()))
    latency = {k: v for k, v in figures["latency_seconds"].items() if k != "batch"}
    passes = table(["pass", "changed", "nodes before", "nodes after"],
                   [[p["name"], p["changed"], p["nodes_before"], p["nodes_after"]]
                    for p in figures["passes"]])
    sections = [
        f"<h1>lowbit compile report: {html.escape(figures['model'])}</h1>",
        f"<p>source <code>{html.escape(figures['source'])}</code>, lowbit "
        f"{html.escape(figures['lowbit'])}. Every number below is also in report.json.</p>",
        settings,
        "<h2>Accuracy</h2>", _accuracy(figures),
        "<h2>Latency</h2>",
        f"<p>Median over repeats, batch {figures['latency_seconds']['batch']}, this machine.</p>",
        table(["backend", "ms"], [[k, 1e3 * v] for k, v in latency.items()]),
        image(latency_png(latency), "latency per backend") if latency else "",
        "<h2>Overflow</h2>", f"<p>{html.escape(figures['overflow']['summary'])}</p>",
        "<h2>Passes</h2>", passes,
        "<h2>Why is it worse or slower? Every node, worst first</h2>",
        "<p>Float graph against the integer program on the same inputs: SQNR and max error "
        "of each node's integer twin, the codes' dtype, weight bits, output scale, the integer "
        "kernels that implement it and their interpreter time.</p>", _nodes(figures),
        f"<h2>Relevance of one sample ({html.escape(relevance_rule)})</h2>",
        "<p>LRP of the integer program on the float graph's nodes; red positive, blue "
        "negative.</p>", relevance_fragment,
        *(f"<h2>{html.escape(name)}</h2>" + image(png, name)
          for name, png in extra_images.items()),
    ]
    return ("<!doctype html>\n<html><head><meta charset='utf-8'>"
            f"<title>lowbit: {html.escape(figures['model'])}</title><style>{STYLE}</style>"
            "</head><body>\n" + "\n".join(sections) + "\n</body></html>\n")
