"""The HTTP API through Litestar's TestClient, with a tiny Llama built in code and a tiny real index."""

import json
import threading

import pytest
from litestar.testing import TestClient

from core.errors import ConfigError
from generator.config import DecodingConfig
from retriever.search import IndexRetriever
from service.app import create_app
from service.config import ServeConfig
from tests.fakes import FakeGenerator, FakeRetriever


@pytest.fixture(scope="module")
def retriever(tiny_index):
    return IndexRetriever.load(tiny_index)


@pytest.fixture(scope="module")
def client(retriever, tiny_generator):
    app = create_app(retriever, tiny_generator, ServeConfig(k=2, decoding=DecodingConfig(max_new_tokens=12)))
    with TestClient(base_url="http://localhost", app=app) as c:
        yield c


def _is_error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error", "detail"} and body["detail"], body
    return body


def test_health_ready_and_schema(client, retriever):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["index"] == retriever.fingerprint
    assert ready["embedder"]["backend"] == retriever.manifest["embedder"]["backend"] == "openvino"
    assert ready["retrieval"] == {"qtype_prior": retriever.qtype_prior, "reranker": False, "entailment": "off"}
    t = ready["triage"]  # triage's layers: the rules always, the learned layer or the command that adds it
    assert t["rules"] >= 10 and (t["learned"] is None) == ("make demo" in t.get("missing", ""))
    schema = client.get("/schema/openapi.json").json()
    assert {"/v1/answer", "/v1/retrieve", "/v1/chat/completions"} <= set(schema["paths"])
    assert "x-request-id" in client.get("/healthz").headers


def test_answer_is_deterministic_and_complete(client, retriever):
    body = {"question": "How is Ewing sarcoma treated?", "k": 3, "mode": "hybrid"}
    r1, r2 = client.post("/v1/answer", json=body), client.post("/v1/answer", json=body)
    assert r1.status_code == 200, r1.text
    a, b = r1.json(), r2.json()
    assert a["answer"] == b["answer"]  # byte-identical for the same question
    assert a["index"] == retriever.fingerprint and a["model"] and a["prompt_version"]
    assert len(a["passages"]) == 3 and a["usage"]["completion_tokens"] == 12 and a["stop_reason"] == "length"
    assert set(a["timings"]) == {"retrieve_ms", "generate_ms", "prefill_ms", "verify_ms", "total_ms"}
    assert 0 < a["timings"]["prefill_ms"] <= a["timings"]["generate_ms"]
    assert a["answer_mode"] in ("generated", "extractive", "no_answer") and a["disclaimer"]
    assert all(set(s) == {"text", "citations", "supported", "score"} for s in a["sentences"])
    shown = {p["passage_id"] for p in a["passages"]}
    assert all(c["passage_id"] in shown for c in a["citations"])


def test_answer_without_retrieval_is_refused_unless_the_operator_allows_it(client, retriever, tiny_generator):
    body = {"question": "What is gout?", "use_retrieval": False, "max_new_tokens": 4}
    err = _is_error(client.post("/v1/answer", json=body), 403)
    assert "allow_unsourced" in err["detail"] and "no source" in err["detail"]
    with pytest.raises(ConfigError, match="allow_unsourced needs an API key"):
        ServeConfig(allow_unsourced=True)
    cfg = ServeConfig(k=2, allow_unsourced=True, api_key="k")
    with TestClient(base_url="http://localhost", app=create_app(retriever, tiny_generator, cfg)) as c:
        a = c.post("/v1/answer", json=body, headers={"Authorization": "Bearer k"}).json()
    assert a["passages"] == [] and a["index"] is None and a["usage"]["completion_tokens"] == 4
    assert a["answer_mode"] == "unsourced" and a["warnings"]


