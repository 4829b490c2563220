"""Conversations and client conventions: follow-up questions searched as standalone ones, the prompt keeping
earlier turns within budget, /v1/models, /metrics after real requests, answer ids and feedback in SQLite."""

import json
import sqlite3

import pytest
from litestar.testing import TestClient

from core.feedback import SCHEMA_VERSION, FeedbackStore
from generator.config import DecodingConfig
from generator.prompt import fit_history
from pipeline.followup import carry_focus, focus_of, needs_context, standalone
from retriever.search import IndexRetriever
from service.app import create_app
from service.config import ServeConfig
from tests.fakes import FakeGenerator

GOUT = [{"role": "user", "content": "What is gout?"}, {"role": "assistant", "content": "Gout is a kind of arthritis."}]


@pytest.mark.parametrize("question, expected", [
    ("How is it treated?", "How is gout treated?"),
    ("What causes this condition?", "What causes gout?"),
    ("Is it inherited ?", "Is gout inherited ?"),
    ("what are its complications?", "what are gout's complications?"),
    ("And the symptoms?", "And the symptoms? (gout)"),
])
def test_a_follow_up_carries_the_conversations_focus(question, expected):
    s = standalone(question, GOUT)
    assert (s.query, s.how, s.focus) == (expected, "focus", "gout")


def test_a_question_that_stands_alone_is_searched_as_written():
    for q in ("How is diabetes treated?", "What are the symptoms of Ewing Sarcoma ?"):
        assert not needs_context(q)
        assert standalone(q, GOUT) == standalone(q, None) == standalone(q, []) and standalone(q, GOUT).query == q
    assert standalone("How is it treated?", None).how == "as_written"  # turn 1: nothing changes
    assert standalone("How is it treated?", GOUT, "off").query == "How is it treated?"


def test_the_focus_comes_from_how_questions_are_asked():
    assert focus_of("What are the treatments for Ewing Sarcoma ?") == "Ewing Sarcoma"
    assert focus_of("What is (are) Adult Acute Lymphoblastic Leukemia ?") == "Adult Acute Lymphoblastic Leukemia"
    assert focus_of("Who is at risk for Lip and Oral Cavity Cancer? ?") == "Lip and Oral Cavity Cancer"
    assert focus_of("What are the genetic changes related to Alport syndrome ?") == "Alport syndrome"
    assert focus_of("my dad has atrial fibrillation, what does that mean") == "atrial fibrillation"
    assert focus_of("How is it treated?") == ""
    # a follow-up to a follow-up keeps the first turn's subject
    two = [*GOUT, {"role": "user", "content": "How is it treated?"}, {"role": "assistant", "content": "..."}]
    assert standalone("Is it inherited?", two).query == "Is gout inherited?"
    assert carry_focus("Can this condition come back?", "gout") == "Can gout come back?"


def test_the_model_rewrite_is_used_only_where_it_names_the_focus():
    good, bad = FakeGenerator("How is gout treated?"), FakeGenerator("How is it treated?")
    assert standalone("How is it treated?", GOUT, "both", good) .how == "model"
    both = standalone("How is it treated?", GOUT, "both", bad)
    assert (both.how, both.query) == ("focus", "How is gout treated?")  # the deterministic one instead
    assert standalone("How is it treated?", GOUT, "model", bad).query == "How is it treated?"
    assert "Conversation:" in good.seen[0][1]["content"] and "What is gout?" in good.seen[0][1]["content"]


def test_the_prompt_keeps_the_latest_turns_within_budget():
    turns = [{"role": r, "content": f"turn {i}" + " word" * 20} for i, r in
             enumerate(["user", "assistant"] * 4)]
    kept, dropped = fit_history(turns, 60, lambda t: len(t.split()))
    assert kept == turns[-2:] and dropped == 6  # oldest first, and a kept history starts with the user
    assert fit_history(turns, 10_000)[1] == 0 and fit_history(None, 100) == ([], 0)


