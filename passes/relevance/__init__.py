"""Layer-wise relevance propagation on lowbit graphs, with relevance mapped to captured nodes.

``explain(graph, feeds, composite_named("epsilon-plus-flat"), Objective())`` runs the graph
once, propagates relevance backward with the composite's rules (``rules.RELEVANCE_TABLE`` is
the relevance column of the op table) and reports it per graph input, per captured node
(through ``node.origin``) and per layer's conservation.
"""

from lowbit.passes.relevance.attribution import Explanation, LayerCheck, NodeRelevance, explain
from lowbit.passes.relevance.composites import COMPOSITES, Composite, Entry, composite_named
from lowbit.passes.relevance.engine import Propagation, propagate
from lowbit.passes.relevance.objectives import Objective
from lowbit.passes.relevance.rules import LINEAR_RULES, NAMED_RULES, RELEVANCE_TABLE

__all__ = ["COMPOSITES", "Composite", "Entry", "Explanation", "LINEAR_RULES", "LayerCheck",
           "NAMED_RULES", "NodeRelevance", "Objective", "Propagation", "RELEVANCE_TABLE",
           "composite_named", "explain", "propagate"]
