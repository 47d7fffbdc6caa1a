"""medvl.eval: not built yet (see the issues)."""
