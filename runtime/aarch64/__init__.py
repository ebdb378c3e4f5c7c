"""aarch64 TVM libraries on a non-Arm host: a C++ runner (``runner.cc``) cross-built against
TVM's aarch64 runtime (``toolchain``) and run under qemu-aarch64 (``qemu``)."""
