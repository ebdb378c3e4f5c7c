"""Graph passes and the manager that runs them with verification and provenance checks."""

from lowbit.passes.dead_code import DeadCodeElimination
from lowbit.passes.manager import Pass, PassError, PassManager, PassRecord, PassResult

__all__ = ["DeadCodeElimination", "Pass", "PassError", "PassManager", "PassRecord",
           "PassResult"]
