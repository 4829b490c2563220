"""train: the small models' training jobs (embedder, reranker, judges, triage's learned layer) and calibration."""
