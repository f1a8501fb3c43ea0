"""`distilvit-web train` and `evaluate`: turn a dataset and two pretrained models into a trained run folder.

`train` runs the whole job (run folder policy in `run_folder`, checkpoints in `checkpoints`, the Trainer and its
callbacks in `trainer`, the multi-process group in `distributed`); `device` picks device, precision and batch sizes,
`launch` starts torchrun for `--gpus N`, `lora` wraps the decoder, `collate` makes batches, `evaluate` scores a model
on a split, `curves` draws the training curves.

This package knows nothing about ONNX, quantization or the browser: its output is a run folder (train_config.json,
checkpoints, adapter/, merged/) that `distilvit.modeling.merge` and `distilvit.export` read.
"""
