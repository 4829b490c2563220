# medcite: `make demo` sets up .venv, builds the full index from ../shared/data, trains triage's learned layer and
# the judges of the verification stage (each a no-op once done), searches the index and answers a question with
# citations, verified by the trained judges; `make test` sets up .venv and runs the test suite (what CI runs, via .ci/run).
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTHON ?= python3
QUESTION ?= What are the treatments for gout?

.PHONY: setup lock demo test test-fast lint bench finetune retriever entailment models eval-quick clean

# Every dependency from requirements.lock: one version and one file each, checked against its sha256, nothing resolved
# at install time (refresh with `make lock`; torch in it is the CPU build on this machine's disk). Then llama-cpp-python
# from the wheel scripts/llama-cpp-wheel.sh compiled for this CPU from its hash-checked source (once, ~4 min; cached in
# ~/.cache/medcite/wheels), and the project itself, editable.
$(STAMP): pyproject.toml constraints.txt requirements.lock scripts/llama-cpp-wheel.sh scripts/browser.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q pip==26.3
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install -q --no-deps "$$(bash scripts/llama-cpp-wheel.sh $(BIN)/pip)"
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	bash scripts/browser.sh >/dev/null  # Debian's chromium for the page's browser tests (apt, as root)
	touch $(STAMP)

setup: $(STAMP)

# Refresh requirements.lock after changing pyproject.toml's dependencies or constraints.txt (then commit it).
lock: setup
	$(BIN)/python scripts/lock.py $(BIN)/pip

# Each stage is resumable and a no-op once done; every progress line names its stage and the run's time so far
# (core/progress.py: MEDCITE_STAGE, MEDCITE_RUN_START).
demo: export MEDCITE_RUN_START := $(shell date +%s)
demo: setup
	MEDCITE_STAGE="1/5 index" $(BIN)/medcite index --config configs/index.yaml
	MEDCITE_STAGE="2/5 triage" $(BIN)/medcite train-triage
	MEDCITE_STAGE="3/5 judges" $(BIN)/medcite train-judges all --config configs/judges.yaml
	MEDCITE_STAGE="4/5 search" $(BIN)/medcite search "$(QUESTION)" -k 3
	MEDCITE_STAGE="5/5 answer" $(BIN)/medcite ask "$(QUESTION)" --config configs/serve.yaml

test: setup
	@bash scripts/browser.sh >/dev/null
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: setup
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python benchmarks/retrieval.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/load.py

finetune: setup
	$(BIN)/medcite finetune --config configs/finetune-smollm2.yaml

# The domain-tuned retriever (README "Retrieval training"): embedder, the index built with it, then the reranker.
# serve / ask / search use it with --index artifacts/index-tuned (not by default: no better on consumer questions).
retriever: setup
	$(BIN)/medcite train-retriever embedder --config configs/retriever.yaml
	$(BIN)/medcite index --config configs/index.yaml --embedder artifacts/retriever/embedder --out artifacts/index-tuned
	$(BIN)/medcite train-retriever reranker --config configs/retriever.yaml

# Question entailment (docs/retrieval.md): the entailment cross-encoder and the index's question list, ~17 min here.
# Off by default (no better on consumer questions); serve with `rerank.entailment: artifacts/retriever/entailment`.
entailment: setup
	$(BIN)/medcite train-retriever entailment --config configs/retriever.yaml

# The trained judges of the verification stage (README "Trust"): faithfulness, then answerhood; resumable; ~40 min
# here. serve / ask / eval use artifacts/judges by themselves once it exists. Then triage's learned layer (what
# `make demo` trains: a no-op when it is up to date; ~6 min in bf16 where the CPU has it, resumable): serve / ask
# pick artifacts/triage up the same way.
models: setup
	$(BIN)/medcite train-judges all --config configs/judges.yaml
	$(BIN)/medcite train-triage

eval-quick: setup
	$(BIN)/medcite eval --quick

clean:
	rm -rf $(VENV) artifacts
