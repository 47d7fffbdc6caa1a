"""medvl.train: not built yet (see the issues)."""
