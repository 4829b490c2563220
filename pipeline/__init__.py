"""pipeline: the answer. `answer.Pipeline` triages, retrieves, builds the prompt, generates and verifies (verify/)."""