def test_answer_stream_sends_tokens_then_the_answer(client):
    body = {"question": "How is Ewing sarcoma treated?", "stream": True}
    with client.stream("POST", "/v1/answer", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _sse(r.iter_lines())
    kinds = [e for e, _ in events]
    assert kinds[-1] == "answer" and set(kinds[:-1]) == {"token"}
    final = json.loads(events[-1][1])
    assert "".join(json.loads(d)["text"] for e, d in events[:-1]).strip()  # the draft, as generated
    plain = client.post("/v1/answer", json={"question": body["question"]}).json()
    assert final == {**plain, "timings": final["timings"], "id": final["id"]}  # as without streaming, its own id


def _sse(lines) -> list[tuple[str, str]]:
    events, event, data = [], "message", []
    for line in lines:
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line.strip() and data:
            events.append((event, "\n".join(data)))
            event, data = "message", []
    if data:
        events.append((event, "\n".join(data)))
    return events


def test_retrieve(client):
    r = client.post("/v1/retrieve", json={"query": "insulin pump", "k": 2, "mode": "bm25"})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert hits[0]["record_id"] == "x1" and set(hits[0]) >= {"passage_id", "title", "source", "url", "score", "text"}
    _is_error(client.post("/v1/retrieve", json={"query": "x", "source": "nope"}), 400)


@pytest.mark.parametrize("payload,status", [
    ({"question": ""}, 400),
    ({"question": "   "}, 400),
    ({"question": "x" * 2001}, 400),
    ({"question": 5}, 400),
    ({"question": "ok", "k": 0}, 400),
    ({"question": "ok", "k": 21}, 400),
    ({"question": "ok", "mode": "sparse"}, 400),
    ({"question": "ok", "max_new_tokens": 5000}, 400),
    ({"question": "ok", "surprise": 1}, 400),
    ({}, 400),
])
def test_bad_answer_requests(client, payload, status):
    _is_error(client.post("/v1/answer", json=payload), status)


def test_bad_bodies(client):
    h = {"content-type": "application/json"}
    _is_error(client.post("/v1/answer", content=b'{"question": ', headers=h), 400)
    _is_error(client.post("/v1/answer", content=b'{"question": "\xff\xfe"}', headers=h), 400)
    _is_error(client.post("/v1/answer", content=b"[1, 2]", headers=h), 400)
    big = json.dumps({"question": "x" * 70_000}).encode()
    _is_error(client.post("/v1/answer", content=big, headers=h), 413)
    _is_error(client.get("/v1/answer"), 405)
    _is_error(client.get("/nope"), 404)


def test_api_key(retriever, tiny_generator):
    app = create_app(retriever, tiny_generator, ServeConfig(api_key="s3cret", decoding=DecodingConfig(max_new_tokens=2)))
    with TestClient(base_url="http://localhost", app=app) as c:
        body = {"query": "insulin"}
        assert _is_error(c.post("/v1/retrieve", json=body), 401)["error"] == "unauthorized"
        _is_error(c.post("/v1/retrieve", json=body, headers={"Authorization": "Bearer wrong"}), 401)
        _is_error(c.post("/v1/retrieve", json=body, headers={"Authorization": "Basic s3cret"}), 401)
        assert c.post("/v1/retrieve", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # probes stay open


def test_queue_full_is_503_with_retry_after_and_timeout_is_504():
    gate = threading.Event()
    slow = FakeGenerator(block=gate)

    class OneSlot(FakeGenerator):
        def generate(self, messages, **kw):
            from core.errors import OverloadedError
            raise OverloadedError("the generator is busy and its queue is full; retry shortly")

    with TestClient(base_url="http://localhost", app=create_app(FakeRetriever(), OneSlot())) as c:
        r = c.post("/v1/answer", json={"question": "q?"})
        assert _is_error(r, 503)["error"] == "overloaded" and r.headers["retry-after"] == "2"
    with TestClient(base_url="http://localhost", app=create_app(FakeRetriever(), slow, ServeConfig(request_timeout_s=0.3))) as c:
        _is_error(c.post("/v1/answer", json={"question": "q?"}), 504)
    gate.set()


def test_admission_refuses_before_any_work_and_gives_every_place_back():
    """max_in_flight places across answer, chat, verify and retrieve: the surplus gets 503 + Retry-After before
    triage or retrieval; a request that timed out (504) keeps its place until its work really ends."""
    import time

    gate = threading.Event()
    slow, fake = FakeGenerator(block=gate), FakeRetriever()
    with TestClient(base_url="http://localhost", app=create_app(fake, slow, ServeConfig(max_in_flight=2, request_timeout_s=0.5))) as c:
        results: list = []
        askers = [threading.Thread(target=lambda: results.append(c.post("/v1/answer", json={"question": "q?"})))
                  for _ in range(6)]
        for t in askers:
            t.start()
        for t in askers:
            t.join(20)
        codes = sorted(r.status_code for r in results)
        assert codes == [503, 503, 503, 503, 504, 504], codes  # two admitted (and timed out), four refused
        assert all(r.headers["retry-after"] == "2" for r in results if r.status_code == 503)
        assert len(fake.calls) == 2 and len(slow.seen) == 2  # the refused never reached retrieval or the model
        # the two abandoned generations still hold their places: every kind of model work is refused
        assert _is_error(c.post("/v1/retrieve", json={"query": "x"}), 503)["error"] == "overloaded"
        assert c.post("/v1/verify", json={"text": "x.", "passages": [{"id": "1", "title": "t", "text": "x."}]}
                      ).status_code == 503
        assert "medcite_generation_queue_depth 2.0" in c.get("/metrics").text
        gate.set()  # the abandoned work ends: its places come back
        deadline = time.monotonic() + 10
        while c.post("/v1/retrieve", json={"query": "x"}).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.post("/v1/retrieve", json={"query": "x"}).status_code == 200
        assert "medcite_generation_queue_depth 0.0" in c.get("/metrics").text
        slow.block = None
        assert c.post("/v1/answer", json={"question": "q?"}).status_code == 200


def test_timed_out_generation_stops_and_frees_the_model(retriever, tiny_llm_dir):
    """A real generation that outlives the request gets 504, then stops at its deadline (the tiny model never
    says end-of-turn, so without the deadline it would decode all 1024 tokens while holding the model lock)."""
    import time

    from generator.config import GeneratorConfig
    from generator.hf import HFGenerator

    gen = HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir), threads=1, queue_size=2),
                           DecodingConfig(max_new_tokens=1024, repetition_penalty=1.0))
    gen.stop_ids = [gen.tokenizer.convert_tokens_to_ids("<|im_start|>")]  # a token this model never emits after
    msgs = [{"role": "user", "content": "What is gout?"}]
    t = time.perf_counter()
    full = gen.generate(msgs)
    full_s = time.perf_counter() - t
    assert full.stop_reason == "length" and full.completion_tokens == 1024
    cut = gen.generate(msgs, deadline=time.monotonic() + full_s / 10)
    assert cut.stop_reason == "timeout" and 0 < cut.completion_tokens < 1024
    # a request already past its deadline, or cancelled, never starts prefill
    late = gen.generate(msgs, deadline=time.monotonic() - 1)
    assert (late.stop_reason, late.completion_tokens, late.text) == ("timeout", 0, "")
    gone = threading.Event()
    gone.set()
    assert gen.generate(msgs, cancel=gone).stop_reason == "cancelled"
    cfg = ServeConfig(request_timeout_s=full_s / 10, allow_unsourced=True, api_key="k")
    with TestClient(base_url="http://localhost", app=create_app(retriever, gen, cfg)) as c:
        c.headers["Authorization"] = "Bearer k"
        t = time.perf_counter()
        _is_error(c.post("/v1/answer", json={"question": "What is gout?", "use_retrieval": False}), 504)
        r = c.post("/v1/answer", json={"question": "What is gout?", "use_retrieval": False, "max_new_tokens": 2})
        both_s = time.perf_counter() - t
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    assert both_s < full_s * 0.6, (both_s, full_s)  # the first generation did not run to its 1024 tokens


