"""ONNX graphs and the two transformers.js repo layouts (installed as `distilvit.export`; see docs/export.md)."""
