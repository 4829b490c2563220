"""Shared fixtures. Offline: HF_HUB_OFFLINE is read when huggingface_hub is imported, so it is set first.

- `tiny_embedder`: a 2-layer, 32-wide BERT sentence-transformers model built in code (random weights, the
  packaged MiniLM's WordPiece vocabulary), saved to a temp dir: real code paths, milliseconds per batch.
- `fixture_data`: a self-written data dir with MedQuAD-style XML (incl. a broken file), WikiDoc JSON, JSONL.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["MEDCITE_TRIAGE_MODEL"] = "off"  # the rules alone unless a test sets a learned layer: a trained
# artifacts/triage on the developer's machine must not change what the tests see

import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDCITE_DATA_DIR", ROOT.parent / "shared" / "data"))


def _qa(qtype: str, question: str, answer: str | None) -> str:
    a = f"<Answer>{answer}</Answer>" if answer is not None else "<Answer></Answer>"
    return f'<QAPair pid="x"><Question qid="q" qtype="{qtype}">{question}</Question>{a}</QAPair>'


def _doc(source: str, url: str, focus: str, pairs: list[str]) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Document id="d" source="{source}" url="{url}">'
            f"<Focus>{focus}</Focus><QAPairs>{''.join(pairs)}</QAPairs></Document>")


LONG = " ".join(f"Sentence {i} describes aspirin dosing and bleeding risk in adults." for i in range(40))


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    cancer = root / "medquad" / "1_CancerGov_QA"
    gard = root / "medquad" / "2_GARD_QA"
    cancer.mkdir(parents=True)
    gard.mkdir(parents=True)
    (cancer / "0000001_1.xml").write_text(_doc("CancerGov", "https://example.org/ewing", "Ewing Sarcoma", [
        _qa("information", "What is (are) Ewing Sarcoma ?",
            "Key Points\n    - Ewing sarcoma is a bone tumor.    - Biopsy diagnoses it.\n    \n    \n"
            "    Ewing sarcoma is a type of tumor that forms in bone or soft tissue of adolescents."),
        _qa("treatment", "What are the treatments for Ewing Sarcoma ?",
            "Chemotherapy,   surgery and radiation therapy\n\n     treat Ewing sarcoma of the femur."),
        _qa("outlook", "What is the outlook for Ewing Sarcoma ?", None),
    ]))
    (cancer / "0000002_1.xml").write_text(_doc("CancerGov", "https://example.org/aspirin", "Aspirin Use", [
        _qa("considerations", "What to consider about Aspirin Use ?", LONG),
    ]))
    (gard / "0000004.xml").write_text(_doc("GARD", "https://example.org/abcd", "ABCD syndrome", [
        _qa("symptoms", "What are the symptoms of ABCD syndrome ?",
            "What are the signs and symptoms of ABCD syndrome? Albinism and deafness are typical signs."),
        # an exact duplicate of the Ewing treatment answer after cleaning
        _qa("treatment", "How to treat ABCD syndrome ?",
            "Chemotherapy, surgery and radiation therapy\ntreat Ewing sarcoma of the femur."),
        _qa("causes", "What causes ABCD syndrome ?",
            "Is it inherited? Mutations in the EDNRB gene cause ABCD syndrome in most families."),
    ]))
    (gard / "0000005.xml").write_text("<Document><Focus>broken")  # does not parse: reported and skipped
    wiki = root / "wikidoc"
    wiki.mkdir()
    (wiki / "wd.json").write_text(json.dumps([
        {"instruction": "Answer this question truthfully", "input": "What are the symptoms of Allergy?",
         "output": "Allergy symptoms include sneezing, itchy eyes and hives after pollen exposure."},
        {"instruction": "Answer this question truthfully", "input": "What is gout?", "output": ""},
        {"instruction": "Answer this question truthfully", "input": "What causes migraine?",
         "output": "Migraine headaches may be triggered by stress, hormones and certain foods like cheese."},
    ]))
    (root / "extra.jsonl").write_text(
        json.dumps({"id": "x1", "title": "Insulin pump", "text": "An insulin pump delivers insulin through a "
                    "catheter under the skin.", "url": "https://example.org/pump", "source": "devices"}) + "\n")
    return root


FIXTURE_CORPORA = ("medquad:medquad", "wikidoc:wikidoc/wd.json", "jsonl:extra.jsonl")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    from retriever.embedder import resolve_embedder

    return Path(resolve_embedder(""))


@pytest.fixture(scope="session")
def tiny_embedder(tmp_path_factory, minilm_dir) -> Path:
    """A tiny BERT sentence-transformers model built in code."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny_embedder")
    hf_dir = out / "hf"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=256)).save_pretrained(hf_dir)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, hf_dir / name)
    word = Transformer(str(hf_dir), max_seq_length=128)
    model = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension(), "mean"), Normalize()],
                                device="cpu")
    model.save(str(out / "st"))
    return out / "st"


@pytest.fixture()
def index_config(tmp_path, fixture_data, tiny_embedder):
    from index_build.config import IndexConfig

    def make(**kw):
        base = dict(data_dir=str(fixture_data), corpora=FIXTURE_CORPORA, out=str(tmp_path / "index"),
                    embedder=str(tiny_embedder), chunk_tokens=32, chunk_overlap=8, batch_size=4, shard_size=4,
                    threads=1)
        base.update(kw)
        return IndexConfig(**base)

    return make


CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide Llama with a byte-level BPE tokenizer trained in code and a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny_llm")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator([LONG, "Ewing sarcoma is treated with chemotherapy [1].", "What is gout? [2]"] * 20, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    tok.save_pretrained(out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_generator(tiny_llm_dir):
    from generator.config import DecodingConfig, GeneratorConfig
    from generator.hf import HFGenerator

    return HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir), threads=1, queue_size=2),
                            DecodingConfig(max_new_tokens=12))


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, fixture_data, tiny_embedder) -> Path:
    from index_build.build import build_index
    from index_build.config import IndexConfig

    out = tmp_path_factory.mktemp("tiny_index") / "index"
    build_index(IndexConfig(data_dir=str(fixture_data), corpora=FIXTURE_CORPORA, out=str(out),
                            embedder=str(tiny_embedder), chunk_tokens=32, chunk_overlap=8, threads=1),
                log=lambda _: None)
    return out