def test_logs_carry_request_id_but_no_text_by_default(caplog, retriever):
    with TestClient(base_url="http://localhost", app=create_app(retriever, FakeGenerator())) as c, caplog.at_level("INFO", logger="medcite.api"):
        c.post("/v1/answer", json={"question": "private symptom question"}, headers={"x-request-id": "req-42"})
    lines = [json.loads(r.message) for r in caplog.records if r.name == "medcite.api"]
    answer_log = next(x for x in lines if x["event"] == "answer")
    assert answer_log["request_id"] == "req-42" and "generate_ms" in answer_log
    assert "private symptom" not in caplog.text
    caplog.clear()
    with TestClient(base_url="http://localhost", app=create_app(retriever, FakeGenerator())) as c, caplog.at_level("INFO", logger="medcite.api"):
        a = c.post("/v1/answer", json={"question": "I want to end my life tonight"}).json()
    assert a["triage"] and a["triage"]["rule"]  # the person sees the notice ...
    answer_log = next(json.loads(r.message) for r in caplog.records if '"event": "answer"' in r.message)
    assert answer_log["urgent"] is True  # ... the log says only that triage fired, not which rule (why)
    assert a["triage"]["rule"] not in caplog.text and "end my life" not in caplog.text
    with TestClient(base_url="http://localhost", app=create_app(retriever, FakeGenerator(), ServeConfig(log_text=True))) as c, \
            caplog.at_level("INFO", logger="medcite.api"):
        c.post("/v1/answer", json={"question": "private symptom question"})
    assert "private symptom" in caplog.text


