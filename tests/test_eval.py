"""Offline evaluation: metrics on hand-made examples, statistics on synthetic data with known answers, and an
end-to-end run with a tiny model and index: determinism, resume after an interruption, report files."""

import json
from pathlib import Path

import pytest

from core.errors import ConfigError, DataError
from core.quality import (
    distinct_n,
    longest_list_run,
    quality_score,
    repeated_ngram_rate,
    summarize,
    token_f1,
)
from core.types import Answer, Citation, Hit, Passage
from evaluation.config import EvalConfig
from evaluation.metrics import citation_metrics, open_metrics, retrieval_metrics, rouge_l
from evaluation.stats import mcnemar, mean_ci, paired_bootstrap, win_loss_tie
from generator.config import DecodingConfig, GeneratorConfig

# --- metrics -----------------------------------------------------------------------------------------------------


def test_text_metrics_on_known_examples():
    assert token_f1("a b c", "a b d") == pytest.approx(2 / 3)
    assert token_f1("", "a") == 0.0
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert repeated_ngram_rate("a b c d a b c d", n=4) == pytest.approx(1 - 4 / 5)
    assert distinct_n("a b a b", 2) == pytest.approx(2 / 3)
    assert longest_list_run("Intro\n- a\n- b\n\n- c\nEnd\n1. x") == 3
    assert longest_list_run("Take aspirin, ibuprofen, naproxen, or acetaminophen.") == 4
    s = summarize([{"token_f1": 0.2, "end_of_turn": 1.0}, {"token_f1": 0.4, "end_of_turn": 0.0}])
    assert s == {"token_f1": pytest.approx(0.3), "end_of_turn": 0.5}
    assert quality_score(s, {"token_f1": 1.0, "end_of_turn": 0.2}) == pytest.approx(0.4)
    with pytest.raises(KeyError):
        quality_score(s, {"rouge_l": 1.0})


def _answer(text: str, passages: list[str], cited: list[int], invalid: list[int] = ()) -> Answer:
    hits = [Hit(Passage(f"r{i}#0", f"r{i}", f"T{i}", t, "s"), 1.0, i) for i, t in enumerate(passages, start=1)]
    return Answer("q", text, [Citation(m, hits[m - 1]) for m in cited], hits, list(invalid),
                  {"prompt_tokens": 1, "completion_tokens": 9, "total_tokens": 10}, {}, "end_of_turn", "m", "ix",
                  "v", "hybrid")


def test_citation_and_retrieval_metrics():
    a = _answer("Gout is treated with colchicine [1]. The moon orbits quickly [2]. No citation here. See [7].",
                ["Colchicine treats gout flares.", "Aspirin thins the blood."], [1, 2], [7])
    m = citation_metrics(a.text, [h.passage.text for h in a.passages])
    assert m["citation_validity"] == pytest.approx(2 / 3) and m["cites"] == 1.0
    assert m["cited_sentences"] == pytest.approx(2 / 4)
    assert m["lexical_support"] == pytest.approx(1 / 2)  # the moon sentence is not in passage 2
    assert retrieval_metrics(a, "r2") == {"recall_at_k": 1.0, "reciprocal_rank": 0.5}
    assert retrieval_metrics(a, "zz") == {"recall_at_k": 0.0, "reciprocal_rank": 0.0}
    assert retrieval_metrics(a, "dup", resolve=lambda r: "r1" if r == "dup" else r)["reciprocal_rank"] == 1.0
    full = open_metrics(a, "Colchicine treats gout.", "r1")
    assert {"token_f1", "rouge_l", "recall_at_k", "citation_support", "lexical_support", "end_of_turn",
            "runaway_list", "draft_token_f1", "draft_cites", "mode_generated", "invented_terms"} <= set(full)


# --- statistics --------------------------------------------------------------------------------------------------

