"""index_build."""
