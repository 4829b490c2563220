"""The fine-tuning job: (Q)LoRA with TRL's SFTTrainer, checkpoints chosen by generated answers, not by loss.

    medcite finetune --config configs/finetune-smollm2.yaml      # prepare data (if needed), train, pick, write
    medcite finetune prepare --config ...                       # data only
    medcite finetune merge --adapter artifacts/adapters/<run> --out artifacts/merged/<run>

Stages: (1) preflight: pad token (reserved or an existing unused special token; never added), pad != eos, the
chat template ends turns with a stop token; (2) prepared data (finetune/data.py), conversational
prompt-completion rows, so TRL trains on completion tokens only; every label sequence must still end with the
end-of-turn token after TRL's truncation; (3) LoRA on q,k,v,o,gate,up,down over a float or NF4 base, nothing
on embeddings or lm_head; (4) at every evaluation the ProbeCallback answers a fixed held-out probe set with the
deployment decoding and scores the answers (core/quality.py); (5) the best checkpoint by that score is
copied, with its report and plot, to <out>/<run_name>/ in one atomic rename.

A killed job rerun with the same config resumes from its last checkpoint (Trainer state, optimizer, RNG and the
probe history in metrics.jsonl).

Several GPUs: the same job under `accelerate launch` runs DDP, one process per GPU (configs/accelerate-ddp.yaml;
README "Fine-tuning on several GPUs"). Rank 0 prepares the data, scores probes and publishes the adapter; every
rank trains and records its final LoRA weights' checksum in <work>/rank-<i>.json (equal on all ranks: DDP keeps
the replicas in step).

    accelerate launch --config_file configs/accelerate-ddp.yaml -m medcite finetune --config configs/finetune-llama3.2-3b.yaml
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import journal
from core.config import config_to_dict
from core.errors import ConfigError, DataError, ModelLoadError, QualityError
from core.files import atomic_write_json, check_run_identity, last_complete_checkpoint, staging_dir
from core.quality import answer_metrics, quality_score, summarize
from finetune.config import FinetuneConfig
from finetune.data import data_fingerprint, load_rows, prepare
from finetune.model import load_model, load_tokenizer, lora_model, preflight_labels, preflight_tokens
from generator.hf import HFGenerator, resolve_model
from generator.prompt import ADAPTER_STAMP, PROMPT_VERSION
from retriever.index_dir import read_manifest

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
MERGED_STAMP = "medcite_merged.json"


def run_dir(cfg: FinetuneConfig) -> Path:
    return Path(cfg.work_dir) / cfg.run_name


# --- preflight -------------------------------------------------------------------------------------------------------


# --- probe-set scoring -----------------------------------------------------------------------------------------------

def probe_rows(eval_rows: list[dict], size: int) -> list[dict]:
    """A fixed probe set: up to `size` eval examples spread over sources (round-robin in file order)."""
    by_source: dict[str, list[dict]] = {}
    for r in eval_rows:
        by_source.setdefault(r["source"], []).append(r)
    picked: list[dict] = []
    while len(picked) < size and any(by_source.values()):
        for source in sorted(by_source):
            if by_source[source] and len(picked) < size:
                picked.append(by_source[source].pop(0))
    return picked


def score_probes(generator, probes: list[dict], weights: dict[str, float]) -> tuple[dict, list[dict]]:
    """Answer every probe with the deployment decoding; returns (summary incl. quality, per-probe answers)."""
    answers, rows = [], []
    for p in probes:
        gen = generator.generate(p["prompt"])
        ref = p["completion"][0]["content"]
        m = answer_metrics(gen.text, ref, gen.stop_reason, gen.completion_tokens)
        rows.append(m)
        answers.append({"id": p["id"], "source": p["source"], "answer": gen.text, "stop_reason": gen.stop_reason,
                        **{k: round(v, 4) for k, v in m.items()}})
    summary = summarize(rows)
    summary["quality"] = quality_score(summary, weights)
    return summary, answers


def read_history(path: Path) -> dict[int, dict]:
    """Rows of a journal by step; a rerun after a kill may repeat a step, and the last row wins."""
    return {int(r["step"]): r for r in journal.read(path)}


def make_probe_callback(cfg: FinetuneConfig, tokenizer, probes: list[dict], out: Path, log: Callable[[str], None]):
    from transformers import TrainerCallback

    class ProbeCallback(TrainerCallback):
        """At every evaluation: answer the probe set, score it, log it beside the losses (metrics.jsonl)."""

        def __init__(self) -> None:
            self.last_train: dict[str, float] = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs and state.is_world_process_zero:
                self.last_train = {k: logs[k] for k in ("loss", "mean_token_accuracy", "learning_rate") if k in logs}
                journal.append(out / "train_log.jsonl", {"step": state.global_step, "epoch": state.epoch,
                                                        **self.last_train})
                log(f"step {state.global_step}/{state.max_steps}: loss {logs['loss']:.4f}  token accuracy "
                    f"{logs.get('mean_token_accuracy', float('nan')):.3f}")

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                # always keep the final weights; judge them too unless the last evaluation was under half an
                # interval ago (a probe pass costs minutes on CPU and those weights barely moved since)
                control.should_save = True
                since = state.global_step % args.eval_steps
                control.should_evaluate = args.eval_strategy != "no" and (since == 0 or since >= args.eval_steps / 2)
            return control

        def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
            import torch

            if not state.is_world_process_zero:  # the probes are answered once; other ranks wait at the next step
                return
            t = time.perf_counter()
            was_training = model.training
            model.eval()
            gen = HFGenerator(model, tokenizer, cfg.run_name, cfg.decoding, queue_size=0)
            with torch.inference_mode():
                summary, answers = score_probes(gen, probes, cfg.quality_weights)
            if was_training:
                model.train()
            row = {"step": state.global_step, "eval_loss": (metrics or {}).get("eval_loss"),
                   "eval_mean_token_accuracy": (metrics or {}).get("eval_mean_token_accuracy"),
                   "train_loss": self.last_train.get("loss"), **summary, "probe_seconds": round(time.perf_counter() - t, 1)}
            journal.append(out / "metrics.jsonl", row)
            (out / "probes").mkdir(exist_ok=True)
            (out / "probes" / f"step-{state.global_step}.json").write_text(json.dumps(answers, indent=1))
            log(f"step {state.global_step}: eval_loss {row['eval_loss']:.4f}  quality {summary['quality']:.4f}  "
                f"F1 {summary.get('token_f1', 0):.3f}  end-of-turn {summary['end_of_turn']:.2f}  "
                f"runaway {summary['runaway_list']:.2f}")

    return ProbeCallback()


# --- the job ---------------------------------------------------------------------------------------------------------


def sft_config(cfg: FinetuneConfig, output_dir: Path, has_eval: bool):
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    return SFTConfig(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.gradient_accumulation,
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1, weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps, eval_strategy="steps" if has_eval else "no", eval_steps=cfg.eval_steps,
        save_strategy="steps", save_steps=cfg.eval_steps, save_total_limit=None, seed=cfg.seed, data_seed=cfg.seed,
        # no native bf16 on this CPU: bf16 matmuls run ~60x slower, so CPU runs stay fp32
        bf16=on_gpu and cfg.dtype == "bfloat16", fp16=False, use_cpu=not on_gpu,
        max_length=cfg.max_length, completion_only_loss=True, packing=False,
        report_to=[], disable_tqdm=True, dataloader_num_workers=0, save_only_model=False, remove_unused_columns=True,
        # transformers 5 renamed it activation_checkpointing; TRL still reads the old name, so pass it only when on
        **({"gradient_checkpointing": True} if cfg.gradient_checkpointing else {}))


def build_trainer(cfg: FinetuneConfig, model, tokenizer, train_rows: list[dict], eval_rows: list[dict], output_dir: Path,
                  callbacks=()):
    """TRL SFTTrainer on conversational prompt-completion rows (loss on completion tokens only)."""
    import datasets
    from transformers import PrinterCallback
    from trl import SFTTrainer

    datasets.disable_progress_bars()
    Dataset = datasets.Dataset
    keep = ("prompt", "completion")
    train = Dataset.from_list([{k: r[k] for k in keep} for r in train_rows])
    evald = Dataset.from_list([{k: r[k] for k in keep} for r in eval_rows]) if eval_rows else None
    trainer = SFTTrainer(model=model, args=sft_config(cfg, output_dir, evald is not None), train_dataset=train,
                         eval_dataset=evald, processing_class=tokenizer, callbacks=list(callbacks))
    trainer.remove_callback(PrinterCallback)  # our callback logs one readable line per logging step instead
    return trainer


def ensure_data(cfg: FinetuneConfig, count_tokens: Callable[[str], int], load_retriever: Callable[[str], Any],
                log: Callable[[str], None]) -> Path:
    """Prepared data for this config, built once (a rerun with the same data settings reuses it)."""
    data = run_dir(cfg) / "data"
    report = data / "data_report.json"
    wanted = config_to_dict(cfg.data)
    if report.is_file():
        saved = json.loads(report.read_text())
        if saved.get("config") == wanted and saved.get("prompt_version") == PROMPT_VERSION and \
                saved.get("fingerprint") == data_fingerprint(data) and \
                saved.get("retriever") == read_manifest(cfg.data.index)["fingerprint"]:
            log(f"data: reusing {data} ({saved['split']})")
            return data
        log("data: settings changed since the last preparation; preparing again")
        report.unlink()
    prepare(cfg.data, load_retriever(cfg.data.index), count_tokens, data, log)
    return data


def run_identity(cfg: FinetuneConfig, data: Path) -> dict:
    """What the checkpoints depend on: the whole config (less where the adapter goes and whether a worse one may
    be published), the prepared data's fingerprint (it names the index it was built from) and the thread count."""
    d = config_to_dict(cfg)
    for k in ("out", "allow_worse"):
        d.pop(k, None)
    report = json.loads((data / "data_report.json").read_text())
    return {**{f"config.{k}": v for k, v in d.items()}, "data_fingerprint": data_fingerprint(data),
            "index_fingerprint": report.get("retriever"), "prompt_version": PROMPT_VERSION}


