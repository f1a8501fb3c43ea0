"""distilvit-web: train a prefix-conditioning image captioner and ship it to the browser."""

__version__ = "0.1.0"
