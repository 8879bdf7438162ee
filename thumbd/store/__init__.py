"""The state database and recovery after a crash, a lost database or a power loss."""
