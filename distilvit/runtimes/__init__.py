"""Stock transformers.js running an export outside Python: in Node (`node`, through the scripts in `js/`) and in
Chromium through Playwright (`browser`, serving the demo's pages with `distilvit.serve`), plus `memory`, the peak
resident memory of a process tree while it captions.

This package knows nothing about how an export was made or what its captions should be: it hands a folder and
images to a runtime and returns what the runtime said (tokens, captions, timings).
"""
