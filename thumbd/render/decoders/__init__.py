"""Decoders for formats Pillow does not read itself."""
