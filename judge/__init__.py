"""The verification stage's trained judges, loaded once and shared by serving, fine-tuning targets and evaluation:
`judge.models.Judges` (faithfulness and answerhood cross-encoders with their calibrations). Trained by
`medcite train-judges` (retriever_train/judges.py)."""
