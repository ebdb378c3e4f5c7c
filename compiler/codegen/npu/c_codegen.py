"""The external code generator ``relax.ext.lowbit_npu``: NPU regions to one C source module.

Invariant: the packed function of a region runs its composite functions in binding order, each
by its group's kernel (``c_kernels``), so that the region's outputs are what the host would
have computed for those nodes. Intermediate tensors live in buffers the function allocates for
the call; region outputs are written into the tensors the Relax VM passes (destination-passing
style: inputs, then outputs).

``RunCodegen`` calls ``lowbit_npu_codegen(functions, options, constant_names)`` with the
functions ``MergeCompositeFunctions`` annotated ``Codegen: lowbit_npu``. The kernels come in
``options["kernels"]``: a JSON object keyed by a composite function's ``lowbit_nodes``
attribute, made by ``build`` from the plan (constants are written into the kernels, so
``constant_names`` is not used). A composite function's parameters follow the order in which
the emitters widened the group's runtime inputs, which is the anchor's input order.

The result is one ``CSourceModule`` (format ``c``) exporting ``__tvm_ffi_<global_symbol>`` per
region; ``export_library`` (and ``Executable.jit``) compile it for the host with the C compiler
and link it into the library. TVM compiles C source modules with the host C++ compiler and
no optimization flags, so the source is valid C and C++ and asks GCC for ``-O2`` itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import tvm
import tvm_ffi
from tvm import relax

from lowbit.compiler.codegen.npu.c_kernels import PRELUDE, Kernel
from lowbit.compiler.codegen.npu.patterns import CODEGEN, NODES_ATTR

REGION_HELPERS = """\
static DLTensor* lb_tensor(void* args, int32_t i) {
  TVMFFIAny* arg = ((TVMFFIAny*)args) + i;
  return arg->type_index == kTVMFFITensor
      ? (DLTensor*)((char*)arg->v_ptr + sizeof(TVMFFIObject)) : (DLTensor*)arg->v_ptr;
}

static void* lb_data(DLTensor* t) { return (char*)t->data + t->byte_offset; }

static int64_t lb_numel(DLTensor* t) {
  int64_t size = 1;
  for (int32_t i = 0; i < t->ndim; ++i) size *= t->shape[i];
  return size;
}
"""


def kernels_option(kernels: dict[str, Kernel]) -> str:
    """The ``options["kernels"]`` value: kernels keyed by their composite's node list."""
    return json.dumps({nodes: asdict(k) for nodes, k in kernels.items()})


@tvm_ffi.register_global_func(f"relax.ext.{CODEGEN}", override=True)
def lowbit_npu_codegen(functions: list[relax.Function], options: Any,
                       constant_names: Any) -> list[tvm.runtime.Module]:
    kernels = {nodes: Kernel(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in entry.items()})
               for nodes, entry in json.loads(str(options["kernels"])).items()}
    used: dict[str, Kernel] = {}
    regions = [_Region(function, kernels, used).source() for function in functions]
    source = "\n".join([PRELUDE, REGION_HELPERS, *(k.code for k in used.values()), *regions])
    symbols = [str(f.attrs["global_symbol"]) for f in functions]
    create = tvm.get_global_func("runtime.CSourceModuleCreate")
    return [create(source, "c", symbols, [])]


