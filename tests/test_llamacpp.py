"""The llama.cpp backend with the packaged SmolLM2 GGUF: the product's decoding behaviours, the GGUF export that
serves merged adapters (checked against transformers' own logits), and the refusals."""

import threading
import time

import pytest

from core.errors import ConfigError, InvalidRequestError, ModelLoadError
from generator.config import DecodingConfig, GeneratorConfig

pytestmark = pytest.mark.slow
llama_cpp = pytest.importorskip("llama_cpp")

MSGS = [{"role": "user", "content": "List three common symptoms of the flu."}]


@pytest.fixture(scope="module")
def lc():
    """The packaged Q4_1 file as is: the very weights transformers dequantizes, so the two can be compared."""
    from generator.llamacpp import LlamaCppGenerator

    return LlamaCppGenerator.load(GeneratorConfig(backend="llamacpp", gguf_quant="as-is", context_tokens=1024),
                                  DecodingConfig(max_new_tokens=48), log=lambda _: None)


@pytest.fixture(scope="module")
def hf_base():
    """The same packaged weights through transformers (dequantized fp32), the reference for the export."""
    from generator.hf import HFGenerator

    return HFGenerator.load(GeneratorConfig(), DecodingConfig(max_new_tokens=48), log=lambda _: None)


def test_greedy_is_byte_identical_and_stops_at_the_models_own_end_of_turn(lc):
    assert lc.stop_ids == [lc.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    a, b = lc.generate(MSGS), lc.generate(MSGS)
    assert a.text and a.text.encode() == b.text.encode() and a == b
    short = lc.generate(MSGS, max_new_tokens=5)
    assert short.completion_tokens == 5 and short.stop_reason == "length"
    ended = lc.generate([{"role": "user", "content": "Say only the word yes."}], max_new_tokens=20)
    assert ended.stop_reason == "end_of_turn" and ended.completion_tokens < 20


def test_stream_pieces_concatenate_to_the_answer(lc):
    pieces = list(lc.stream(MSGS))
    final = pieces[-1]
    assert final == lc.generate(MSGS) and "".join(pieces[:-1]).strip() == final.text and len(pieces) > 5


def test_penalty_scope_is_applied_to_generated_tokens_only(lc):
    """The prompt mentions 'fever' three times: a penalty over the prompt too pushes the answer off it."""
    msgs = [{"role": "user", "content": "Fever, fever, fever. What is a fever? Answer in one sentence."}]
    gen_only = lc.generate(msgs, max_new_tokens=24)
    every = lc.generate(msgs, max_new_tokens=24, penalty_scope="all")
    off = lc.generate(msgs, max_new_tokens=24, repetition_penalty=1.0)
    assert gen_only.text != every.text
    assert "fever" in gen_only.text.lower()
    assert off.text  # penalty 1.0 is plain greedy


def test_prompt_tokens_are_the_transformers_prompt(lc, hf_base):
    assert lc._prompt_ids(MSGS) == hf_base._prompt_ids(MSGS)
    assert lc.count_tokens("gout and allopurinol") == hf_base.count_tokens("gout and allopurinol")


def test_same_answer_as_transformers_on_the_same_weights(lc, hf_base):
    """Q4_1 weights run through llama.cpp (int8 activations in the dot products) and the same weights
    dequantized to fp32 in transformers: greedy answers agree on their first tokens."""
    a, b = lc.generate(MSGS, max_new_tokens=12), hf_base.generate(MSGS, max_new_tokens=12)
    assert a.text.split()[:4] == b.text.split()[:4]


def test_cancel_and_deadline(lc):
    cancel = threading.Event()
    cancel.set()
    g = lc.generate(MSGS, cancel=cancel)
    assert g.stop_reason == "cancelled" and g.completion_tokens == 0  # no prefill for a dead request
    late = lc.generate(MSGS, deadline=time.monotonic() - 1)
    assert late.stop_reason == "timeout" and late.completion_tokens == 0
    stream = lc.stream(MSGS, max_new_tokens=48)
    next(stream)
    stream.close()  # the consumer went away: decoding stops, the lock is free again
    assert lc.generate(MSGS, max_new_tokens=3).completion_tokens == 3


def test_option_logprobs_match_transformers(lc, hf_base):
    msgs = [{"role": "user", "content": "Is aspirin a painkiller? Answer A (yes) or B (no)."}]
    ours, ref = lc.option_logprobs(msgs, ["A", "B", " yes it is"]), hf_base.option_logprobs(msgs, ["A", "B", " yes it is"])
    assert all(x < 0 for x in ours)
    assert max(abs(x - y) for x, y in zip(ours, ref, strict=True)) < 0.5
    assert (ours[0] > ours[1]) == (ref[0] > ref[1])


def test_context_overflow_is_a_request_error(lc):
    with pytest.raises(InvalidRequestError, match="context"):
        lc.generate([{"role": "user", "content": "word " * 1100}])


def test_export_of_transformers_weights_gives_transformers_logits(hf_base, tmp_path):
    """The GGUF writer behind merged adapters: HF weights -> GGUF (q/k rows permuted to llama.cpp's rotary
    layout, the base's tokenizer and metadata kept) -> llama.cpp. In f32 its logits are transformers' logits."""
    import numpy as np
    import torch

    from generator.hf import packaged_gguf
    from generator.llamacpp import export_gguf

    out = export_gguf(packaged_gguf(), hf_base.model.state_dict(), tmp_path / "same.f32.gguf", "f32")
    assert out.is_file() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    llm = llama_cpp.Llama(model_path=str(out), n_ctx=256, verbose=False)
    ids = hf_base._prompt_ids(MSGS)
    llm.eval(ids)
    ours = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
    with torch.inference_mode():
        ref = hf_base.model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
    assert int(ours.argmax()) == int(ref.argmax())
    assert np.corrcoef(ours, ref)[0, 1] > 0.999


def test_adapter_is_merged_quantized_and_its_prompt_version_checked(tmp_path, hf_base):
    """A LoRA adapter with non-zero weights changes the served answer; a wrong prompt stamp is refused."""
    import copy
    import json

    from peft import LoraConfig, get_peft_model

    from generator.llamacpp import LlamaCppGenerator
    from generator.prompt import ADAPTER_STAMP, PROMPT_VERSION

    model = get_peft_model(copy.deepcopy(hf_base.model), LoraConfig(
        r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    model.save_pretrained(adapter)
    (adapter / ADAPTER_STAMP).write_text(json.dumps({"prompt_version": PROMPT_VERSION}))
    cfg = GeneratorConfig(backend="llamacpp", adapter=str(adapter), gguf_quant="q8_0", cache_dir=str(tmp_path / "c"),
                          context_tokens=512)
    tuned = LlamaCppGenerator.load(cfg, DecodingConfig(max_new_tokens=12), log=lambda _: None)
    merged = list((tmp_path / "c" / "models").glob("*.q8_0.gguf"))
    assert len(merged) == 1 and "+adapter [llama.cpp q8_0]" in tuned.name
    base_answer = hf_base.generate(MSGS, max_new_tokens=12).text
    assert tuned.generate(MSGS).text != base_answer
    (adapter / ADAPTER_STAMP).write_text(json.dumps({"prompt_version": "medcite-prompt-v0"}))
    with pytest.raises(ModelLoadError, match="prompt"):
        LlamaCppGenerator.load(cfg, DecodingConfig(), log=lambda _: None)


def test_default_serves_the_packaged_model_requantized_once(tmp_path):
    """The default (q4_0): llama.cpp re-encodes the packaged Q4_1 once into the cache; answers stay deterministic."""
    from generator.llamacpp import LlamaCppGenerator, file_type

    cfg = GeneratorConfig(backend="llamacpp", cache_dir=str(tmp_path), context_tokens=1024)
    assert GeneratorConfig().backend == "llamacpp" and cfg.gguf_quant == "q4_0"
    gen = LlamaCppGenerator.load(cfg, DecodingConfig(max_new_tokens=16), log=lambda _: None)
    made = list((tmp_path / "models").glob("*.q4_0.gguf"))
    assert len(made) == 1 and file_type(made[0]) == "q4_0" and gen.name.endswith("[llama.cpp q4_0]")
    a, b = gen.generate(MSGS), gen.generate(MSGS)
    assert a.text and a == b and a.prefill_ms is not None


def test_config_refusals():
    from generator.llamacpp import LlamaCppGenerator

    with pytest.raises(ConfigError, match="backend"):
        GeneratorConfig(backend="llama")
    with pytest.raises(ConfigError, match="gguf_quant"):
        GeneratorConfig(backend="llamacpp", gguf_quant="q3")
    with pytest.raises(ModelLoadError, match="gguf"):
        LlamaCppGenerator.load(GeneratorConfig(backend="llamacpp", model="/nonexistent/model"), DecodingConfig())
