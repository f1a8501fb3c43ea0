"""Bounds every command applies to what users hand it, and the targets `verify parity` holds exports to, in one
place (no heavy imports: the CLI reads them for its --help). docs/ state them as guarantees.
"""

from __future__ import annotations

# Images with more pixels are refused before decoding, with their size and this limit named (--max-image-pixels
# raises it). 50 megapixels: a 12000 x 4000 photograph passes, a decompression bomb (a few KB claiming
# 20000 x 20000) does not. Decoding takes 4 bytes per pixel in Python, and a browser page ~12 more as float32.
DEFAULT_MAX_PIXELS = 50_000_000

# The same-pixels target (issue 13): the model input a runtime's own decoding leads to, against Python's, in
# normalised units (-1..1 for SigLIP), per image. Browsers store canvas pixels with premultiplied alpha, which moves
# half-transparent colours by a few levels: ~0.008 at most after compositing (docs/parity.md).
PIXEL_MAX_TOLERANCE = 0.02
PIXEL_MEAN_TOLERANCE = 0.002
# fp32's decoder logits against PyTorch's at every teacher-forced step (distilvit/verify/logits.py), the largest
# |difference| over the ids reported. Measured on CPU (2026-12-08, docs/parity.md): sound exports 4.8e-7 (the 6-step tiny model, both
# layouts, onnxruntime and transformers.js in Node) and 3.8e-4 (the real SmolLM2-135M decoder, logits up to ~20);
# one planted damage moves them by 0.036 (an MLP matrix of the tiny decoder negated) to 1.7 (the projector's).
FP32_LOGITS_TOLERANCE = 1e-2

# The ship gate (export/agreement.py): a quantized dtype becomes an export's default (what transformers.js and the
# demo load) only if it keeps at least this share of fp32's greedy captions on the run's validation images.
MIN_DEFAULT_AGREEMENT = 0.9
# ... and, where the images have reference captions (the run's validation images), at least this share of fp32's
# CIDEr-D against them: captions that differ may still be as good, or all worse.
MIN_DEFAULT_CIDER_RATIO = 0.95

# The image files commands take from a folder (caption DIR, verify parity --images, export --agreement-images,
# bench quality --images): what browsers and sharp (transformers.js in Node) both decode. Training data folders
# take what `datasets`' imagefolder takes (distilvit/data/folders.py).
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")
