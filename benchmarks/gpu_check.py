"""GPU check: the production fine-tune and serving paths on one NVIDIA GPU, in under 10 minutes, offline.

    bash benchmarks/gpu_check.sh                   # on the GPU machine (installs the carried wheels, runs this)
    python benchmarks/gpu_check.py --prepare        # here, once: the small data set + tokenizer in the bundle
    python benchmarks/gpu_check.py --tiny           # any machine, CPU included: the same steps on tiny shapes

What runs (everything is the project's own code, nothing downloaded):
1. A Llama-3.2-3B-shaped model with random weights (28 layers, 3072 wide, 24 heads / 8 KV heads, vocabulary 128,256)
   and a tokenizer built in code with Llama 3's special-token ids (<|eot_id|> 128009, <|finetune_right_pad_id|>
   128004) and its chat template.
2. QLoRA through the fine-tuning job (`finetune.train.run`, configs/finetune-llama3.2-3b.yaml settings: NF4 base,
   bf16, gradient checkpointing, LoRA r=8 on q,k,v,o,gate,up,down) on the bundled prepared examples, 20 steps of
   16 with one probe pass: samples/s, peak GPU memory, adapter size.
3. Serving through `HFGenerator.load` on the GPU (`device: auto`) in 4-bit and in bf16, with the adapter, and one
   answer through `Pipeline.answer` (pipeline/answer.py) (retrieval over the bundled passages, verification on): tokens/s.

Prints a JSON summary with the card's name and writes benchmarks/results/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUNDLE = Path(os.environ.get("MEDCITE_GPU_BUNDLE") or ROOT / "benchmarks" / "gpu_bundle")
RESULTS = ROOT / "benchmarks" / "results"

LLAMA3_SPECIALS = {128000: "<|begin_of_text|>", 128001: "<|end_of_text|>", 128004: "<|finetune_right_pad_id|>",
                   128006: "<|start_header_id|>", 128007: "<|end_header_id|>", 128008: "<|eom_id|>",
                   128009: "<|eot_id|>", 128010: "<|python_tag|>"}
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
SHAPES = {"3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                     num_key_value_heads=8, vocab_size=128256),
          "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=128256)}


def build_tokenizer(texts: list[str], out: Path) -> None:
    """Byte-level BPE trained on the bundled texts, its vocabulary filled to 128,000 entries, then Llama 3's
    special tokens at their own ids (reserved ones in between, as in Llama 3)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=4000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    data = json.loads(bpe.to_str())
    vocab = data["model"]["vocab"]
    for i in range(len(vocab), 128000):  # fill to Llama 3's regular vocabulary size so every id decodes
        vocab[f"<f{i}>"] = i
    full = Tokenizer.from_str(json.dumps(data))
    full.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    full.decoder = decoders.ByteLevel()
    reserved = iter(range(10_000))
    full.add_special_tokens([LLAMA3_SPECIALS.get(i) or f"<|reserved_special_token_{next(reserved)}|>"
                             for i in range(128000, 128256)])
    tok = PreTrainedTokenizerFast(tokenizer_object=full, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = LLAMA3_TEMPLATE
    tok.save_pretrained(out)


def build_model(tokenizer_dir: Path, out: Path, shape: str) -> None:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert tok.convert_tokens_to_ids("<|eot_id|>") == 128009 and tok.convert_tokens_to_ids("<|finetune_right_pad_id|>") == 128004
    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, rope_theta=500000.0, tie_word_embeddings=True,
                      bos_token_id=128000, eos_token_id=[128001, 128008, 128009])
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=128000, eos_token_id=[128001, 128008, 128009])
    model.save_pretrained(out)
    tok.save_pretrained(out)


