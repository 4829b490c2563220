"""The two judges of the verification stage, trained offline on this corpus: a faithfulness judge (passage,
sentence) -> P(the passage states the sentence), and an answerhood scorer (question, sentence) -> P(the sentence
answers the question asked). Both are small sentence-transformers CrossEncoders (MiniLM-L6 from the packaged
embedder), trained with CrossEncoderTrainer and BinaryCrossEntropyLoss on the rows of train/judge_data.py, in bf16
mixed precision where the CPU multiplies bf16 natively (train.precision), in batches of pairs of similar length.

    medcite train-judges all --config configs/judges.yaml       # make demo and make models run it
    medcite train-judges faithfulness                          # one of them

One document in 20 is held out as validation: the checkpoint is chosen on it and the thresholds are calibrated on
it, then written with their numbers to `calibration.json` in the model directory (the loader refuses a directory
without it). A killed run resumes from its last checkpoint; the rows are written once and reused; another config in
the same run directory is refused; a published judge whose inputs are unchanged is not trained again.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from core.config import config_to_dict
from core.files import atomic_write_json, atomic_write_jsonl, check_run_identity, staging_dir
from train.config import JudgeTrainConfig
from train.judge_data import build_rows

JUDGES = ("faithfulness", "answerhood")


def _pair(judge: str, row: dict) -> tuple[str, str]:
    return (row["passage"], row["sentence"]) if judge == "faithfulness" else (row["question"], row["sentence"])


def threshold_for(scores: list[float], labels: list[float], min_kept: float) -> dict:
    """The threshold with the best balanced accuracy among those that keep >= min_kept of the positives."""
    pos = sorted(s for s, y in zip(scores, labels, strict=True) if y)
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    best: dict = {}
    for t in sorted({math.floor(x * 1000) / 1000 for x in scores} | {0.0, 0.5}):  # 0 keeps every positive
        kept = sum(s >= t for s in pos) / len(pos)
        caught = sum(s < t for s in neg) / len(neg)
        if kept >= min_kept and (not best or (kept + caught) / 2 > best["balanced_accuracy"]):
            best = {"threshold": t, "positives_kept": round(kept, 4), "negatives_caught": round(caught, 4),
                    "balanced_accuracy": round((kept + caught) / 2, 4)}
    return best


def by_family(scores: list[float], rows: list[dict], threshold: float) -> dict[str, dict]:
    """Per row family: how many rows, and the share judged as their label says."""
    out: dict[str, list[bool]] = {}
    for s, row in zip(scores, rows, strict=True):
        out.setdefault(row["family"], []).append((s >= threshold) == bool(row["label"]))
    return {f: {"n": len(v), "correct": round(sum(v) / len(v), 4)} for f, v in sorted(out.items())}


def train_judge(cfg: JudgeTrainConfig, judge: str, log: Callable[[str], None] = print, max_steps: int = -1) -> Path:
    """Train, calibrate and publish one judge to `<out>/<judge>`; a published judge with the same inputs (settings,
    rows, base weights, precision) is kept as it is. `max_steps` > 0 stops early (the speed benchmark)."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer
    from sentence_transformers.cross_encoder import CrossEncoderTrainingArguments as Args
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderClassificationEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import PrinterCallback

    from retriever.embedder import dir_checksum, resolve_embedder
    from train.batching import LengthGroupedBatches
    from train.precision import train_bf16
    from train.retriever import RUN_FILE, _fit, _peak_rss_mib, _trainer_args, pooler_to_identity

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(cfg.out) / f"{judge}-run"
    work.mkdir(parents=True, exist_ok=True)
    other = "answerhood_" if judge == "faithfulness" else "faithfulness_"  # the other judge's settings do not count
    bf16 = train_bf16(cfg.precision)
    identity = {"judge": judge, **{k: v for k, v in config_to_dict(cfg).items()
                                   if k not in ("out", "threads") and not k.startswith(other)},
                "train_precision": "bf16 mixed" if bf16 else "fp32", "max_steps": max_steps}
    check_run_identity(work / "run.json", identity, "judge training run")
    started = time.time()
    train_path, val_path = work / "train.jsonl", work / "validation.jsonl"
    if train_path.is_file() and val_path.is_file():
        train_rows = [json.loads(x) for x in train_path.read_text().splitlines()]
        val_rows = [json.loads(x) for x in val_path.read_text().splitlines()]
    else:
        log(f"building {judge} rows from {cfg.data_dir}")
        train_rows, val_rows = build_rows(cfg, judge, log)
        atomic_write_jsonl(val_path, val_rows)
        atomic_write_jsonl(train_path, train_rows)
    pos = sum(r["label"] for r in train_rows)
    log(f"  {len(train_rows)} training rows ({pos:.0f} positive), {len(val_rows)} validation rows")
    max_length = cfg.faithfulness_max_length if judge == "faithfulness" else cfg.answerhood_max_length
    base = cfg.base or resolve_embedder("")
    out = Path(cfg.out) / judge
    inputs = hashlib.sha256(json.dumps([identity, train_rows, val_rows, dir_checksum(base)],
                                       sort_keys=True).encode()).hexdigest()
    if (out / CALIBRATION).is_file() and (out / RUN_FILE).is_file() and \
            json.loads((out / RUN_FILE).read_text()).get("inputs_sha256") == inputs:
        log(f"{judge} judge at {out} is up to date (inputs {inputs[:12]}); nothing to do")
        return out
    model = CrossEncoder(base, num_labels=1, max_length=max_length, device="cpu", local_files_only=True)
    if pooler_to_identity(model):
        log("  the base's untrained BERT pooler starts as identity")
    data = Dataset.from_list([{"a": _pair(judge, r)[0], "b": _pair(judge, r)[1], "label": r["label"]}
                              for r in train_rows]).shuffle(seed=cfg.seed)
    evaluator = CrossEncoderClassificationEvaluator([_pair(judge, r) for r in val_rows],
                                                    [int(r["label"]) for r in val_rows], name="val",
                                                    show_progress_bar=False, write_csv=False)
    metric = "eval_val_average_precision"
    args = _trainer_args(Args, work, cfg, metric, cfg.batch_size, cfg.learning_rate, cfg.eval_steps, bf16=bf16,
                         max_steps=max_steps, **({"batch_sampler": LengthGroupedBatches} if cfg.length_grouped
                                              else {}))
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor((len(train_rows) - pos) / max(pos, 1.0)))
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data, loss=loss, evaluator=evaluator,
                                  callbacks=[progress_callback(log, judge)])
    trainer.remove_callback(PrinterCallback)  # its raw dicts repeat what progress_callback logs as one line a step
    _fit(trainer, work, log)
    # without the autocast wrapper accelerate puts on forward for bf16 training: the thresholds are chosen on the
    # model as it is served
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False).eval()
    scores = [float(s) for s in model.predict([_pair(judge, r) for r in val_rows], batch_size=64,
                                                      show_progress_bar=False)]
    labels = [r["label"] for r in val_rows]
    cal = threshold_for(scores, labels, cfg.min_kept)
    cal["by_family"] = by_family(scores, val_rows, cal["threshold"])
    if judge == "answerhood":
        cal["gate"] = answer_gate(scores, val_rows)
    card = {"stage": judge, "base": base, "config": config_to_dict(cfg), "rows": len(train_rows),
            "positives": pos, "validation_rows": len(val_rows),
            "dev_evals": [{"step": e["step"], metric: round(e[metric], 4)} for e in trainer.state.log_history
                          if metric in e],
            "train_seconds": round(time.time() - started, 1), "train_loop_seconds": next(
                (round(h["train_runtime"], 1) for h in reversed(trainer.state.log_history) if "train_runtime" in h),
                None), "train_precision": identity["train_precision"], "inputs_sha256": inputs,
            "peak_rss_mib": _peak_rss_mib(), "best_checkpoint": trainer.state.best_model_checkpoint}
    calibration = {"judge": judge, "calibrated_on": f"validation rows of held-out training documents ({len(val_rows)})",
                   "min_kept": cfg.min_kept, **cal}
    with staging_dir(out) as tmp:  # model, card and calibration appear together or not at all
        model.save(str(tmp))
        atomic_write_json(tmp / RUN_FILE, card)
        atomic_write_json(tmp / CALIBRATION, calibration)
        calibrate_precisions(tmp, judge, val_rows, cfg.min_kept)
    shutil.rmtree(work / "checkpoints", ignore_errors=True)  # the published judge is what remains (rows are kept)
    log(f"{judge} judge written to {out} ({card['train_seconds']:.0f}s); threshold {cal['threshold']}: "
        f"kept {cal['positives_kept']}, caught {cal['negatives_caught']}; see {RUN_FILE}")
    return out


