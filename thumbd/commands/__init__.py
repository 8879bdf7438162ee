"""Commands that talk to a daemon or its state: stop, status, retry, redo. None imports Pillow."""
