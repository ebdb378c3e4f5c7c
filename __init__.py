"""lowbit: graph-compiler passes from a trained model to an integer-only program.

The repository root is this package: `lowbit.compiler` (IR, op table), `lowbit.compiler.importers`
(torch.export and ONNX capture), `lowbit.runtime` (reference interpreter), `lowbit.passes`,
`lowbit.kernels`, `lowbit.models` (bundled real models) and `lowbit.cli`. The plug-in API
(`lowbit.capture`, `lowbit.run_pass`, `lowbit.compile`, `lowbit.run`) is in `lowbit.api`.
"""

__version__ = "0.1.0"

from lowbit.api import capture, compile, run, run_pass  # noqa: E402  (after the version)

__all__ = ["__version__", "capture", "compile", "run", "run_pass"]
