"""`distilvit-web verify parity`: the same images captioned by PyTorch, onnxruntime and stock transformers.js (Node
and Chromium) compared token by token and pixel by pixel (`parity`) and by their decoder logits at PyTorch's tokens (`logits`), on
the images `images` picks, judged by the pass rules in `targets`, written up by `report` (JSON and Markdown).

This package knows nothing about training: it takes a merged model folder and its export.
"""
