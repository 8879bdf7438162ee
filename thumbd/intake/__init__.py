"""Intake: which paths are work, watching and scanning incoming/, and when a file is complete."""
