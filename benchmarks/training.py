"""Fine-tuning overhead: medcite's training path vs a plain TRL SFTTrainer with identical settings.

    .venv/bin/python benchmarks/training.py [--steps 3] [--accum 4] [--rounds 2]
    # -> benchmarks/results/finetune.json

Both arms train LoRA (r=8, the seven projections) on the packaged SmolLM2-135M with the same prepared rows
(artifacts/finetune/smollm2-medcite/data/train.jsonl; run `medcite finetune prepare` first), batch 1,
the same accumulation, steps, seed and max_length. A = `finetune.train.build_trainer` with our callback
and preflight; B = `trl.SFTTrainer(peft_config=...)` out of the box. Each run is a fresh subprocess (so its peak
RSS is its own), interleaved A/B/A/B; ratios are taken per round. A last run measures A with the base in NF4.
Targets: tokens/s ratio A/B >= 0.95; peak memory ratio reported.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "artifacts" / "finetune" / "smollm2-medcite" / "data" / "train.jsonl"


def one_run(arm: str, steps: int, accum: int, quantization: str) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from finetune.config import FinetuneConfig
    from finetune.data import load_rows
    from finetune.model import load_model, load_tokenizer, lora_model
    from finetune.train import build_trainer, make_probe_callback
    from generator.hf import resolve_model

    rows = load_rows(DATA)[: steps * accum]
    cfg = FinetuneConfig(max_steps=steps, batch_size=1, gradient_accumulation=accum, logging_steps=1,
                         max_length=1024, quantization=quantization, warmup_ratio=0.0)
    source, _ = resolve_model("", "", lambda _: None)
    tok = load_tokenizer(source, cfg)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        if arm == "A":
            model = lora_model(load_model(source, cfg), cfg)
            trainer = build_trainer(cfg, model, tok, rows, [], Path(tmp) / "ckpt",
                                    [make_probe_callback(cfg, tok, [], Path(tmp), lambda _: None)])
        else:
            from datasets import Dataset
            from peft import LoraConfig
            from transformers import AutoModelForCausalLM
            from trl import SFTTrainer

            from finetune.train import sft_config

            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
            ds = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
            trainer = SFTTrainer(model=model, args=sft_config(cfg, Path(tmp) / "ckpt", False), train_dataset=ds,
                                 processing_class=tok, peft_config=lora)
        t = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t
        tokens = max(h.get("num_tokens", 0) for h in trainer.state.log_history)
    return {"arm": arm, "quantization": quantization, "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", choices=("A", "B"))
    ap.add_argument("--quantization", default="none")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.steps, args.accum, args.quantization)))
        return
    if not DATA.is_file():
        raise SystemExit(f"{DATA} missing: run `medcite finetune prepare --config configs/finetune-smollm2.yaml`")

    def spawn(arm: str, quantization: str = "none") -> dict:
        out = subprocess.run([sys.executable, __file__, "--one", arm, "--steps", str(args.steps), "--accum",
                              str(args.accum), "--quantization", quantization], capture_output=True, text=True,
                             cwd=ROOT, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(row), flush=True)
        return row

    runs = []
    for r in range(args.rounds):  # A/B then B/A, so drift over time hits both arms
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        pair = {arm: spawn(arm) for arm in order}
        runs.append(pair)
    nf4 = spawn("A", "nf4")
    speed = [p["A"]["tokens_per_s"] / p["B"]["tokens_per_s"] for p in runs]
    mem = [p["A"]["peak_rss_mb"] / p["B"]["peak_rss_mb"] for p in runs]
    result = {
        "what": "medcite finetune training path (A) vs plain TRL SFTTrainer (B), same model/data/settings, "
                "SmolLM2-135M LoRA r=8, batch 1, CPU",
        "steps": args.steps, "accumulation": args.accum, "runs": runs, "nf4_run": nf4,
        "tokens_per_s_ratio_A_over_B": round(statistics.median(speed), 3), "per_round_speed_ratios": speed,
        "peak_memory_ratio_A_over_B": round(statistics.median(mem), 3),
        "peak_memory_nf4_over_float_A": round(nf4["peak_rss_mb"] / statistics.median(p["A"]["peak_rss_mb"] for p in runs), 3),
        "target_speed_ratio": 0.95,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "finetune.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if "ratio" in k}, indent=2))


if __name__ == "__main__":
    main()
