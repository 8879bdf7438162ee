"""The daemon's lifecycle and what serves it: signals, logs, health, metrics, systemd."""