def prepare(index: str, n: int = 540, data_dir: str | None = None) -> None:
    """Here, once: prepared examples (the job's own preparation over the served index) + the tokenizer. The
    bundle holds corpus text, so it stays out of git (.gitignore) and travels as a carried path."""
    from transformers import AutoTokenizer

    from core.config import load_config
    from finetune.config import FinetuneConfig
    from finetune.data import prepare as prepare_data
    from generator.hf import resolve_model
    from retriever.index_dir import read_manifest
    from retriever.search import IndexRetriever

    cfg = load_config(FinetuneConfig, ROOT / "configs" / "finetune-llama3.2-3b.yaml",
                      **{"data.size": str(n), "data.index": index, **({"data.data_dir": data_dir} if data_dir else {})})
    tok = AutoTokenizer.from_pretrained(resolve_model("", "", print)[0])
    data = BUNDLE / "data"
    shutil.rmtree(data, ignore_errors=True)
    prepare_data(cfg.data, IndexRetriever.load(index), lambda t: len(tok(t)["input_ids"]), data, print)
    (BUNDLE / "index").mkdir(parents=True, exist_ok=True)  # the manifest names the index the data came from
    (BUNDLE / "index" / "manifest.json").write_text(json.dumps(read_manifest(index)))
    rows = [json.loads(x) for x in (data / "train.jsonl").read_text().splitlines()]
    build_tokenizer([c for r in rows for m in r["prompt"] + r["completion"] for c in [m["content"]]],
                    BUNDLE / "tokenizer")
    print(f"bundle at {BUNDLE}: {sum(p.stat().st_size for p in BUNDLE.rglob('*') if p.is_file()) / 2**20:.1f} MiB")


class BundleRetriever:
    """A retriever over the bundled examples' passages (the GPU machine has no faiss or bm25s): word overlap,
    hashed bag-of-words embeddings; enough to run the pipeline and its verification end to end."""

    fingerprint = "gpu-check-bundle"

    def __init__(self, texts: list[tuple[str, str]]):
        from core.types import Passage

        self.passages = [Passage(f"b{i}#0", f"b{i}", t, x, "bundle") for i, (t, x) in enumerate(texts)]
        self.words = {w for p in self.passages for w in (p.title + " " + p.text).lower().split()}

    def search(self, query, k=5, mode="hybrid", source=None):
        from core.types import Hit

        q = set(query.lower().split())
        ranked = sorted(self.passages, key=lambda p: -len(q & set(p.text.lower().split())))[:k]
        return [Hit(p, 1.0, i + 1) for i, p in enumerate(ranked)]

    def resolve_record(self, record_id):
        return record_id

    def passages_of(self, record_id):
        return [p for p in self.passages if p.record_id == record_id]

    def embed(self, texts):
        import zlib

        import numpy as np

        out = np.zeros((len(texts), 256), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, zlib.crc32(w.encode()) % 256] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def knows(self, word):
        return word.lower() in self.words


def _passages_from(data: Path) -> list[tuple[str, str]]:
    import re

    out = []
    for line in (data / "eval.jsonl").read_text().splitlines():
        user = json.loads(line)["prompt"][-1]["content"]
        out += [(m.group(1), m.group(2).strip()) for m in re.finditer(r"\[\d+\] ([^\n]+)\n(.+?)(?=\n\n\[\d+\] |\n\nQuestion:)",
                                                                        user, re.S)]
    return out[:200]


