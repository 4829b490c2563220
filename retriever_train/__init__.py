"""retriever_train: the domain-tuned embedder and the cross-encoder reranker (medcite train-retriever)."""
