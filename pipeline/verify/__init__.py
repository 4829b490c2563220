"""pipeline.verify: everything that decides an answer sentence stands (stage, support, terms, the trained judges)."""