def run(cfg: FinetuneConfig, load_retriever: Callable[[str], Any], log: Callable[[str], None] = print,
        prepare_only: bool = False) -> Path:
    """The whole job; returns the adapter directory (or the data directory with prepare_only)."""
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from accelerate import PartialState

    # One process unless started by `accelerate launch` / torchrun. cpu=True on a CPU host: without it PartialState
    # does not join the gloo group under torchrun (accelerate 1.x), and every rank would think it is rank 0.
    ranks = PartialState(cpu=not torch.cuda.is_available())
    source, base_name = resolve_model(cfg.model, "", log)
    tokenizer = load_tokenizer(source, cfg)
    with ranks.main_process_first():  # rank 0 prepares the data; the others then find it prepared
        data = ensure_data(cfg, lambda t: len(tokenizer(t, add_special_tokens=False)["input_ids"]), load_retriever,
                           log if ranks.is_main_process else lambda _: None)
    if prepare_only:
        return data
    train_rows, eval_rows = load_rows(data / "train.jsonl"), load_rows(data / "eval.jsonl")
    if not train_rows:
        raise DataError(f"{data / 'train.jsonl'} is empty; raise data.size")
    probes = probe_rows(eval_rows, cfg.probe_size)
    work = run_dir(cfg)
    ckpts = work / "checkpoints"
    with ranks.main_process_first():
        ckpts.mkdir(parents=True, exist_ok=True)
        check_run_identity(work / "run.json", run_identity(cfg, data), "fine-tuning run")
        if ranks.is_main_process:
            (work / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))

    torch.manual_seed(cfg.seed)
    model = load_model(source, cfg)
    stops = preflight_tokens(tokenizer, model.generation_config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    history = read_history(work / "metrics.jsonl")
    if 0 not in history and ranks.is_main_process:  # the base model's answers: the bar every checkpoint must clear
        log(f"scoring the base model on {len(probes)} probe prompts")
        model.eval()
        with torch.inference_mode():
            summary, answers = score_probes(HFGenerator(model, tokenizer, base_name, cfg.decoding, 0), probes,
                                            cfg.quality_weights)
        journal.append(work / "metrics.jsonl", {"step": 0, "eval_loss": None, "train_loss": None, **summary})
        (work / "probes").mkdir(exist_ok=True)
        (work / "probes" / "step-0.json").write_text(json.dumps(answers, indent=1))
        log(f"base: quality {summary['quality']:.4f}  F1 {summary.get('token_f1', 0):.3f}")
    ranks.wait_for_everyone()
    model = lora_model(model, cfg)
    trainer = build_trainer(cfg, model, tokenizer, train_rows, eval_rows, ckpts,
                            [make_probe_callback(cfg, tokenizer, probes, work, log)])
    preflight_labels(trainer.train_dataset, stops, cfg.max_length, "train", len(train_rows))
    if trainer.eval_dataset is not None:
        preflight_labels(trainer.eval_dataset, stops, cfg.max_length, "eval", len(eval_rows))
    resume = last_complete_checkpoint(ckpts)
    if resume and ranks.is_main_process:
        log(f"resuming from {resume}")
    t = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_s = time.perf_counter() - t
    record_rank(work, ranks, trainer, model)
    if ranks.num_processes > 1:
        log(f"rank {ranks.process_index}/{ranks.num_processes}: trained {trainer.state.global_step} steps")
    ranks.wait_for_everyone()
    final = Path(cfg.out) / cfg.run_name
    if not ranks.is_main_process:  # rank 0 alone chooses and publishes the adapter
        return final
    log(f"trained {trainer.state.global_step} steps in {train_s:.0f} s "
        f"({result.metrics.get('train_samples_per_second', 0):.2f} samples/s"
        f"{f' over {ranks.num_processes} processes' if ranks.num_processes > 1 else ''})")
    return write_outputs(cfg, work, base_name, data, tokenizer, log)


def record_rank(work: Path, ranks, trainer, model) -> None:
    """<work>/rank-<i>.json: what this process trained, with a checksum of its final LoRA weights."""
    import hashlib

    digest = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().float().cpu().numpy().tobytes())
    atomic_write_json(work / f"rank-{ranks.process_index}.json",
                      {"rank": ranks.process_index, "world_size": ranks.num_processes,
                       "backend": str(ranks.backend or "none"), "steps": trainer.state.global_step,
                       "lora_sha256": digest.hexdigest()})


