"""dtype conversions of exported ONNX graphs (installed as `distilvit.quantize`)."""