@pytest.fixture(scope="module")
def retriever(tiny_index):
    return IndexRetriever.load(tiny_index)


@pytest.fixture()
def served(tmp_path, retriever, tiny_generator):
    store = FeedbackStore(tmp_path / "feedback.db")
    app = create_app(retriever, tiny_generator, ServeConfig(k=2, decoding=DecodingConfig(max_new_tokens=8)),
                     feedback=store)
    with TestClient(base_url="http://localhost", app=app) as c:
        yield c, store


def test_a_follow_up_over_http_is_retrieved_as_a_standalone_question(served):
    client, _ = served
    history = [{"role": "user", "content": "What is (are) Ewing Sarcoma ?"},
               {"role": "assistant", "content": "Ewing sarcoma is a bone tumor [1]."}]
    a = client.post("/v1/answer", json={"question": "How is it treated?", "history": history}).json()
    assert a["retrieval_query"] == "How is Ewing Sarcoma treated?"
    assert any("Ewing" in p["title"] for p in a["passages"])
    first = client.post("/v1/answer", json={"question": "What is (are) Ewing Sarcoma ?"}).json()
    assert first["retrieval_query"] == "What is (are) Ewing Sarcoma ?"  # turn 1 unchanged
    chat = client.post("/v1/chat/completions", json={"messages": [*history, {"role": "user",
                                                                             "content": "How is it treated?"}]})
    assert chat.status_code == 200 and chat.json()["retrieval_query"] == "How is Ewing Sarcoma treated?"
    assert chat.json()["answer_id"].startswith("ans-")
    bad = client.post("/v1/answer", json={"question": "How?", "history": [{"role": "doctor", "content": "x"}]})
    assert bad.status_code == 400 and "role" in bad.json()["detail"]


def test_the_prompt_says_when_earlier_turns_were_dropped(retriever):
    g = FakeGenerator("Ewing sarcoma is treated with chemotherapy [1].")
    app = create_app(retriever, g, ServeConfig(k=2, prompt_tokens=256, decoding=DecodingConfig(max_new_tokens=8)))
    long = [{"role": r, "content": "word " * 60} for r in ["user", "assistant"] * 3]
    with TestClient(base_url="http://localhost", app=app) as c:
        a = c.post("/v1/answer", json={"question": "How is Ewing Sarcoma treated?", "history": long}).json()
    assert any("oldest earlier turn" in w for w in a["warnings"])
    roles = [m["role"] for m in g.seen[-1]]
    assert roles[0] == "system" and roles[-1] == "user" and len(roles) < 2 + len(long)


def test_models_lists_the_served_model_with_what_medcite_adds(served, retriever, tiny_generator):
    client, _ = served
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and len(body["data"]) == 1
    card = body["data"][0]
    assert card["id"] == tiny_generator.name and card["object"] == "model" and card["owned_by"] == "medcite"
    assert card["index"] == retriever.fingerprint and card["prompt_version"] and card["medcite_version"]
    assert card["judge"]["faithfulness"] and client.get(f"/v1/models/{card['id']}").json() == card
    assert client.get("/v1/models/gpt-4").status_code == 404


def test_metrics_count_real_requests(served):
    client, _ = served
    client.post("/v1/retrieve", json={"query": "Ewing sarcoma"})
    client.post("/v1/answer", json={"question": "What is (are) Ewing Sarcoma ?"})
    client.post("/v1/answer", json={"question": "I have crushing chest pain and I am sweating"})
    client.post("/v1/answer", json={"question": ""})
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text

    def value(line_start: str) -> float:
        return sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines() if x.startswith(line_start))

    assert value('medcite_requests_total{route="/v1/answer",status="200"}') == 2
    assert value('medcite_requests_total{route="/v1/answer",status="400"}') == 1
    assert value('medcite_requests_total{route="/v1/retrieve",status="200"}') == 1
    assert value('medcite_stage_seconds_count{stage="generate"}') == 2
    assert value('medcite_answers_total{') == 2 and value("medcite_generated_tokens_total") > 0
    assert value('medcite_triage_fired_total{layer="rule",rule="chest_pain_cardiac"}') == 1
    assert "medcite_generation_queue_depth 0.0" in text and "medcite_request_seconds_bucket" in text