def choose_checkpoint(history: dict[int, dict], ckpts: Path) -> tuple[int, dict]:
    """The saved checkpoint with the best probe quality (earliest on ties); step 0 is the base model."""
    saved = {int(p.name.split("-")[1]) for p in ckpts.glob("checkpoint-*") if (p / "adapter_config.json").is_file()}
    scored = [(row["quality"], -step, step) for step, row in history.items() if step in saved]
    if not scored:
        raise DataError(f"no evaluated checkpoint under {ckpts}; was the run interrupted before its first evaluation?")
    _, _, best = max(scored)
    return best, history[best]


def write_outputs(cfg: FinetuneConfig, work: Path, base_name: str, data: Path, tokenizer,
                  log: Callable[[str], None]) -> Path:
    """Copy the chosen checkpoint's adapter with its report into <out>/<run_name>, atomically."""
    history = read_history(work / "metrics.jsonl")
    best, row = choose_checkpoint(history, work / "checkpoints")
    final = Path(cfg.out) / cfg.run_name
    base = history.get(0, {})
    beats = base.get("quality") is None or row["quality"] > base["quality"]
    verdict = f"quality {row['quality']:.4f} vs the base model's {base.get('quality', float('nan')):.4f}"
    if not beats and not cfg.allow_worse:
        raise QualityError(f"the best checkpoint (checkpoint-{best}, {verdict}) does not beat the base model; "
                           f"nothing published (checkpoints stay in {work}); rerun with --allow-worse to publish it")
    with staging_dir(final) as tmp:
        _fill_output(cfg, work, base_name, data, tokenizer, history, best, row, tmp)
    log(f"kept checkpoint-{best} ({verdict}{'' if beats else '; published with --allow-worse'}) -> {final}")
    return final


