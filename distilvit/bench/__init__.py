"""`distilvit-web bench`: measurements, never pass/fail. `runtime` times captions in every runtime (one run each by
`runners`) against the hardware's floor (`floor`); `variants` builds and exports the architectures compared and
`peer` the one transformers.js runs today; `report` writes the tables and the plot; `train` measures training
steps; `quality` compares quantization recipes' captions with fp32's, and `text_fidelity` how each reads real
prose against fp32.

This package owns no contract: it calls the stages as a user would and records what they took.
"""