def test_a_500_names_its_request_id_and_the_log_has_the_traceback(caplog):
    class Broken(FakeGenerator):
        def generate(self, messages, **overrides):
            raise RuntimeError("boom in the generator")

    with TestClient(base_url="http://localhost", app=create_app(FakeRetriever(), Broken())) as c, caplog.at_level("INFO", logger="medcite.api"):
        r = c.post("/v1/answer", json={"question": "q"}, headers={"x-request-id": "req-500"})
    assert r.status_code == 500 and "req-500" in r.json()["detail"] and "boom" not in r.text
    error = next(json.loads(x.message) for x in caplog.records if '"event": "error"' in x.message)
    assert error["request_id"] == "req-500" and "boom in the generator" in error["traceback"]


def test_chat_completions_shape_and_errors(client):
    r = client.post("/v1/chat/completions", json={"model": "medcite", "messages": [
        {"role": "user", "content": "How is Ewing sarcoma treated?"}], "max_tokens": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "length" and body["usage"]["completion_tokens"] == 5
    assert isinstance(body["citations"], list)
    _is_error(client.post("/v1/chat/completions", json={"messages": []}), 400)
    _is_error(client.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "x"}]}), 400)
    _is_error(client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], "n": 2}), 400)


# --- verification through the API: JSON, SSE and the OpenAI endpoint ---------------------------------------------

GOUT = [("Gout: treatment", "Gout flares are treated with colchicine, NSAIDs or corticosteroids. Allopurinol lowers "
                            "uric acid levels over time. In severe cases pegloticase is given by infusion."),
        ("Pseudogout", "Pseudogout is caused by calcium pyrophosphate crystals in the joints of older adults.")]
DRAFT = ("Gout: treatment\nGout flares are treated with colchicine and NSAIDs. Allopurruvolizide lowers uric acid. "
         "Allopurinol lowers uric acid levels over time [7].")
VERIFIED = "Gout flares are treated with colchicine and NSAIDs [1]. Allopurinol lowers uric acid levels over time [1]."


@pytest.fixture()
def verified_client():
    from pipeline.verify.config import VerifyConfig

    # the generated path over HTTP (served with the lexical judge alone, answers quote the passages instead)
    app = create_app(FakeRetriever(docs=GOUT), FakeGenerator(DRAFT),
                     ServeConfig(k=2, verify=VerifyConfig(min_relevance=0.1, generated_with_lexical_judge=True)))
    with TestClient(base_url="http://localhost", app=app) as c:
        yield c


def test_answer_json_says_what_verification_did(verified_client):
    a = verified_client.post("/v1/answer", json={"question": "What are the treatments for gout?"}).json()
    assert a["answer"] == VERIFIED and a["answer_mode"] == "generated"
    assert [s["citations"] for s in a["sentences"]] == [[1], [1]] and all(s["supported"] for s in a["sentences"])
    assert any("allopurruvolizide" in w for w in a["warnings"]) and any("[7]" in w for w in a["warnings"])
    assert a["invalid_markers"] == [] and a["triage"] is None and a["disclaimer"]
    assert [c["marker"] for c in a["citations"]] == [1]
    urgent = verified_client.post("/v1/answer", json={"question": "my throat is swelling after a bee sting"}).json()
    assert urgent["triage"]["rule"] == "anaphylaxis"


def test_stream_sends_the_draft_then_the_verified_answer(verified_client):
    with verified_client.stream("POST", "/v1/answer", json={"question": "What are the treatments for gout?",
                                                           "stream": True}) as r:
        events = _sse(r.iter_lines())
    tokens = "".join(json.loads(d)["text"] for e, d in events if e == "token")
    assert "Allopurruvolizide" in tokens  # the draft streams as generated ...
    final = json.loads(events[-1][1])
    assert events[-1][0] == "answer" and final["answer"] == VERIFIED  # ... and the verified answer replaces it
    with verified_client.stream("POST", "/v1/answer", json={"question": "my throat is swelling after a bee sting",
                                                           "stream": True}) as r:
        urgent = _sse(r.iter_lines())
    assert urgent[0][0] == "triage" and json.loads(urgent[0][1])["rule"] == "anaphylaxis"  # ahead of the draft
    assert json.loads(urgent[-1][1])["triage"]["rule"] == "anaphylaxis"


