"""Seeded chaos runs of the real daemon against a model (docs/chaos.md)."""
