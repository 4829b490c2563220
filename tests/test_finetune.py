"""The fine-tuning job with a tiny Llama built in code: data cleaning and preparation, token preflight, label
masking, NF4 + LoRA training, checkpoint choice by probe answers, outputs, resume after SIGKILL, merge."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import ConfigError, DataError
from finetune.config import FinetuneConfig, FinetuneDataConfig
from finetune.data import (
    cited_target,
    fix_ocr,
    near_duplicates,
    prepare,
    stratified_split,
    strip_filler_openers,
    strip_sign_offs,
    strip_trailing_filler_sentence,
)
from generator.prompt import SYSTEM_PROMPT

ROOT = Path(__file__).resolve().parents[1]

CHAT = [
    {"instruction": "If you are a doctor, answer.", "input": "Doctor, my knee is swollen after running.",
     "output": "Hello, welcome to Chat Doctor. I have gone through your query. A swollen knee after running is "
               "often bursitis. Rest, ice and ibuprofen help. Hope this helps. Regards, Chat Doctor."},
    {"instruction": "If you are a doctor, answer.", "input": "I have a dry cough for two weeks.",
     "output": "HiT hanks for your query. A dry cough for two weeks may be postnasal drip. Try an antihistamine. "
               "Good luck."},
    {"instruction": "If you are a doctor, answer.", "input": "What treats Ewing sarcoma in the femur?",
     "output": "Chemotherapy, surgery and radiation therapy treat Ewing sarcoma of the femur."},
    {"instruction": "If you are a doctor, answer.", "input": "Is aspirin risky for bleeding?",
     "output": "Aspirin dosing in adults raises the bleeding risk, so ask your doctor before daily use."},
]


# --- cleaning rules on self-written examples ---------------------------------------------------------------------

def test_chat_cleaning_rules():
    assert fix_ocr("HiT hanks for the query.") == "Hi. Thanks for the query."
    assert fix_ocr("T hanks again") == "Thanks again"
    assert strip_filler_openers("Hello, welcome to Chat Doctor. I have gone through your query. Rest it.") == \
        "I have gone through your query. Rest it."
    assert strip_filler_openers("Hi, thanks for your query. Your knee needs rest.") == "Your knee needs rest."
    assert strip_filler_openers("Hi. Thanks for the query. Rest.") == "Rest."
    assert strip_filler_openers("Knee pain has many causes.") == "Knee pain has many causes."  # untouched
    assert strip_sign_offs("Use ice. Hope this helps. Regards, Chat Doctor.") == "Use ice."
    assert strip_sign_offs("Use ice. Take care") == "Use ice."
    assert strip_sign_offs("Take care of the wound and keep it clean.") == "Take care of the wound and keep it clean."
    assert strip_trailing_filler_sentence("Try an antihistamine. Good luck.") == "Try an antihistamine."
    assert strip_trailing_filler_sentence("Good luck.") == "Good luck."  # never empties an answer


def test_near_duplicates_and_split():
    base = "gout is treated with colchicine and nsaids during a flare and allopurinol to lower uric acid later on"
    texts = [base, base.replace("later on", "later"), "migraine may be triggered by stress hormones and cheese in "
             "some people who also report aura and nausea before the headache starts", base]
    dups = near_duplicates(texts, 0.8)
    assert dups == {1: 0, 3: 0}
    from finetune.data import Candidate

    cands = [Candidate(f"c{i}", "chat" if i % 2 else "medquad", "t", "q", f"a{i}", None) for i in range(20)]
    train, held = stratified_split(cands, 0.2, seed=0)
    assert len(held) == 4 and {c.reader for c in held} == {"chat", "medquad"}
    assert [c.id for c in stratified_split(cands, 0.2, seed=0)[1]] == [c.id for c in held]  # deterministic


def test_cited_target_marks_supported_sentences():
    from pipeline.verify.support import SupportJudge

    text, used = cited_target("Chemotherapy treats Ewing sarcoma. The moon is bright tonight.",
                              ["Unrelated passage about gout.", "Ewing sarcoma is treated with chemotherapy."],
                              SupportJudge(), 0.6)
    assert text == "Chemotherapy treats Ewing sarcoma [2]. The moon is bright tonight." and used == [2]


# --- preparation on a self-written data dir ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def ft_data(tmp_path_factory, fixture_data) -> Path:
    root = tmp_path_factory.mktemp("ftdata")
    shutil.copytree(fixture_data, root, dirs_exist_ok=True)
    (root / "chatdoctor").mkdir()
    (root / "chatdoctor" / "chat.json").write_text(json.dumps(CHAT))
    (root / "splits").mkdir()
    (root / "splits" / "reserved.txt").write_text("2:0000004\n")  # the ABCD syndrome document
    return root


def data_cfg(ft_data, **kw) -> FinetuneDataConfig:
    base = dict(data_dir=str(ft_data), sources=("chat:chatdoctor/chat.json", "wikidoc:wikidoc/wd.json",
                                                "medquad:medquad"),
                mix={"chat": 0.5, "wikidoc": 0.25, "medquad": 0.25}, size=40, eval_share=0.25,
                reserved="splits/reserved.txt", no_retrieval_share=0.0, gold_probability=1.0)
    base.update(kw)
    return FinetuneDataConfig(**base)


def words(text: str) -> int:
    return len(text.split())


def test_prepare_writes_clean_rag_examples(ft_data, tiny_index, tmp_path):
    from retriever.search import IndexRetriever

    retriever = IndexRetriever.load(tiny_index, threads=1)
    report = prepare(data_cfg(ft_data), retriever, words, tmp_path / "a", log=lambda _: None)
    rows = [json.loads(x) for f in ("train.jsonl", "eval.jsonl") for x in (tmp_path / "a" / f).read_text().splitlines()]
    assert report.reserved_excluded == 3 and not any(r["id"].startswith("2:0000004:") for r in rows)
    # the OCR-fixed "Hi. Thanks for your query." opener is filler too, so two rows lose an opener
    assert report.cleaning["filler_opener"]["rows"] == 2 and report.cleaning["sign_off"]["rows"] == 1
    assert report.cleaning["ocr_glue"]["rows"] == 1 and report.cleaning["trailing_filler_sentence"]["rows"] == 1
    assert report.cleaning["filler_opener"]["examples"][0]["before"].startswith("Hello, welcome")
    texts = " ".join(r["completion"][0]["content"] for r in rows)
    for noise in ("Chat Doctor", "HiT hanks", "Hope this helps", "Good luck"):
        assert noise not in texts
    assert report.dropped["exact_duplicate_answers"] >= 1  # the Ewing answer appears in MedQuAD twice + chat
    for r in rows:  # every prompt is the server's prompt
        assert r["prompt"][0]["content"] == SYSTEM_PROMPT and "Question: " in r["prompt"][1]["content"]
        assert r["completion"][0]["role"] == "assistant"
    gold = [r for r in rows if r["format"] == "rag_gold"]
    assert gold and all(r["cited"] for r in gold)  # gold passage shown -> its marker is in the target
    assert "# Fine-tuning data card" in (tmp_path / "a" / "data_card.md").read_text()
    # deterministic: the same settings give byte-identical files
    prepare(data_cfg(ft_data), retriever, words, tmp_path / "b", log=lambda _: None)
    for f in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_prepare_refuses_without_reserved_list(ft_data, tiny_index, tmp_path):
    with pytest.raises(DataError, match="reserved"):
        prepare(data_cfg(ft_data, reserved="splits/missing.txt"), None, words, tmp_path, log=lambda _: None)


# --- tokens and preflight ------------------------------------------------------------------------------------------

def _tokenizer(specials: list[str], eos: str, pad: str | None, template: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(["hello world answer"] * 5, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos, **({"pad_token": pad} if pad else {}))
    tok.chat_template = template
    return tok


LLAMA3ISH = ("{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>{{ m['content'] }}<|eot_id|>"
             "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>{% endif %}")
NO_EOT = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def test_pad_token_choice_never_adds_tokens():
    from finetune.model import choose_pad_token

    specials = ["<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>"]
    llama = _tokenizer(specials, "<|eot_id|>", None, LLAMA3ISH)
    n = len(llama)
    assert choose_pad_token(llama) == "<|finetune_right_pad_id|>" and len(llama) == n
    # no reserved pad, pad == eos: an existing special token that the template never uses
    smol = _tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "<|im_end|>", "<|im_end|>",
                      "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}")
    assert choose_pad_token(smol) == "<|endoftext|>"
    with pytest.raises(ConfigError, match="not in the tokenizer's vocabulary"):
        choose_pad_token(smol, "<pad>")
    bare = _tokenizer(["<|im_end|>"], "<|im_end|>", None, "{{ '<|im_end|>' }}")
    with pytest.raises(ConfigError, match="no reserved pad token"):
        choose_pad_token(bare)


def test_preflight_stops_bad_token_setups():
    from transformers import GenerationConfig

    from finetune.model import preflight_tokens

    specials = ["<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|finetune_right_pad_id|>"]
    good = _tokenizer(specials, "<|eot_id|>", "<|finetune_right_pad_id|>", LLAMA3ISH)
    assert preflight_tokens(good, GenerationConfig()) == [good.eos_token_id]
    same = _tokenizer(specials, "<|eot_id|>", "<|eot_id|>", LLAMA3ISH)
    with pytest.raises(ConfigError, match="pad token"):
        preflight_tokens(same, GenerationConfig())
    no_eot = _tokenizer(specials, "<|eot_id|>", "<|finetune_right_pad_id|>", NO_EOT)
    with pytest.raises(ConfigError, match="does not close the assistant turn"):
        preflight_tokens(no_eot, GenerationConfig())


def test_preflight_refuses_embedding_or_lm_head_in_the_adapter(tiny_llm_dir):
    import torch  # noqa: F401
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune.model import preflight_adapter

    with pytest.raises(ConfigError, match="embeddings or lm_head"):
        FinetuneConfig(target_modules=("q_proj", "embed_tokens"))
    model = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"]))
    with pytest.raises(ConfigError):
        preflight_adapter(wrapped)


# --- training --------------------------------------------------------------------------------------------------------

def ft_cfg(ft_data, tmp_path, tiny_index, tiny_llm_dir, **kw) -> FinetuneConfig:
    base = dict(run_name="tiny", model=str(tiny_llm_dir), work_dir=str(tmp_path / "work"),
                out=str(tmp_path / "adapters"), max_steps=4, eval_steps=2, logging_steps=1, batch_size=2,
                gradient_accumulation=1, probe_size=2, lora_r=4, lora_alpha=8, threads=1, max_length=2048,
                decoding={"max_new_tokens": 6}, allow_worse=True,  # a random tiny model cannot beat its base
                data=data_cfg(ft_data, index=str(tiny_index)))
    base.update(kw)
    from generator.config import DecodingConfig

    base["decoding"] = DecodingConfig(**base["decoding"])
    return FinetuneConfig(**base)


def _load_retriever(path):
    from retriever.search import IndexRetriever

    return IndexRetriever.load(path, threads=1)


def test_labels_cover_completion_tokens_only(ft_data, tmp_path, tiny_index, tiny_llm_dir):
    from finetune.data import load_rows
    from finetune.model import load_model, load_tokenizer, lora_model, preflight_labels
    from finetune.train import build_trainer

    cfg = ft_cfg(ft_data, tmp_path, tiny_index, tiny_llm_dir)
    tok = load_tokenizer(str(tiny_llm_dir), cfg)
    data = tmp_path / "data"
    prepare(cfg.data, _load_retriever(tiny_index), lambda t: len(tok(t)["input_ids"]), data, log=lambda _: None)
    rows = load_rows(data / "train.jsonl")
    model = lora_model(load_model(str(tiny_llm_dir), cfg), cfg)
    trainer = build_trainer(cfg, model, tok, rows, [], tmp_path / "ckpt")
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    for row, ex in zip(trainer.train_dataset, rows, strict=True):
        prompt_len = len(tok.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=True,
                                                 return_dict=True)["input_ids"])
        labels = row["labels"]
        assert all(x == -100 for x in labels[:prompt_len])  # no loss on system prompt, passages or question
        assert labels[prompt_len:] == row["input_ids"][prompt_len:]  # full loss on the answer
        assert eot in labels[prompt_len:]  # ... including the end-of-turn token
    preflight_labels(trainer.train_dataset, [eot], cfg.max_length, "train", len(rows))
    short = build_trainer(ft_cfg(ft_data, tmp_path, tiny_index, tiny_llm_dir, max_length=64), model, tok, rows, [],
                          tmp_path / "ckpt2")
    with pytest.raises(DataError, match="end-of-turn token to truncation"):
        preflight_labels(short.train_dataset, [eot], 64, "train", len(rows))
    longest = max(len(r["input_ids"]) for r in trainer.train_dataset)
    cut = build_trainer(ft_cfg(ft_data, tmp_path, tiny_index, tiny_llm_dir, max_length=longest - 2), model, tok, rows,
                        [], tmp_path / "ckpt3")  # the longest loses "<|im_end|>\n", its last two tokens
    with pytest.raises(DataError, match="end-of-turn token to truncation"):
        preflight_labels(cut.train_dataset, [eot], longest - 2, "train", len(rows))


@pytest.mark.parametrize("quantization", ["none", "nf4"])
def test_finetune_run_keeps_best_checkpoint_and_answers_through_the_pipeline(
        quantization, ft_data, tmp_path, tiny_index, tiny_llm_dir):
    from safetensors import safe_open

    from finetune.train import run
    from generator.config import DecodingConfig, GeneratorConfig
    from generator.hf import HFGenerator
    from pipeline.answer import Pipeline
    from pipeline.config import PipelineConfig

    cfg = ft_cfg(ft_data, tmp_path, tiny_index, tiny_llm_dir, quantization=quantization)
    if quantization == "none":  # an adapter that does not beat the base is not published unless forced
        from dataclasses import replace

        from core.errors import QualityError

        strict = replace(cfg, allow_worse=False, work_dir=str(tmp_path / "strict"), out=str(tmp_path / "strict-out"))
        with pytest.raises(QualityError, match="does not beat the base model"):
            run(strict, load_retriever=_load_retriever, log=lambda _: None)
        assert not (tmp_path / "strict-out" / "tiny").exists() and (tmp_path / "strict" / "tiny" / "checkpoints").is_dir()
    out = run(cfg, load_retriever=_load_retriever, log=lambda _: None)
    assert out == tmp_path / "adapters" / "tiny"
    files = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "medcite_adapter.json", "report.md",
            "loss_vs_quality.png", "data_report.json", "data_card.md", "metrics.jsonl", "config.json",
            "tokenizer.json"} <= files
    with safe_open(out / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)  # LoRA weights only: no embeddings, no lm_head
    assert (out / "adapter_model.safetensors").stat().st_size < 200_000
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [0, 2, 4]
    stamp = json.loads((out / "medcite_adapter.json").read_text())
    best = max((h for h in history if h["step"]), key=lambda h: (h["quality"], -h["step"]))
    assert stamp["step"] == best["step"] and stamp["quality"] == best["quality"]
    report = (out / "report.md").read_text()
    assert f"**Kept: checkpoint-{stamp['step']}**" in report
    assert all(f"\n| {h['step']} | " in report for h in history)  # a table row per evaluation, base included
    # the adapter loads by config and the pipeline answers with it (NF4 base kept quantised, float base merged)
    gen = HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir), adapter=str(out), threads=1,
                                           load_in_4bit=quantization == "nf4"), DecodingConfig(max_new_tokens=5))
    a = Pipeline(_load_retriever(tiny_index), gen, None, PipelineConfig(k=2)).answer("How is Ewing sarcoma treated?")
    assert a.usage["completion_tokens"] == 5 and a.passages and gen.name.endswith("+tiny")


@pytest.mark.timeout(3000)  # hang guards inside: a busy machine takes minutes, the verdict is not speed
def test_killed_finetune_resumes_from_its_last_checkpoint(ft_data, tmp_path, tiny_index, tiny_llm_dir):
    import yaml

    cfg = ft_cfg(ft_data, tmp_path, tiny_index, tiny_llm_dir, max_steps=6, eval_steps=2)
    from core.config import config_to_dict

    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    cmd = [sys.executable, "-m", "medcite", "finetune", "--config", str(path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ckpt = tmp_path / "work" / "tiny" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 1200  # a hang guard, not a speed test: a busy machine takes minutes to get here
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ckpt.exists(), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no checkpoint"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "adapters" / "tiny").exists()  # nothing half-written where the adapter goes
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr and "checkpoint-" in done.stderr
    assert "scoring the base model" not in done.stderr  # the base score from the first run is reused
    state = json.loads((tmp_path / "work" / "tiny" / "checkpoints" / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    steps = {json.loads(x)["step"] for x in (tmp_path / "adapters" / "tiny" / "metrics.jsonl").read_text().splitlines()}
    assert steps == {0, 2, 4, 6}


def test_merge_writes_a_plain_model_that_answers_like_base_plus_adapter(ft_data, tmp_path, tiny_index, tiny_llm_dir):
    from finetune.train import merge, run
    from generator.config import DecodingConfig, GeneratorConfig
    from generator.hf import HFGenerator

    cfg = ft_cfg(ft_data, tmp_path, tiny_index, tiny_llm_dir, max_steps=2, eval_steps=2)
    adapter = run(cfg, load_retriever=_load_retriever, log=lambda _: None)
    # a rerun of the same run name with other settings is refused, not resumed from the old checkpoints
    from dataclasses import replace

    with pytest.raises(ConfigError, match="config.learning_rate"):
        run(replace(cfg, learning_rate=1e-3), load_retriever=_load_retriever, log=lambda _: None)
    # merge replaces only its own earlier output
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a previous `finetune merge` output"):
        merge(str(adapter), str(tmp_path / "precious"), log=lambda _: None)
    assert (tmp_path / "precious" / "notes.txt").read_text() == "mine"
    merged = merge(str(adapter), str(tmp_path / "merged"), log=lambda _: None)
    assert merge(str(adapter), str(tmp_path / "merged"), log=lambda _: None) == merged  # its own output: replaced
    d = DecodingConfig(max_new_tokens=8)
    msgs = [{"role": "user", "content": "What is gout?"}]
    with_adapter = HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir), adapter=str(adapter), threads=1), d)
    plain = HFGenerator.load(GeneratorConfig(model=str(merged), threads=1), d)
    assert plain.generate(msgs).text == with_adapter.generate(msgs).text


def test_ddp_on_two_cpu_processes_trains_both_ranks_and_writes_one_adapter(ft_data, tmp_path, tiny_index,
                                                                          tiny_llm_dir):
    """`accelerate launch` with 2 CPU processes (its multi-process launcher, torchrun, with gloo: accelerate's
    `--cpu` path needs MPI): the same job and config as one process. Both ranks train (their final LoRA weights
    agree: DDP averaged the gradients), rank 0 alone prepares the data and publishes one adapter."""
    import socket

    import yaml

    from core.config import config_to_dict

    cfg = ft_cfg(ft_data, tmp_path, tiny_index, tiny_llm_dir, max_steps=2, eval_steps=2, batch_size=1)
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           "-m", "medcite", "finetune", "--config", str(path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-3000:]
    ranks = [json.loads((tmp_path / "work" / "tiny" / f"rank-{i}.json").read_text()) for i in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert {r["backend"] for r in ranks} == {"gloo"} and {r["steps"] for r in ranks} == {2}
    assert ranks[0]["lora_sha256"] == ranks[1]["lora_sha256"]  # replicas in step after the all-reduces
    assert "rank 0/2: trained 2 steps" in log and "rank 1/2: trained 2 steps" in log
    assert log.count("kept checkpoint-") == 1 and log.count("scoring the base model") == 1
    assert log.count("formatting ") == 1  # the data was prepared once, by rank 0
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == ["tiny"]  # one adapter, no leftovers
    assert (tmp_path / "adapters" / "tiny" / "adapter_model.safetensors").is_file()
    # it trained: the published weights differ from a fresh LoRA initialisation (B starts at zero)
    from safetensors.numpy import load_file

    weights = load_file(tmp_path / "adapters" / "tiny" / "adapter_model.safetensors")
    assert any(abs(v).max() > 0 for k, v in weights.items() if "lora_B" in k)
