"""The data lifecycle: erasure at its owner's request and retention."""
