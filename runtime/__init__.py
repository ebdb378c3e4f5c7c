"""Runtimes for lowbit graphs: the numpy reference interpreter."""

from lowbit.runtime.interpreter import check_inputs, run_graph

__all__ = ["check_inputs", "run_graph"]