def test_paired_statistics_on_synthetic_data():
    import numpy as np

    b = np.random.default_rng(1).uniform(0, 1, 400)
    shifted = paired_bootstrap(b + 0.1, b)
    assert shifted["mean_diff"] == pytest.approx(0.1) and shifted["ci_low"] == pytest.approx(0.1)
    noisy = paired_bootstrap(b + 0.05 + np.random.default_rng(2).normal(0, 0.1, 400), b, seed=3)
    assert noisy["ci_low"] < 0.05 < noisy["ci_high"] and noisy["ci_low"] > 0 and noisy["p_le_0"] == 0
    null = paired_bootstrap(b + np.random.default_rng(4).normal(0, 0.1, 400), b)
    assert null["ci_low"] < 0 < null["ci_high"]
    assert paired_bootstrap([1, 2], [0, 1]) == paired_bootstrap([1, 2], [0, 1])  # seeded
    assert win_loss_tie([1, 0.5, 0.2], [0.5, 0.5, 0.9]) == {"wins": 1, "losses": 1, "ties": 1}
    assert mcnemar([True] * 10 + [False] * 5, [False] * 10 + [False] * 5) == {"b": 10, "c": 0, "p_value": 0.001953}
    assert mcnemar([True, False], [False, True])["p_value"] == 1.0
    assert mcnemar([True], [True]) == {"b": 0, "c": 0, "p_value": 1.0}
    ci = mean_ci([0.0, 1.0] * 50)
    assert ci["mean"] == 0.5 and ci["ci_low"] < 0.5 < ci["ci_high"]


# --- end to end --------------------------------------------------------------------------------------------------

MIRAGE = {
    "pubmedqa": {f"p{i}": {"question": f"Does aspirin raise bleeding risk {i}?", "options": {"A": "yes", "B": "no",
                                                                                            "C": "maybe"},
                           "answer": "A"} for i in range(4)},
    "mmlu": {f"m{i}": {"question": f"Which drug treats Ewing sarcoma {i}?", "options": {
        "A": "chemotherapy", "B": "insulin", "C": "aspirin", "D": "none"}, "answer": "A"} for i in range(4)},
}


@pytest.fixture()
def eval_data(tmp_path, fixture_data) -> Path:
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "q1", "question": "How is Ewing sarcoma treated?", "gold_medquad_id": "1:0000001_1:2"},
        {"id": "q2", "question": "What causes ABCD syndrome?", "gold_medquad_id": "2:0000004:3"},
        {"id": "q3", "question": "What triggers migraine?", "gold_answer": "Stress and hormones trigger migraine."},
    ]) + "\n")
    (tmp_path / "mirage.json").write_text(json.dumps(MIRAGE))
    return tmp_path


def eval_cfg(eval_data, fixture_data, tiny_index, run: str, **kw) -> EvalConfig:
    base = dict(run_name=run, data_dir=str(fixture_data), questions=str(eval_data / "q.jsonl"),
                gold_corpora=("medquad:medquad",), index=str(tiny_index), arms=("base:none", "base:hybrid"),
                mirage=str(eval_data / "mirage.json"), mirage_tasks=("mmlu", "pubmedqa"), mirage_limit=6, k=2,
                out=str(eval_data / "out"), bootstrap_samples=200, decoding=DecodingConfig(max_new_tokens=6))
    base.update(kw)
    return EvalConfig(**base)


class CountingGenerator:
    """The real tiny HFGenerator, counting calls; raises KeyboardInterrupt after `stop_after` calls."""

    def __init__(self, inner, stop_after: int | None = None):
        self.inner, self.stop_after, self.calls = inner, stop_after, 0
        self.name, self.context_window = inner.name, inner.context_window
        self.count_tokens = inner.count_tokens

    def _tick(self):
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise KeyboardInterrupt

    def generate(self, messages, **kw):
        self._tick()
        return self.inner.generate(messages, **kw)

    def stream(self, messages, **kw):
        return self.inner.stream(messages, **kw)

    def option_logprobs(self, messages, options):
        self._tick()
        return self.inner.option_logprobs(messages, options)


def _loaders(tiny_generator, counter_box: list, stop_after=None):
    from retriever.search import IndexRetriever

    def load_generator(gcfg: GeneratorConfig, decoding: DecodingConfig):
        g = CountingGenerator(tiny_generator, stop_after)
        counter_box.append(g)
        return g

    return (lambda path: IndexRetriever.load(path, threads=1)), load_generator


