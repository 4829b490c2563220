"""The fine-tuning job: data preparation, QLoRA with TRL, probe scoring, report."""
