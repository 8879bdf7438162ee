"""Decoders: one module per family of formats, each a pure function a worker process calls."""
