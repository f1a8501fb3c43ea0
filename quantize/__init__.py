"""dtype conversions of exported ONNX graphs (installed as `distilvit.quantize`): modes (one function per dtype and
the 8-bit recipes q8 is chosen from), kernel_paths (whether a graph's integer products depend on the CPU's int8
kernels, and the no-VNNI kernel emulated) and pair_safe (q8's reordering that makes them not). It knows nothing
about layouts or which graph is which."""