def test_eval_end_to_end_is_deterministic_and_resumes(eval_data, fixture_data, tiny_index, tiny_generator):
    from evaluation.run import run_eval

    box: list = []
    out = run_eval(eval_cfg(eval_data, fixture_data, tiny_index, "a"), *_loaders(tiny_generator, box),
                   log=lambda _: None)
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == (3 + 6) * 2
    assert {r["task"] for r in rows} == {"open", "mirage/mmlu", "mirage/pubmedqa"}
    base_open = [r for r in rows if r["task"] == "open" and r["arm"] == "base:none"]
    rag_open = [r for r in rows if r["task"] == "open" and r["arm"] == "base:hybrid"]
    assert all(not r["passages"] for r in base_open) and all(len(r["passages"]) == 2 for r in rag_open)
    assert "recall_at_k" in rag_open[0]["metrics"] and "recall_at_k" not in base_open[0]["metrics"]
    assert all(r["pred"] in "ABCD" and r["metrics"]["accuracy"] in (0.0, 1.0) for r in rows if r["task"] != "open")
    summary = json.loads((out / "summary.json").read_text())
    comp = summary["tasks"]["open"]["comparisons"][0]
    assert (comp["reference"], comp["candidate"]) == ("base:none", "base:hybrid")
    assert {"mean_diff", "ci_low", "ci_high", "wins", "losses", "ties"} <= set(comp["metrics"]["token_f1"])
    assert "mcnemar" in summary["tasks"]["mirage/mmlu"]["comparisons"][0]
    assert summary["reproducibility"]["index_fingerprint"] and summary["reproducibility"]["prompt_version"]
    report = (out / "report.md").read_text()
    assert "Open-ended questions (n = 3)" in report and "MIRAGE" in report and "Reproducibility" in report
    for png in ("metrics_by_arm.png", "mirage_accuracy.png", "win_loss.png"):
        assert (out / png).stat().st_size > 1000
    # the same run again (fresh dir): byte-identical results
    out_b = run_eval(eval_cfg(eval_data, fixture_data, tiny_index, "b"), *_loaders(tiny_generator, []),
                     log=lambda _: None)
    assert (out_b / "results.jsonl").read_bytes() == (out / "results.jsonl").read_bytes()
    # interrupted after 5 model calls, then rerun: only the missing items are computed, same bytes at the end
    box = []
    with pytest.raises(KeyboardInterrupt):
        run_eval(eval_cfg(eval_data, fixture_data, tiny_index, "c"), *_loaders(tiny_generator, box, stop_after=5),
                 log=lambda _: None)
    assert not (eval_data / "out" / "c" / "results.jsonl").exists()
    box = []
    out_c = run_eval(eval_cfg(eval_data, fixture_data, tiny_index, "c"), *_loaders(tiny_generator, box),
                     log=lambda _: None)
    assert sum(g.calls for g in box) == 18 - 5
    assert (out_c / "results.jsonl").read_bytes() == (out / "results.jsonl").read_bytes()
    # a run dir holding other settings is refused, not mixed
    with pytest.raises(ConfigError, match=r"other settings \(config.k\)"):
        run_eval(eval_cfg(eval_data, fixture_data, tiny_index, "c", k=3), *_loaders(tiny_generator, []),
                 log=lambda _: None)
    from dataclasses import replace

    threads = eval_cfg(eval_data, fixture_data, tiny_index, "c")
    threads = replace(threads, generator=replace(threads.generator, threads=threads.generator.threads + 1))
    with pytest.raises(ConfigError, match="config.generator"):  # float sums differ across thread counts
        run_eval(threads, *_loaders(tiny_generator, []), log=lambda _: None)


def test_eval_input_errors(eval_data, fixture_data, tiny_index, tmp_path):
    from evaluation.run import load_mirage, load_open_questions

    with pytest.raises(ConfigError, match="needs adapter"):
        EvalConfig(arms=("base:none", "tuned:hybrid"))
    with pytest.raises(ConfigError, match="not <base"):
        EvalConfig(arms=("big:none",))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "question": "x"}\n')
    with pytest.raises(DataError, match="gold"):
        load_open_questions(eval_cfg(eval_data, fixture_data, tiny_index, "x", questions=str(bad)), print)
    bad.write_text('{"id": 1, "question": "x", "gold_medquad_id": "9:nope:1"}\n')
    with pytest.raises(DataError, match="not found"):
        load_open_questions(eval_cfg(eval_data, fixture_data, tiny_index, "x", questions=str(bad)), lambda _: None)
    items = load_mirage(eval_cfg(eval_data, fixture_data, tiny_index, "x", mirage_limit=3))
    assert [i.task for i in items].count("mirage/mmlu") == 2 and len(items) == 3  # stratified over tasks
    assert [i.id for i in items] == [i.id for i in load_mirage(eval_cfg(eval_data, fixture_data, tiny_index, "x",
                                                                        mirage_limit=3))]


def test_eval_cli_errors_are_one_line(tmp_path):
    from medcite.cli import main

    assert main(["eval", "--questions", str(tmp_path / "none.jsonl"), "--set", "mirage=",
                 "--out", str(tmp_path)]) == 2
