"""Load the generator a config names (llama.cpp, local transformers or a remote OpenAI-compatible server), once, at
start-up: `medcite serve`, `ask`, the evaluation and the benchmarks load it the same way."""

from __future__ import annotations

import sys
from collections.abc import Callable

from core.types import Generator
from generator.config import DecodingConfig, GeneratorConfig


def load_generator(gen: GeneratorConfig | None = None, decoding: DecodingConfig | None = None,
                   log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)) -> Generator:
    gen, decoding = gen or GeneratorConfig(), decoding or DecodingConfig()
    if gen.backend == "remote":
        from generator.remote import RemoteGenerator

        return RemoteGenerator.from_config(gen, decoding)
    if gen.backend == "llamacpp":
        from generator.llamacpp import LlamaCppGenerator

        return LlamaCppGenerator.load(gen, decoding, log=log)
    from generator.hf import HFGenerator

    return HFGenerator.load(gen, decoding, log=log)