def _fill_output(cfg: FinetuneConfig, work: Path, base_name: str, data: Path, tokenizer, history: dict[int, dict],
                 best: int, row: dict, tmp: Path) -> None:
    from finetune.report import plot_loss_vs_quality, render_report

    src = work / "checkpoints" / f"checkpoint-{best}"
    for name in ADAPTER_FILES:
        shutil.copy2(src / name, tmp / name)
    tokenizer.save_pretrained(tmp)
    base = history.get(0, {})
    stamp = {"prompt_version": PROMPT_VERSION, "base_model": cfg.model, "base_model_name": base_name,
             "run_name": cfg.run_name, "step": best, "quality": row["quality"],
             "base_quality": base.get("quality"), "data_fingerprint": data_fingerprint(data),
             "quantization": cfg.quantization, "pad_token": tokenizer.pad_token}
    (tmp / ADAPTER_STAMP).write_text(json.dumps(stamp, indent=2))
    (tmp / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
    for name in ("data_report.json", "data_card.md"):
        shutil.copy2(data / name, tmp / name)
    for name in ("metrics.jsonl", "train_log.jsonl"):
        if (work / name).is_file():
            shutil.copy2(work / name, tmp / name)
    train_log = read_history(work / "train_log.jsonl")
    plot_loss_vs_quality(history, [train_log[s] for s in sorted(train_log)], best, tmp / "loss_vs_quality.png")
    (tmp / "report.md").write_text(render_report(cfg, history, best, stamp, tmp))


def merge(adapter: str, out: str, log: Callable[[str], None] = print) -> Path:
    """Write base + adapter as one plain model directory (for servers without LoRA support)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, target = Path(adapter), Path(out)
    if target.exists() and not (target / MERGED_STAMP).is_file():
        # merge replaces its output; anything there that an earlier merge did not write is the user's
        raise ConfigError(f"refusing to replace {target}: it exists and is not a previous `finetune merge` output")
    stamp_path = path / ADAPTER_STAMP
    if not stamp_path.is_file():
        raise ModelLoadError(f"{path} is not a medcite adapter (no {ADAPTER_STAMP})")
    stamp = json.loads(stamp_path.read_text())
    source, _ = resolve_model(stamp.get("base_model", ""), "", log)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    with staging_dir(target) as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(path)).save_pretrained(tmp)
        (tmp / MERGED_STAMP).write_text(json.dumps({**stamp, "merged_from": str(path)}, indent=2))
    log(f"merged {path} into {target}")
    return target
