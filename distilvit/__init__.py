"""distilvit-web: train a prefix-conditioning image captioner and ship it to the browser.

One subpackage per stage a user runs (`data`, `modeling`, `training`, `serve`, `runtimes`, `verify`, `bench`; the
exporter and quantizer install as `distilvit.export` and `distilvit.quantize`), the contracts every stage shares as
top-level modules (`config`, `pixels`, `image_files`, `limits`, `metrics`, `transformers_js`, `atomic`, `provenance`,
`errors`), and the entry points `cli` and `quickstart`. Imports point from the entry points towards the contracts
(README's "Files"; tests/test_architecture.py). The Python API for captioning: `distilvit.modeling.caption`.
"""

__version__ = "0.1.0"
