"""Accuracy benchmark: lowbit's integer-only programs side by side with float and peer quantizers.

Every contender (float torch, lowbit's float interpreter, lowbit INT8 and W4A8, onnxruntime QDQ
INT8 and W4A8, NNCF INT8, torch PT2E INT8 and W4A8) gets the same calibration inputs and is scored by the bundled model's own
`evaluate` on the whole test split; `accuracy.bench_model` builds one table per model and
`report.render_tables` turns the tables into markdown; `suites` lists every `lowbit bench
--suite`, each in its own module.
"""
