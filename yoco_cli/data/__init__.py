"""Real datasets, condensed-set formats and multi-formation decoding."""
