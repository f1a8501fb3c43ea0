"""dtype conversions of exported ONNX graphs (installed as `distilvit.quantize`): modes (one function per dtype and
the 8-bit recipes q8 is chosen from), stored_int8 (q8: 8-bit weights in the file, dequantized once when a session
loads), kernel_paths (whether a graph's integer products depend on the CPU's int8 kernels, and the no-VNNI kernel
emulated), pair_safe (the reordering that makes a dynamic int8 graph's not) and rounding (whether a q8 or fp16 file's
weights are the fp32 file's, rounded). It knows nothing about layouts or which graph is which."""

# What the `q8` dtype means: one of quantize/modes.RECIPES, chosen by `distilvit-web bench quality` on a real decoder
# (docs/quantization.md). Here, not in modes, so the CLI's help names it without loading onnx.
Q8_RECIPE = "stored-int8"
