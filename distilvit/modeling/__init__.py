"""The captioner itself: how it is built, what it is told, what it may say, and how it captions in PyTorch.

`model` builds the LLaVA-layout captioner (a SigLIP encoder, a projector, a Llama-family decoder) from two models,
`prompt` is the fixed token prefix every runtime starts from, `caption_vocab` the tokens a run's captions use (and
the one validator of `caption_vocab.json`), `tiny` and `realsize` build offline models from configs (the tiny preset
and the default architecture's shapes, `hub_configs/`), `merge` folds a run's LoRA adapter into a standalone model
folder, and `caption` loads such a folder and captions images with it (the public Python API, `load_captioner`).

This package knows nothing about datasets, training loops, ONNX or the browser: it reads and writes model folders.
"""
