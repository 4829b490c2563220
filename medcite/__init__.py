"""medcite: retrieval-augmented medical question answering with cited passages. The CLI lives in medcite.cli."""