def run(shape: str, steps: int, batch: int) -> dict:
    import torch

    from core.config import config_to_dict, load_config
    from finetune.config import FinetuneConfig
    from finetune.train import run as finetune
    from generator.config import DecodingConfig, GeneratorConfig
    from generator.hf import HFGenerator
    from pipeline.answer import Pipeline
    from pipeline.config import PipelineConfig
    from pipeline.verify.config import VerifyConfig

    cuda = torch.cuda.is_available()
    card = torch.cuda.get_device_name(0) if cuda else "cpu"
    work = Path(tempfile.mkdtemp(prefix="medcite-gpu-check-"))
    model_dir = work / "model"
    build_model(BUNDLE / "tokenizer", model_dir, shape)
    result: dict = {"card": card, "shape": shape, "torch": torch.__version__}
    # --- 2. QLoRA through the job ---------------------------------------------------------------------------------
    cfg = load_config(FinetuneConfig, ROOT / "configs" / "finetune-llama3.2-3b.yaml", **{
        "model": str(model_dir), "run_name": "gpu-check", "work_dir": str(work / "ft"), "out": str(work / "adapters"),
        "max_steps": str(steps), "eval_steps": str(steps), "batch_size": str(batch), "gradient_accumulation": "1",
        "probe_size": "4", "allow_worse": "true", "decoding.max_new_tokens": "32",
        "data.index": str(BUNDLE / "index"), "data.size": str(json.loads((BUNDLE / "data" / "data_report.json")
                                                                         .read_text())["config"]["size"]),
        **({} if cuda else {"quantization": "none", "dtype": "float32", "gradient_checkpointing": "false"})})
    data = work / "ft" / "gpu-check" / "data"
    data.parent.mkdir(parents=True)
    shutil.copytree(BUNDLE / "data", data)
    report = json.loads((data / "data_report.json").read_text())  # reuse the bundled preparation as is
    report["config"] = config_to_dict(cfg.data)
    (data / "data_report.json").write_text(json.dumps(report))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    adapter = finetune(cfg, load_retriever=lambda _: None, log=lambda m: print(m, file=sys.stderr, flush=True))
    train_s = time.perf_counter() - t
    size = (adapter / "adapter_model.safetensors").stat().st_size
    result["finetune"] = {"steps": steps, "batch": batch, "seconds": round(train_s, 1),
                          "samples_per_s": round(steps * batch / train_s, 2),
                          "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                          "adapter_mib": round(size / 2**20, 2)}
    # --- 3. serving on the GPU --------------------------------------------------------------------------------------
    retriever = BundleRetriever(_passages_from(data))
    question = json.loads((data / "eval.jsonl").read_text().splitlines()[0])["prompt"][-1]["content"]
    question = question.split("Question:")[-1].split("\n")[0].strip() or "What is gout?"
    result["serve"] = {}
    for name, kw in (("4bit", {"load_in_4bit": cuda, "dtype": "bfloat16" if cuda else "float32"}),
                     ("bf16", {"dtype": "bfloat16" if cuda else "float32"})):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        gen = HFGenerator.load(GeneratorConfig(model=str(model_dir), adapter=str(adapter), **kw),
                               DecodingConfig(max_new_tokens=64))
        device = str(next(gen.model.parameters()).device)
        gen.generate([{"role": "user", "content": "warm up"}], max_new_tokens=4)
        t = time.perf_counter()
        g = gen.generate([{"role": "user", "content": question}], max_new_tokens=64)
        secs = time.perf_counter() - t
        a = Pipeline(retriever, gen, None, PipelineConfig(k=3, verify=VerifyConfig())).answer(question, max_new_tokens=64)
        result["serve"][name] = {"device": device, "tokens": g.completion_tokens,
                                 "tokens_per_s": round(g.completion_tokens / secs, 1),
                                 "peak_gpu_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                                 "pipeline_answer_mode": a.answer_mode, "pipeline_ms": a.timings["total_ms"]}
        del gen
    shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prepare", action="store_true", help="build the bundle's data and tokenizer (needs the index)")
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--size", type=int, default=540, help="--prepare: examples to prepare")
    ap.add_argument("--data-dir", help="--prepare: the data sets (default: the finetune config's)")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes, a few steps: checks the script anywhere")
    ap.add_argument("--out", default=str(RESULTS / "gpu_check.json"))
    args = ap.parse_args()
    if args.prepare:
        prepare(args.index, args.size, args.data_dir)
        return
    if not (BUNDLE / "data" / "train.jsonl").is_file():
        sys.exit(f"gpu_check: no bundle at {BUNDLE}; run `python benchmarks/gpu_check.py --prepare` first")
    result = run("tiny" if args.tiny else "3b", steps=2 if args.tiny else 20, batch=2 if args.tiny else 16)
    print(json.dumps(result, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
