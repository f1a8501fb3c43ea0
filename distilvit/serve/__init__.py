"""Put exports in front of people: `served_site` maps URLs to the demo page, the pinned transformers.js browser
files and the exports; `server` serves that map locally (`distilvit-web serve`); `site` writes it as a folder any
static host serves (`distilvit-web site`); `upload` mirrors an export to the Hugging Face Hub.

This package knows nothing about the models' contents beyond the export's file contract (export_config.json); it
never runs a model.
"""
