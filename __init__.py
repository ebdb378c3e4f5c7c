"""lowbit: graph-compiler passes from a trained model to an integer-only program.

The repository root is this package: `lowbit.compiler` (IR, op table), `lowbit.compiler.importers`
(torch.export and ONNX capture), `lowbit.runtime` (reference interpreter), `lowbit.passes`,
`lowbit.kernels`, `lowbit.models` (bundled real models) and `lowbit.cli`.
"""

__version__ = "0.1.0"