class _Region:
    """Writes the packed C function of one region (see the module docstring)."""

    def __init__(self, function: relax.Function, kernels: dict[str, Kernel],
                 used: dict[str, Kernel]) -> None:
        self.symbol = str(function.attrs["global_symbol"])
        body = function.body
        bindings = [b for block in body.blocks for b in block.bindings]
        outputs = body.body.fields if isinstance(body.body, relax.Tuple) else [body.body]
        self.results = [_resolve(r, bindings) for r in outputs]
        composites = {b.var.name: b.value for b in bindings
                      if isinstance(b.value, relax.Function)}
        self.steps = [b for b in bindings if not isinstance(b.value, relax.Function)]
        self.kernels = {id(b): used.setdefault(nodes, kernels[nodes]) for b in self.steps
                        if isinstance(b.value, relax.Call)
                        for nodes in [str(composites[b.value.op.name].attrs[NODES_ATTR])]}
        self.params = list(function.params)
        self.values: list[tuple[relax.Var, str]] = []  # each value's variable and C name

    def source(self) -> str:
        arity = len(self.params) + len(self.results)
        head = ["#ifdef __cplusplus", 'extern "C"', "#endif",
                f"TVM_FFI_DLL_EXPORT int32_t __tvm_ffi_{self.symbol}(void* self, void* args, "
                "int32_t num_args, void* result) {",
                f"  if (num_args != {arity}) {{",
                self._raise("ValueError", f"expected {arity} arguments"), "  }"]
        uses = _first_uses(self.params, self.steps, self.kernels)
        for i, param in enumerate(self.params):
            kernel, j = uses[i]
            head.append(self._pointer(param, kernel.input_types[j], i))
        kernel, j = uses[0]
        head.append(f"  const int64_t n = lb_numel(lb_tensor(args, 0)) / "
                    f"{kernel.input_per_sample[j]};")
        owned, runs, copies = [], [], []
        for binding in self.steps:
            if isinstance(binding.value, relax.Var):
                self.values.append((binding.var, self._name(binding.value)))
                continue
            kernel = self.kernels[id(binding)]
            size = f"(size_t)(n * {kernel.output_per_sample}) * sizeof({kernel.output_type})"
            slots = [len(self.params) + i for i, r in enumerate(self.results)
                     if r.same_as(binding.var)]
            if slots:
                head.append(self._pointer(binding.var, kernel.output_type, slots[0]))
            else:
                owned.append(self._define(binding.var))
                head.append(f"  {kernel.output_type}* {owned[-1]} = ({kernel.output_type}*)"
                            f"malloc({size} + 1);")
            out = self._name(binding.var)
            copies += [f"  memcpy(lb_data(lb_tensor(args, {slot})), {out}, {size});"
                       for slot in slots[1:]]
            args = ", ".join(self._name(a) for a in binding.value.args)
            runs.append(f"  {kernel.symbol}(n, {args}, {out});")
        frees = [f"  free({name});" for name in owned]
        if owned:
            head += [f"  if ({' || '.join(f'{name} == NULL' for name in owned)}) {{", *frees,
                     self._raise("RuntimeError", "out of memory"), "  }"]
        return "\n".join([*head, *runs, *copies, *frees, "  return 0;", "}", ""])

    def _define(self, var: relax.Var) -> str:
        name = f"v{len(self.values)}"
        self.values.append((var, name))
        return name

    def _name(self, var: relax.Expr) -> str:
        found = next((name for v, name in self.values if v.same_as(var)), None)
        if found is None:
            raise ValueError(f"NPU region {self.symbol} reads {var} before defining it")
        return found

    def _pointer(self, var: relax.Var, ctype: str, arg: int) -> str:
        """A typed pointer to the data of packed argument ``arg``."""
        return f"  {ctype}* {self._define(var)} = ({ctype}*)lb_data(lb_tensor(args, {arg}));"

    def _raise(self, kind: str, message: str) -> str:
        return (f'    TVMFFIErrorSetRaisedFromCStr("{kind}", "{self.symbol}: {message}");\n'
                "    return -1;")


def _resolve(var: relax.Expr, bindings: list[relax.Binding]) -> relax.Expr:
    """The variable a chain of ``a = b`` bindings ends at."""
    while True:
        source = next((b.value for b in bindings if b.var.same_as(var)
                       and isinstance(b.value, relax.Var)), None)
        if source is None:
            return var
        var = source


def _first_uses(params: list[relax.Var], steps: list[relax.Binding],
                calls: dict[int, Kernel]) -> dict[int, tuple[Kernel, int]]:
    """For each region parameter, the first kernel that reads it and at which position."""
    uses: dict[int, tuple[Kernel, int]] = {}
    for binding in steps:
        if not isinstance(binding.value, relax.Call):
            continue
        for j, arg in enumerate(binding.value.args):
            i = next((i for i, p in enumerate(params) if p.same_as(arg)), None)
            if i is not None and i not in uses:
                uses[i] = (calls[id(binding)], j)
    return uses


__all__ = ["kernels_option", "lowbit_npu_codegen"]