CALIBRATION = "calibration.json"


def calibrate_precisions(path: Path, judge: str, val_rows: list[dict], min_kept: float,
                         precisions: tuple[str, ...] = ("int8",)) -> dict:
    """The threshold of each served precision, chosen on the same validation rows by the same rule (written to
    calibration.json under `precisions`; CrossEncoderJudge.threshold reads the one it runs at). Dynamic int8 moves
    the scores a little: on the 971 validation rows the int8 faithfulness judge kept 0.949 of the faithful
    sentences at the fp32 threshold (0.587), under the 0.95 it was chosen to keep; its own threshold, 0.562, keeps
    0.951 (session 8)."""
    from pipeline.verify.judges import CrossEncoderJudge

    calibration = json.loads((path / CALIBRATION).read_text())
    labels = [r["label"] for r in val_rows]
    for precision in precisions:
        model = CrossEncoderJudge.load(path, precision)
        scores = model.score([_pair(judge, r) for r in val_rows])
        calibration.setdefault("precisions", {})[precision] = threshold_for(scores, labels, min_kept)
    atomic_write_json(path / CALIBRATION, calibration)
    return calibration


def progress_callback(log: Callable[[str], None], what: str):
    """One line per logging step, in the run's progress display (core.progress: the stage, steps/s, time left) with
    the loss and the validation metric: progress without a progress bar in job logs."""
    from transformers import TrainerCallback

    from core.progress import Meter

    class Progress(TrainerCallback):
        meter: Meter | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.meter = Meter(state.max_steps, "steps", what)
            self.meter.line(state.global_step)  # the clock starts here (after a resume, at the resumed step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = {k: round(v, 4) for k, v in (logs or {}).items() if k in ("loss", "eval_val_average_precision")}
            if shown and self.meter:
                log("  " + self.meter.line(state.global_step, ", ".join(f"{k} {v}" for k, v in shown.items())))

    return Progress()


def answer_gate(scores: list[float], rows: list[dict], keep: float = 0.97) -> dict:
    """The no-answer gate: the score that the best own-answer sentence of `keep` of the validation questions
    reaches (a question whose shown sentences all score below it is not answered by them)."""
    best: dict[str, float] = {}
    for s, row in zip(scores, rows, strict=True):
        if row["label"]:
            best[row["question"]] = max(best.get(row["question"], 0.0), s)
    values = sorted(best.values())
    cut = values[int((1 - keep) * len(values))] if values else 0.0
    return {"threshold": round(cut * 0.999, 4), "questions": len(values), "keep": keep}
