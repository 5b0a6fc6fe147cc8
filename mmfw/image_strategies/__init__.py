"""image strategies."""