def test_openai_content_is_the_verified_text(verified_client):
    body = {"model": "medcite", "messages": [{"role": "user", "content": "What are the treatments for gout?"}]}
    r = verified_client.post("/v1/chat/completions", json=body).json()
    content = r["choices"][0]["message"]["content"]
    assert content.startswith(VERIFIED) and "Allopurruvolizide" not in content and content.endswith("clinician about your own situation.")
    with verified_client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as s:
        chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == content


def test_raw_chat_is_off_unless_the_operator_turns_it_on(verified_client):
    body = {"model": "m", "use_retrieval": False, "messages": [{"role": "user", "content": "hi"}]}
    assert _is_error(verified_client.post("/v1/chat/completions", json=body), 403)["error"] == "forbidden"
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="needs an API key"):
        ServeConfig(allow_raw_chat=True, api_key="")
    app = create_app(FakeRetriever(), FakeGenerator("x"), ServeConfig(allow_raw_chat=True, api_key="k"))
    with TestClient(base_url="http://localhost", app=app) as c:
        headers = {"Authorization": "Bearer k"}
        assert c.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
        long = {**body, "messages": [{"role": "user", "content": "word " * 1900}]}
        assert "tokens" in _is_error(c.post("/v1/chat/completions", json=long, headers=headers), 400)["detail"]


def test_non_loopback_without_key_refuses_to_start():
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="no API key"):
        ServeConfig(host="0.0.0.0", api_key="")
    assert ServeConfig(host="0.0.0.0", api_key="", allow_unauthenticated=True).host == "0.0.0.0"
    assert ServeConfig(host="::1", api_key="").host == "::1" and ServeConfig(host="localhost", api_key="")


def test_every_response_carries_the_browsers_defences(client):
    for r in (client.get("/"), client.get("/healthz"), client.post("/v1/retrieve", json={"query": "gout"}),
              client.post("/v1/answer", json={})):
        assert "default-src 'self'" in r.headers["content-security-policy"], r.url
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"


def test_a_body_that_does_not_say_json_is_refused_before_any_work(retriever):
    """A form or text/plain post needs no CORS preflight: any web site could make a visitor's browser send one."""
    gen = FakeGenerator()
    with TestClient(base_url="http://localhost", app=create_app(retriever, gen)) as c:
        for headers in ({"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}):
            r = c.post("/v1/answer", content=b'{"question": "What is gout?"}', headers=headers)
            body = _is_error(r, 415)
            assert "Content-Type: application/json" in body["detail"] and body["error"] == "unsupported_media_type"
        assert gen.seen == []
        ok = c.post("/v1/answer", content=b'{"question": "What is gout?"}',
                    headers={"content-type": "application/json; charset=utf-8"})
        assert ok.status_code == 200 and gen.seen


def test_a_loopback_server_answers_only_to_its_own_names(retriever):
    """DNS rebinding: a page at evil.example whose name now resolves to 127.0.0.1 still sends Host: evil.example."""
    from service.middleware import host_name

    assert [host_name(h) for h in ("localhost:8000", "127.0.0.1", "[::1]:8000", "Evil.Example:80")] == [
        "localhost", "127.0.0.1", "::1", "evil.example"]
    with TestClient(base_url="http://localhost", app=create_app(retriever, FakeGenerator())) as c:
        for host in ("localhost:8000", "127.0.0.1:8000", "[::1]:8000"):
            assert c.get("/healthz", headers={"host": host}).status_code == 200
        r = c.post("/v1/answer", json={"question": "What is gout?"}, headers={"host": "evil.example:8000"})
        body = _is_error(r, 400)
        assert body["error"] == "invalid_host" and "allowed_hosts" in body["detail"]
        assert c.get("/", headers={"host": "evil.example"}).status_code == 400  # the page too
    cfg = ServeConfig(allowed_hosts=("medcite.internal",))
    with TestClient(base_url="http://localhost", app=create_app(retriever, FakeGenerator(), cfg)) as c:
        assert c.get("/healthz", headers={"host": "medcite.internal:8000"}).status_code == 200
        assert c.get("/healthz", headers={"host": "other.internal"}).status_code == 400
