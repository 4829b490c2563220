"""Every YAML in configs/ loads into its dataclass, the shipped defaults agree with the code, and docs/configuration.md
documents every field."""

import dataclasses
from pathlib import Path

import pytest

from core.config import field_docs, load_config
from core.errors import ConfigError
from evaluation.config import EvalConfig
from finetune.config import FinetuneConfig, FinetuneDataConfig
from generator.config import DecodingConfig, GeneratorConfig
from index_build.config import IndexConfig
from service.config import ServeConfig
from train.config import JudgeTrainConfig, RetrieverTrainConfig

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
CLASSES = (IndexConfig, ServeConfig, GeneratorConfig, DecodingConfig, FinetuneConfig, FinetuneDataConfig, EvalConfig)


def _class_for(name: str) -> type:
    return {"index": IndexConfig, "finetune": FinetuneConfig, "eval": EvalConfig,
            "retriever": RetrieverTrainConfig, "judges": JudgeTrainConfig}.get(name.split("-")[0].split(".")[0], ServeConfig)


def test_every_yaml_loads(monkeypatch):
    monkeypatch.delenv("MEDCITE_DATA_DIR", raising=False)
    monkeypatch.delenv("MEDCITE_API_KEY", raising=False)
    files = sorted(CONFIGS.glob("*.yaml"))
    assert {f.name for f in files} >= {"index.yaml", "serve.yaml", "serve-llama3b.yaml", "serve-remote.yaml",
                                       "serve-vllm.yaml", "finetune-smollm2.yaml", "finetune-llama3.2-3b.yaml",
                                       "eval.yaml", "judges.yaml"}
    for f in files:
        assert f.read_text().startswith("#") and "Run" in f.read_text().split("\n\n")[0], f"{f} needs its run line"
        if f.name.startswith("accelerate-"):  # a launcher config, read by accelerate itself
            from accelerate.commands.config.config_args import ClusterConfig

            launch = ClusterConfig.from_yaml_file(str(f))
            assert launch.distributed_type == "MULTI_GPU" and launch.num_processes >= 2
            continue
        cls = _class_for(f.name)
        if cls is ServeConfig and "host: 0.0.0.0" in f.read_text():
            # a server reachable from other machines refuses to start without a key: say so, then give one
            with pytest.raises(ConfigError, match="no API key"):
                load_config(cls, f)
            monkeypatch.setenv("MEDCITE_API_KEY", "k")
        cfg = load_config(cls, f)
        monkeypatch.delenv("MEDCITE_API_KEY", raising=False)
        assert cfg is not None
    # the CPU defaults in code are exactly the shipped files
    assert load_config(IndexConfig, CONFIGS / "index.yaml") == IndexConfig()
    assert load_config(ServeConfig, CONFIGS / "serve.yaml") == ServeConfig()
    prod = load_config(ServeConfig, CONFIGS / "serve-llama3b.yaml", allow_unauthenticated=True)
    assert prod.generator.load_in_4bit and prod.generator.adapter and prod.decoding.repetition_penalty == 1.3
    assert load_config(EvalConfig, CONFIGS / "eval.yaml") == EvalConfig()
    cpu = load_config(FinetuneConfig, CONFIGS / "finetune-smollm2.yaml")
    assert cpu.data.mix == FinetuneConfig().data.mix and cpu.lora_r == 8 and cpu.quantization == "none"
    gpu = load_config(FinetuneConfig, CONFIGS / "finetune-llama3.2-3b.yaml")
    assert gpu.quantization == "nf4" and gpu.model == "meta-llama/Llama-3.2-3B-Instruct" and gpu.data.max_answer_tokens == 512
    assert set(gpu.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    remote = load_config(ServeConfig, CONFIGS / "serve-remote.yaml")
    assert remote.generator.backend == "remote" and remote.generator.remote_extra_body == {"use_retrieval": False}


def test_every_field_is_documented_in_code_and_docs():
    readme = (ROOT / "docs" / "configuration.md").read_text()
    for cls in CLASSES:
        docs = field_docs(cls)
        assert {f.name for f in dataclasses.fields(cls)} == set(docs), cls
        for name in docs:
            assert f"`{name}`" in readme or f".{name}`" in readme or name in ("generator", "decoding", "data"), name


def test_env_and_overrides(monkeypatch):
    monkeypatch.setenv("MEDCITE_DATA_DIR", "/data/here")
    assert IndexConfig().data_dir == "/data/here"
    assert load_config(IndexConfig, CONFIGS / "index.yaml").data_dir == "/data/here"
    cfg = load_config(IndexConfig, CONFIGS / "index.yaml", data_dir="/x", limit=5)
    assert (cfg.data_dir, cfg.limit) == ("/x", 5)
    monkeypatch.setenv("MEDCITE_API_KEY", "k")
    serve = load_config(ServeConfig, CONFIGS / "serve.yaml", **{"generator.model": "m", "k": 4})
    assert (serve.generator.model, serve.k, serve.api_key) == ("m", 4, "k")
    assert "api_key=" not in repr(serve)  # the key never reaches a log line through the config's repr


@pytest.mark.parametrize("cls,bad", [
    (IndexConfig, dict(chunk_tokens=8)), (IndexConfig, dict(chunk_overlap=150)),
    (IndexConfig, dict(faiss_index="annoy")), (IndexConfig, dict(corpora=("pdf:x",))),
    (IndexConfig, dict(batch_size=0)), (ServeConfig, dict(k=0)), (ServeConfig, dict(mode="x")),
    (GeneratorConfig, dict(backend="remote")), (GeneratorConfig, dict(dtype="int3")),
    (DecodingConfig, dict(repetition_penalty=3.0)), (DecodingConfig, dict(penalty_scope="prompt")),
    (DecodingConfig, dict(max_new_tokens=0)),
    (FinetuneConfig, dict(quantization="int8")), (FinetuneConfig, dict(target_modules=("lm_head",))),
    (FinetuneConfig, dict(run_name="../x")), (FinetuneDataConfig, dict(mix={"pdf": 1.0})),
    (FinetuneDataConfig, dict(gold_probability=1.5)), (FinetuneDataConfig, dict(sources=("xml:x",))),
    (EvalConfig, dict(arms=())), (EvalConfig, dict(arms=("base:none", "base:none"))),
    (EvalConfig, dict(mirage_tasks=("usmle",))),
])
def test_invalid_values_are_config_errors(cls, bad):
    with pytest.raises(ConfigError):
        cls(**bad)


def test_nested_yaml_errors_name_the_key(tmp_path):
    (tmp_path / "s.yaml").write_text("generator:\n  modle: x\n")
    with pytest.raises(ConfigError, match="generator.modle"):
        load_config(ServeConfig, tmp_path / "s.yaml")
