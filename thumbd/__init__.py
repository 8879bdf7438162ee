"""thumbd: a thumbnail daemon for Linux."""

__version__ = "0.1.0"
