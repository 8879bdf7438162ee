"""Rendering: what to make (spec, no Pillow) and how (pipeline, decoders, colour, encoders)."""
