"""The model side of the fine-tuning job: tokenizer and base model (fp32/bf16, or NF4 for QLoRA), the reserved pad
token (never a new token, never resized embeddings), LoRA on attention and MLP, and the preflight checks that stop
a run before it trains on the wrong labels or the wrong stop token."""

from __future__ import annotations

from typing import Any

from core.errors import ConfigError, DataError, ModelLoadError
from finetune.config import FinetuneConfig
from generator.hf import nf4_config
from generator.local import stop_token_ids

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
MERGED_STAMP = "medcite_merged.json"


# Reserved padding tokens some model families ship for exactly this purpose (Llama 3.x: id 128004).
RESERVED_PAD_TOKENS = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]")


def choose_pad_token(tokenizer, requested: str = "") -> str:
    """The padding token, always one already in the vocabulary: the requested one, else a reserved pad token,
    else the tokenizer's pad if it is not eos, else the first special token that neither ends turns nor
    appears in the chat template. Raises ConfigError when there is none (never adds a token)."""
    vocab = tokenizer.get_vocab()
    if requested:
        if requested not in vocab:
            raise ConfigError(f"pad_token {requested!r} is not in the tokenizer's vocabulary (tokens are never added)")
        return requested
    for name in RESERVED_PAD_TOKENS:
        if name in vocab:
            return name
    eos = tokenizer.eos_token
    template = tokenizer.chat_template or ""
    if tokenizer.pad_token and tokenizer.pad_token != eos and tokenizer.pad_token not in template:
        return tokenizer.pad_token
    specials = sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1])
    for name, _ in specials:
        if name not in (eos, tokenizer.bos_token) and name not in template:
            return name
    raise ConfigError("the tokenizer has no reserved pad token and no unused special token; set pad_token to an "
                      "existing token that never appears in training text")


def preflight_tokens(tokenizer, generation_config) -> list[int]:
    """Stop the job early, with one line, on token setups that silently ruin a fine-tune. Returns stop ids."""
    stops = stop_token_ids(tokenizer, getattr(generation_config, "eos_token_id", None))
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in stops:
        raise ConfigError(f"pad token {tokenizer.pad_token!r} is an end-of-turn/eos token: padding would be "
                          "indistinguishable from the end of an answer (set pad_token)")
    if not tokenizer.chat_template:
        raise ConfigError("the tokenizer has no chat template; fine-tuning needs the model's own chat format")
    marker = "MEDCITE_PREFLIGHT_ANSWER"
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}],
                                        tokenize=True, return_dict=True)["input_ids"]
    text_end = len(tokenizer.apply_chat_template([{"role": "user", "content": "q"}], tokenize=True,
                                                 add_generation_prompt=True, return_dict=True)["input_ids"])
    if not any(i in stops for i in ids[text_end:]):
        raise ConfigError("the chat template does not close the assistant turn with an end-of-turn token "
                          f"({', '.join(tokenizer.convert_ids_to_tokens(stops))}); the model would never learn to stop")
    return stops


def preflight_labels(dataset, stops: list[int], max_length: int, name: str, expected: int) -> None:
    """Every example's labels must end with an end-of-turn token: TRL truncates at max_length, and a cut-off
    end-of-turn teaches the model to run on (the runaway lists of the write-ups). TRL drops examples whose
    answer was cut away entirely; those count as failures too."""
    if len(dataset) < expected:
        raise DataError(f"{expected - len(dataset)} {name} example(s) would lose their end-of-turn token to "
                        f"truncation at max_length={max_length} (their whole answer is cut); raise max_length or "
                        "lower data.max_answer_tokens / data.prompt_tokens")
    bad = []
    for n, row in enumerate(dataset):
        labels = [t for t in row["labels"] if t != -100]
        if not labels or not any(t in stops for t in labels[-2:]):
            bad.append(n)
    if bad:
        raise DataError(f"{len(bad)} {name} example(s) would lose their end-of-turn token to truncation at "
                        f"max_length={max_length} (first: row {bad[0]}); raise max_length or lower "
                        "data.max_answer_tokens / data.prompt_tokens")


def preflight_adapter(model) -> None:
    """The adapter must hold LoRA weights only: no trainable or saved embeddings / lm_head (a 3 GB 'adapter')."""
    bad = [n for n, p in model.named_parameters() if p.requires_grad and ("lora_" not in n)]
    if bad:
        raise ConfigError(f"non-LoRA parameters would be trained and saved in the adapter: {', '.join(bad[:3])}")
    for cfg in getattr(model, "peft_config", {}).values():
        if getattr(cfg, "modules_to_save", None):
            raise ConfigError(f"adapter would save whole modules {cfg.modules_to_save}; medcite never does")


def load_tokenizer(source: str, cfg: FinetuneConfig):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load the tokenizer of {source!r}: {str(e).splitlines()[0]}") from None
    tok.pad_token = choose_pad_token(tok, cfg.pad_token)
    tok.padding_side = "right"
    return tok


def load_model(source: str, cfg: FinetuneConfig):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, cfg.dtype)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if cfg.quantization == "nf4":
        kwargs["quantization_config"] = nf4_config(dtype)
        if torch.cuda.is_available():  # a 4-bit base is placed at load: on this process's own GPU under DDP
            from accelerate import PartialState

            kwargs["device_map"] = {"": PartialState().local_process_index}
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"could not load base model {source!r}: {str(e).splitlines()[0]}") from None
    if cfg.quantization == "nf4":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return model


def lora_model(model, cfg: FinetuneConfig):
    """Wrap the base in LoRA adapters on the configured projections, LoRA weights in fp32 (TRL casts them to bf16
    again on an NF4 base: the QLoRA recipe, and why a 3B QLoRA adapter is 23.2 MiB rather than 46)."""
    import torch
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    try:
        model = get_peft_model(model, lora)
    except ValueError as e:
        raise ConfigError(f"LoRA target modules {list(cfg.target_modules)} do not fit this model: "
                          f"{str(e).splitlines()[0]}") from None
    for _, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.float32)
    preflight_adapter(model)
    return model
