"""HFGenerator with a tiny Llama built in code: stop tokens, determinism, penalty scopes, queue, overrides."""

import threading

import pytest
import torch

from core.errors import InvalidRequestError, ModelLoadError, OverloadedError
from generator.config import DecodingConfig, GeneratorConfig
from generator.hf import HFGenerator, apply_adapter, logits_processor
from generator.local import stop_token_ids

MSGS = [{"role": "system", "content": "Answer from the passages."}, {"role": "user", "content": "What is gout?"}]


def test_stop_ids_come_from_the_model_files(tiny_generator):
    tok = tiny_generator.tokenizer
    assert tiny_generator.stop_ids == [tok.convert_tokens_to_ids("<|im_end|>")]

    class GenCfg:  # a Llama-3-style generation config lists several end-of-turn ids
        eos_token_id = [128001, 128008, 128009]

    class Tok:
        eos_token_id = 128009

    assert stop_token_ids(Tok(), GenCfg().eos_token_id) == [128001, 128008, 128009]


def test_same_input_gives_byte_identical_output(tiny_generator):
    a = tiny_generator.generate(MSGS)
    b = tiny_generator.generate(MSGS)
    assert a.text.encode() == b.text.encode() and a == b
    assert a.completion_tokens == 12 and a.stop_reason == "length"  # random weights never say <|im_end|>
    pieces = list(tiny_generator.stream(MSGS))
    assert pieces[-1] == a and "".join(pieces[:-1]).strip() == a.text


def test_overrides_are_bounded(tiny_generator):
    assert tiny_generator.generate(MSGS, max_new_tokens=3).completion_tokens == 3
    for bad in (dict(max_new_tokens=0), dict(max_new_tokens=5000), dict(repetition_penalty=0.5),
                dict(penalty_scope="prompt"), dict(temperature=0.7)):
        with pytest.raises(InvalidRequestError):
            tiny_generator.generate(MSGS, **bad)


def test_generated_only_penalty_leaves_prompt_tokens_alone():
    proc = logits_processor(2.0, prompt_len=3)
    ids = torch.tensor([[5, 6, 7, 8, 8]])  # prompt 5,6,7; generated 8,8
    scores = torch.tensor([[0.0, 0, 0, 0, 0, 4.0, 4.0, 4.0, 4.0, -4.0]])
    out = proc(ids, scores.clone())
    assert out[0, 5:8].tolist() == [4.0, 4.0, 4.0]  # prompt tokens: unpenalised
    assert out[0, 8].item() == 2.0 and out[0, 9].item() == -4.0


def test_penalty_scope_changes_decoding_inputs(tiny_generator):
    ids, mask = tiny_generator._inputs(MSGS)
    gen_only = tiny_generator._generate_kwargs(ids, mask, DecodingConfig(penalty_scope="generated"))
    every = tiny_generator._generate_kwargs(ids, mask, DecodingConfig(penalty_scope="all"))
    assert "repetition_penalty" not in gen_only and len(gen_only["logits_processor"]) == 1
    assert every["repetition_penalty"] == 1.3 and "logits_processor" not in every
    for kw in (gen_only, every):
        assert kw["do_sample"] is False and "no_repeat_ngram_size" not in kw
        assert kw["max_new_tokens"] == 256 and kw["eos_token_id"] == tiny_generator.stop_ids


def test_full_queue_is_refused(tiny_llm_dir):
    gen = HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir), queue_size=1), DecodingConfig(max_new_tokens=2))
    gen._lock.acquire()  # hold the model, so callers pile up: one would be generating, one waiting
    callers = [threading.Thread(target=gen.generate, args=(MSGS,)) for _ in range(2)]
    for t in callers:
        t.start()
    for _ in range(500):  # until both callers hold their slots
        if gen._slots._value == 0:
            break
        threading.Event().wait(0.01)
    assert gen._slots._value == 0
    with pytest.raises(OverloadedError):
        gen.generate(MSGS)
    gen._lock.release()
    for t in callers:
        t.join(30)
    assert gen.generate(MSGS).completion_tokens == 2  # slots are given back


def test_load_errors(tmp_path, tiny_llm_dir):
    with pytest.raises(ModelLoadError):
        HFGenerator.load(GeneratorConfig(model=str(tmp_path / "missing.gguf")), DecodingConfig())
    with pytest.raises(ModelLoadError, match="not a PEFT adapter"):
        apply_adapter(None, str(tmp_path), merge=True)


def test_lora_adapter_applies_and_prompt_stamp_is_checked(tmp_path, tiny_llm_dir):
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llm_dir)
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"]))
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # non-zero B so the adapter changes outputs
    lora.save_pretrained(tmp_path / "adapter")
    plain = HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir)), DecodingConfig(max_new_tokens=8))
    tuned = HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir), adapter=str(tmp_path / "adapter")),
                             DecodingConfig(max_new_tokens=8))
    assert tuned.name.endswith("+adapter")
    assert tuned.generate(MSGS).text != plain.generate(MSGS).text
    (tmp_path / "adapter" / "medcite_adapter.json").write_text(json.dumps({"prompt_version": "old-prompt"}))
    with pytest.raises(ModelLoadError, match="trained with prompt old-prompt"):
        HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir), adapter=str(tmp_path / "adapter")), DecodingConfig())


def test_4bit_nf4_loading(tiny_llm_dir):
    """QLoRA-style serving: base weights in 4-bit NF4 (bitsandbytes runs it on CPU)."""
    import bitsandbytes as bnb

    gen = HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir), load_in_4bit=True), DecodingConfig(max_new_tokens=4))
    linear4 = [m for m in gen.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linear4) == 2 * 7  # q,k,v,o,gate,up,down in each of the 2 layers
    assert linear4[0].weight.quant_type == "nf4"
    out = gen.generate(MSGS)
    assert out.completion_tokens == 4 and out == gen.generate(MSGS)
