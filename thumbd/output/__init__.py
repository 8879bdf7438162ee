"""outgoing/: thumbnail names, the atomic writer, publishing results."""
