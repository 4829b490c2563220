"""The `medcite` CLI: start-up stays light, user errors are one line with exit status 2, batch search format."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medcite.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err  # one line, never a traceback
    return err[0]


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from medcite.cli import build_parser\n"
            "try:\n    build_parser().parse_args(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'faiss', 'transformers', 'sentence_transformers', 'litestar') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip().endswith("[]"), out.stdout
    assert "index" in out.stdout and "search" in out.stdout


def test_index_errors(capsys, tmp_path):
    assert main(["index", "--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "i")]) == 2
    assert "data directory" in _error_line(capsys)
    assert main(["index", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in _error_line(capsys)
    (tmp_path / "bad.yaml").write_text("chunk_tokenz: 10\n")
    assert main(["index", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "unknown setting(s) chunk_tokenz" in _error_line(capsys)
    (tmp_path / "bad2.yaml").write_text("chunk_tokens: lots\n")
    assert main(["index", "--config", str(tmp_path / "bad2.yaml")]) == 2
    assert "chunk_tokens must be int" in _error_line(capsys)
    # flags are coerced and checked like YAML values: the same one-line error, status 2
    assert main(["index", "--limit", "many"]) == 2
    assert "limit must be int, got 'many'" in _error_line(capsys)
    assert main(["index", "--set", "chunk_overlap=500"]) == 2
    assert "chunk_overlap must be in" in _error_line(capsys)
    with pytest.raises(SystemExit) as e:  # argparse's own one-line usage error for a value outside the choices
        main(["index", "--faiss-index", "annoy"])
    assert e.value.code == 2


def test_search_errors_without_index(capsys, tmp_path):
    assert main(["search", "fever", "--index", str(tmp_path / "none")]) == 2
    line = _error_line(capsys)
    assert "no index at" in line and "medcite index" in line
    assert main(["search"]) == 2
    assert "either a query or --queries" in _error_line(capsys)
    assert main(["ask", "   "]) == 2
    assert "question is empty" in _error_line(capsys)
    assert main(["ask", "What is gout?", "--index", str(tmp_path / "none")]) == 2
    assert "medcite index" in _error_line(capsys)
    with pytest.raises(SystemExit) as e:
        main(["search", "x", "--mode", "sparse"])
    assert e.value.code == 2


def test_search_single_and_batch(capsys, index_config, tmp_path):
    from index_build.build import build_index

    cfg = index_config()
    build_index(cfg, log=lambda _: None)
    assert main(["search", "insulin pump", "--index", cfg.out, "-k", "2", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["query"] == "insulin pump" and len(row["hits"]) == 2
    assert row["hits"][0]["record_id"] == "x1" and row["hits"][0]["url"] == "https://example.org/pump"

    queries = tmp_path / "q.jsonl"
    queries.write_text('{"id": "a", "question": "insulin pump"}\n\n{"id": "b", "question": "ewing sarcoma femur"}\n')
    assert main(["search", "--queries", str(queries), "--index", cfg.out, "-k", "3", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"]
    assert set(rows[0]["hits"][0]) == {"passage_id", "record_id", "title", "source", "url", "score"}

    assert main(["search", "insulin", "--index", cfg.out]) == 0
    assert "Insulin pump" in capsys.readouterr().out
    assert main(["search", "x", "--index", cfg.out, "-k", "500"]) == 2
    assert "k must be between" in _error_line(capsys)
    queries.write_text('{"id": "a", "question": 5}\n')
    assert main(["search", "--queries", str(queries), "--index", cfg.out]) == 2
    assert "q.jsonl:1" in _error_line(capsys)


def test_serve_says_which_judge_verifies_and_how_to_train_the_missing_one(capsys, monkeypatch):
    """`medcite serve` names each part it runs: the lexical judge alone is said with the command that trains the
    judges; trained ones with their precision and threshold."""
    from types import SimpleNamespace

    import uvicorn
    from fakes import FakeGenerator, FakeRetriever

    import pipeline.loader

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setattr("pipeline.triage.classifier", lambda: None)
    for judges, said in ((None, "lexical judge alone"),
                         (SimpleNamespace(faithfulness=SimpleNamespace(precision="int8", threshold=0.562),
                                          answerhood=object()), "trained faithfulness judge (int8, threshold 0.562)")):
        loaded = SimpleNamespace(retriever=FakeRetriever(), generator=FakeGenerator(), judges=judges)
        monkeypatch.setattr(pipeline.loader, "load_pipeline", lambda cfg, loaded=loaded: loaded)
        assert main(["serve", "--port", "8765"]) == 0
        err = capsys.readouterr().err
        assert said in err and ("train-judges" in err) == (judges is None)
        assert "learned layer" in err and "fake-llm" in err


def test_one_progress_display_names_the_stage_the_rate_and_the_time_left(monkeypatch, capsys):
    """`make demo`'s stages share one display: the stage the Makefile names, items/s, the stage's time left and
    the run's time so far; outside a demo run the lines carry no stage."""
    from types import SimpleNamespace

    from core import progress

    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: next(clock), time=lambda: 10_581.0))
    monkeypatch.delenv("MEDCITE_STAGE", raising=False)
    meter = progress.Meter(581, "steps", "faithfulness")
    assert meter.line(40) == "faithfulness: 40/581 steps"  # a resumed run: the rate counts from here
    assert meter.line(60) == "faithfulness: 60/581 steps, 2.00 steps/s, ~4:20 left"
    monkeypatch.setenv("MEDCITE_STAGE", "3/5 judges")
    monkeypatch.setenv("MEDCITE_RUN_START", "10000")
    assert meter.line(100, "loss 0.3") == ("[3/5 judges] faithfulness: 100/581 steps, 2.00 steps/s, ~4:00 left "
                                           "(9:41 into the run); loss 0.3")
    assert main(["search", "gout", "--index", "/nonexistent/index"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "[3/5 judges] medcite search gout --index /nonexistent/index (9:41 into the run)"
    assert err[1].startswith("medcite: error:") and len(err) == 2
