"""Loading and scoring the two judges of the verification stage.

    from pipeline.verify.judges import Judges
    judges = Judges.load("artifacts/judges")          # both, each with its calibration.json; missing ones are None
    judges.faithfulness.score([(passage, sentence)])  # -> [P(the passage states the sentence)]
    judges.answerhood.score([(question, "title\\nsentence")])
    judges.describe()                                 # what /readyz and every answer report

A judge directory is a sentence-transformers CrossEncoder written by `medcite train-judges` with
`calibration.json` beside it (the threshold chosen on held-out documents, with its numbers): the threshold
travels with the model that produces the score. Without a faithfulness judge the lexical judge of pipeline.verify.support
runs (overlap + embedder cosine); `Judges.describe()` says which.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from core.errors import ModelLoadError
from pipeline.verify.config import DEFAULT_JUDGES, VerifyConfig
from pipeline.verify.support import SupportJudge

CALIBRATION = "calibration.json"


@dataclass
class CrossEncoderJudge:
    """A one-logit CrossEncoder whose sigmoid is the judge's probability, with its calibrated threshold."""

    model: object
    path: str
    calibration: dict
    precision: str = "fp32"

    @property
    def threshold(self) -> float:
        """The threshold calibrated at the precision this judge runs at (fp32's when none was)."""
        at = self.calibration.get("precisions", {}).get(self.precision, {})
        return float(at.get("threshold", self.calibration["threshold"]))

    @property
    def gate(self) -> float:
        """The answerhood scorer's no-answer gate: fp32's at every precision. The int8 scorer's answerhood scores
        sit higher than fp32's; a gate chosen on its own scores by the same rule (0.392 against 0.277) refused 13%
        of the consumer dev questions and 42% of the messages, against 6% and 25% at fp32's gate (both rules keep
        97% of MedQuAD validation questions, and consumer questions score lower): a gate for consumer questions
        needs calibrating on them (issue 35), not on templates."""
        return float(self.calibration.get("gate", {}).get("threshold", 0.0))

    @classmethod
    def load(cls, path: str | Path, precision: str = "fp32") -> CrossEncoderJudge:
        path = Path(path)
        if not (path / "config.json").is_file() or not (path / CALIBRATION).is_file():
            raise ModelLoadError(f"judge {path} is not a trained judge directory (model + {CALIBRATION}); train it "
                                 "with `make demo` or `make models` (medcite train-judges), or set verify.judges: off")
        from sentence_transformers import CrossEncoder
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            model = CrossEncoder(str(path), device="cpu", local_files_only=True)
            if precision == "int8":
                quantize_int8(model)
            calibration = json.loads((path / CALIBRATION).read_text())
            float(calibration["threshold"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelLoadError(f"judge {path} could not be loaded: {str(e).splitlines()[0]}") from None
        return cls(model, str(path), calibration, precision)

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        logits = self.model.predict(pairs, batch_size=32, show_progress_bar=False,  # type: ignore[attr-defined]
                                    activation_fn=_identity)
        return [round(1 / (1 + math.exp(-float(x))), 4) for x in logits]

    def describe(self) -> dict:
        at = {**self.calibration, **self.calibration.get("precisions", {}).get(self.precision, {})}
        return {"path": self.path, "threshold": self.threshold, "precision": self.precision,
                **{k: at[k] for k in ("positives_kept", "negatives_caught", "calibrated_on") if k in at}}


def quantize_int8(model) -> None:
    """torch's dynamic int8 quantization of a model's Linear layers, in place: weights int8, activations
    quantized per batch. The faithfulness judge scored the 1178-pair probe 1.4-1.6x faster on this 2-core box;
    the probe-set numbers (each precision at its own calibrated threshold, int8 beside fp32) are in
    benchmarks/results/judges.json."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch.ao.quantization's deprecation notice (torchao is its successor)
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


def _identity(x):
    return x


@dataclass
class Judges:
    """The faithfulness judge and the answerhood scorer; either may be absent (None)."""

    faithfulness: CrossEncoderJudge | None = None
    answerhood: CrossEncoderJudge | None = None

    @classmethod
    def load(cls, root: str | Path, precision: str = "fp32") -> Judges:
        root = Path(root)
        got = {name: CrossEncoderJudge.load(root / name, precision) for name in ("faithfulness", "answerhood")
               if (root / name).exists()}
        if not got:
            raise ModelLoadError(f"{root} holds no trained judge (faithfulness/ or answerhood/); train them with "
                                 "`make demo` or `make models`, or set verify.judges: off")
        return cls(**got)

    def describe(self) -> dict:
        return {"faithfulness": self.faithfulness.describe() if self.faithfulness else "lexical",
                "answerhood": self.answerhood.describe() if self.answerhood else "embedder cosine"}


def resolve_judges(setting: str) -> str:
    """The judge directory to load ("" = none): `off` for none, a directory as configured; unset, the one
    `make demo` writes, when it exists (as the tuned index is picked up)."""
    if setting == "off":
        return ""
    if setting:
        return setting
    return DEFAULT_JUDGES if (Path(DEFAULT_JUDGES) / "faithfulness" / CALIBRATION).is_file() else ""


def load_judges(setting: str, precision: str = "int8") -> Judges | None:
    path = resolve_judges(setting)
    return Judges.load(path, precision) if path else None


def support_judge(embed, cfg: VerifyConfig, judges: Judges | None) -> tuple[SupportJudge, float]:
    """The faithfulness judge in force and its threshold: the trained one with its calibration (or
    verify.judge_threshold), else the lexical judge at verify.support_threshold."""
    if judges is not None and judges.faithfulness is not None:
        return (SupportJudge(model=judges.faithfulness),
                cfg.judge_threshold or judges.faithfulness.threshold)
    return SupportJudge(embed=embed, lexical_weight=cfg.lexical_weight), cfg.support_threshold