def test_metrics_behind_the_key_when_asked(retriever, tiny_generator):
    cfg = ServeConfig(api_key="k", metrics="key")
    with TestClient(base_url="http://localhost", app=create_app(retriever, tiny_generator, cfg)) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer k"}).status_code == 200
    with TestClient(base_url="http://localhost", app=create_app(retriever, tiny_generator, ServeConfig(api_key="k"))) as c:
        assert c.get("/metrics").status_code == 200  # open, like the probes, by default


def test_feedback_is_stored_against_the_answer_id(served):
    client, store = served
    a = client.post("/v1/answer", json={"question": "What are the treatments for Ewing Sarcoma ?"}).json()
    assert a["id"].startswith("ans-")
    r = client.post("/v1/feedback", json={"answer_id": a["id"], "rating": "down", "comment": "wrong", "sentence": 1})
    assert r.status_code == 200 and r.json()["stored"] is True
    rows = list(store.rows())
    assert len(rows) == 1 and rows[0]["rating"] == "down" and "comment" not in rows[0]  # free text: log_text only
    assert "question" not in rows[0] and len(rows[0]["question_hmac"]) == 64  # no text without log_text
    assert rows[0]["sources"] == [{"marker": c["marker"], "passage_id": c["passage_id"],
                                   "record_id": c["record_id"], "title": c["title"]} for c in a["citations"]]
    for body, needle in (({"answer_id": "ans-nope", "rating": "up"}, "no answer with id"),
                         ({"answer_id": a["id"], "rating": "meh"}, "rating"),
                         ({"answer_id": a["id"], "rating": "up", "comment": "x" * 2001}, "comment"),
                         ({"rating": "up"}, "answer_id")):
        bad = client.post("/v1/feedback", json=body)
        assert bad.status_code == 400 and needle in bad.json()["detail"], bad.text
    assert client.get("/metrics").text.count('medcite_feedback_total{rating="down"} 1.0') == 1


def test_feedback_export_and_the_database_layout(tmp_path, retriever, tiny_generator):
    from medcite.cli import main

    db = tmp_path / "fb.db"
    store = FeedbackStore(db, log_text=True)
    with TestClient(base_url="http://localhost", app=create_app(retriever, tiny_generator, ServeConfig(k=2, log_text=True), feedback=store)) as c:
        a = c.post("/v1/answer", json={"question": "What is (are) Ewing Sarcoma ?",
                                       "max_new_tokens": 4}).json()
        c.post("/v1/feedback", json={"answer_id": a["id"], "rating": "up", "comment": "clear"})
    store.close()
    out = tmp_path / "fb.jsonl"
    assert main(["feedback", "export", "--db", str(db), "--out", str(out)]) == 0
    row = json.loads(out.read_text())
    assert row["question"] == "What is (are) Ewing Sarcoma ?" and row["rating"] == "up"  # text with log_text
    assert row["comment"] == "clear"
    for private in (db, db.with_name("fb.db.key"), out):  # the database, its key and its exports: owner only
        assert private.stat().st_mode & 0o777 == 0o600, private
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    assert main(["feedback", "export", "--db", str(tmp_path / "none.db"), "--out", str(out)]) == 2


def test_an_empty_body_says_what_is_missing(served):
    client, _ = served
    for path in ("/v1/answer", "/v1/feedback", "/v1/retrieve"):
        r = client.post(path, content=b"", headers={"content-type": "application/json"})
        assert r.status_code == 400 and set(r.json()) == {"error", "detail"}, r.text
        assert "body" in r.json()["detail"].lower(), r.text


