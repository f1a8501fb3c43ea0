"""Bounds every command applies to what users hand it, in one place (no heavy imports: the CLI reads them for
its --help). docs/ state them as guarantees.
"""

from __future__ import annotations

# Images with more pixels are refused before decoding, with their size and this limit named (--max-image-pixels
# raises it). 50 megapixels: a 12000 x 4000 photograph passes, a decompression bomb (a few KB claiming
# 20000 x 20000) does not. Decoding takes 4 bytes per pixel in Python, and a browser page ~12 more as float32.
DEFAULT_MAX_PIXELS = 50_000_000