_SERVER = """
import sys, uvicorn
from service.config import ServeConfig
from service.app import create_app
from core.feedback import FeedbackStore
from tests.fakes import FakeGenerator, FakeRetriever
app = create_app(FakeRetriever(), FakeGenerator("Passage 0 text about topic 0 [1]."), ServeConfig(),
                 feedback=FeedbackStore(sys.argv[1]))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="error")
"""


def test_a_killed_server_loses_no_acknowledged_feedback(tmp_path):
    """kill -9 mid-burst: every feedback row the server answered 200 for is in the database afterwards."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import threading
    import time
    from pathlib import Path

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "fb.db"
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(db), str(port)], cwd=Path(__file__).parents[1],
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        answer_id = httpx.post(f"{url}/v1/answer", json={"question": "topic 0?"}, timeout=30).json()["id"]
        acked: list[int] = []
        stop = threading.Event()

        def burst() -> None:
            with httpx.Client(timeout=5) as c:
                while not stop.is_set():
                    try:
                        r = c.post(f"{url}/v1/feedback", json={"answer_id": answer_id, "rating": "up"})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        acked.append(r.json()["id"])

        workers = [threading.Thread(target=burst) for _ in range(4)]
        for w in workers:
            w.start()
        while len(acked) < 40:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: requests are in flight
        stop.set()
        for w in workers:
            w.join(10)
    finally:
        proc.kill()
        proc.wait(10)
    stored = {row[0] for row in sqlite3.connect(db).execute("SELECT id FROM feedback")}
    assert len(acked) >= 40 and set(acked) <= stored


def test_feedback_hashes_are_keyed_and_old_rows_expire(tmp_path):
    """An unkeyed SHA-256 of a short question is reversed by hashing guesses; a keyed one is not, without the key."""
    import hashlib
    import time as _time

    from core.types import Answer

    store = FeedbackStore(tmp_path / "fb.db", retention_days=30)
    a = Answer(question="Do I have gout?", text="Gout is ...", citations=[], passages=[], invalid_markers=[],
               usage={}, timings={}, stop_reason="end_of_turn", model="m", index=None, prompt_version="v", mode=None)
    store.record(a)
    store.add(a.id, "up")
    (row,) = store.rows()
    assert row["question_hmac"] != hashlib.sha256(b"Do I have gout?").hexdigest()
    assert row["question_hmac"] == store.digest("Do I have gout?")  # equal questions still match each other
    key = (tmp_path / "fb.db.key").read_text()
    assert FeedbackStore(tmp_path / "fb.db").digest("x") == store.digest("x")  # the key survives a restart
    assert (tmp_path / "fb.db.key").read_text() == key
    assert store.expire(now=_time.time() + 29 * 86400) == 0
    assert store.expire(now=_time.time() + 31 * 86400) == 2 and list(store.rows()) == []  # feedback and answer
    (tmp_path / "fb.db.key").write_text("not a key")
    with pytest.raises(Exception, match="not a feedback key"):
        FeedbackStore(tmp_path / "fb.db")


def test_a_version_1_feedback_database_loses_its_unkeyed_hashes(tmp_path):
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.executescript("""CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);
        CREATE TABLE answers (id TEXT PRIMARY KEY, created REAL NOT NULL, question_sha256 TEXT NOT NULL,
            answer_sha256 TEXT NOT NULL, question TEXT, answer TEXT, retrieval_query TEXT, answer_mode TEXT NOT NULL,
            sources TEXT NOT NULL, model TEXT NOT NULL, index_fingerprint TEXT, judge TEXT);
        INSERT INTO answers VALUES ('ans-1', 1e12, 'abc', 'def', NULL, NULL, NULL, 'generated', '[]', 'm', NULL, NULL);""")
    con.close()
    store = FeedbackStore(db, retention_days=0)
    store.add("ans-1", "down")
    (row,) = store.rows()
    assert row["question_hmac"] == "" and row["answer_hmac"] == "" and row["rating"] == "down"
    assert sqlite3.connect(db).execute("SELECT version FROM schema_version").fetchone() == (SCHEMA_VERSION,)
