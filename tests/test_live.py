"""A real server on loopback (uvicorn in a thread) with the tiny Llama: the official `openai` client, with and
without streaming, and medcite's remote generator backend talking to medcite's own endpoint."""

import socket
import threading
import time

import pytest

from core.errors import UpstreamError
from generator.config import DecodingConfig
from generator.remote import RemoteGenerator
from pipeline.answer import Pipeline
from pipeline.config import PipelineConfig
from retriever.search import IndexRetriever
from service.app import create_app
from service.config import ServeConfig
from tests.fakes import FakeRetriever

QUESTION = "How is Ewing sarcoma treated?"


def serve_in_thread(app) -> tuple[str, object, threading.Thread]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(300):
        if srv.started:
            break
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", srv, thread


@pytest.fixture(scope="module")
def server(tiny_index, tiny_generator):
    url, srv, thread = serve_in_thread(create_app(IndexRetriever.load(tiny_index), tiny_generator,
                                         ServeConfig(k=2, api_key="test-key", allow_raw_chat=True,
                                                     decoding=DecodingConfig(max_new_tokens=12))))
    yield f"{url}/v1"
    srv.should_exit = True
    thread.join(10)


def test_openai_client_plain_and_streaming(server):
    from openai import OpenAI

    client = OpenAI(base_url=server, api_key="test-key", max_retries=0)
    resp = client.chat.completions.create(model="medcite", messages=[{"role": "user", "content": QUESTION}])
    text = resp.choices[0].message.content
    assert text and resp.choices[0].finish_reason == "length" and resp.usage.completion_tokens == 12
    assert isinstance(resp.model_extra["citations"], list)

    stream = client.chat.completions.create(model="medcite", stream=True,
                                            messages=[{"role": "user", "content": QUESTION}])
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert streamed.strip() == text  # same question, same bytes, streamed or not
    assert chunks[-1].choices[0].finish_reason == "length" and "citations" in chunks[-1].model_extra

    from openai import AuthenticationError

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=server, api_key="wrong", max_retries=0).chat.completions.create(
            model="medcite", messages=[{"role": "user", "content": QUESTION}])


def test_remote_generator_against_medcite(server, tiny_generator):
    remote = RemoteGenerator(server, "medcite", DecodingConfig(max_new_tokens=12), api_key="test-key",
                             extra_body={"use_retrieval": False})
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is gout?"}]
    local = tiny_generator.generate(msgs)
    got = remote.generate(msgs)
    assert got.text == local.text and got.completion_tokens == local.completion_tokens == 12
    assert got.stop_reason == "length"
    *pieces, final = list(remote.stream(msgs))
    assert "".join(pieces).strip() == final.text == local.text
    # the whole pipeline over the remote backend
    a = Pipeline(FakeRetriever(), remote, None, PipelineConfig(k=2)).answer("What is topic 1?", max_new_tokens=6)
    assert a.usage["completion_tokens"] == 6 and len(a.passages) == 2 and a.model == "remote:medcite"


def test_remote_generator_errors(server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with pytest.raises(UpstreamError, match="unreachable"):
        RemoteGenerator(f"http://127.0.0.1:{dead}/v1", "m", DecodingConfig(), timeout_s=2).generate(
            [{"role": "user", "content": "hi"}])
    with pytest.raises(UpstreamError, match="HTTP 401"):
        RemoteGenerator(server, "m", DecodingConfig(), api_key="wrong").generate([{"role": "user", "content": "hi"}])


def test_a_client_that_disconnects_frees_the_model(tiny_llm_dir):
    """A client that gives up (plain or streaming) cancels its generation: the next request does not wait for
    the abandoned one's 1024 tokens, the most a request may ask (the tiny model never says end-of-turn). With 512
    the whole generation took ~0.35 s, too close to the HTTP round trips the check allows for: 2 CI runs in 3
    failed."""
    import httpx

    from generator.config import GeneratorConfig
    from generator.hf import HFGenerator

    gen = HFGenerator.load(GeneratorConfig(model=str(tiny_llm_dir), threads=1, queue_size=2),
                           DecodingConfig(max_new_tokens=1024, repetition_penalty=1.0))
    gen.stop_ids = [gen.tokenizer.convert_tokens_to_ids("<|im_start|>")]
    msgs = [{"role": "user", "content": "What is gout?"}]
    t = time.perf_counter()
    gen.generate(msgs)
    full_s = time.perf_counter() - t
    url, srv, thread = serve_in_thread(create_app(None, gen, ServeConfig(allow_unsourced=True, api_key="k")))
    body = {"question": "What is gout?", "use_retrieval": False}
    auth = {"Authorization": "Bearer k"}
    try:
        for stream in (False, True):
            t = time.perf_counter()
            if stream:  # read the first event, then hang up
                with httpx.Client(timeout=60, headers=auth) as c, \
                        c.stream("POST", f"{url}/v1/answer", json={**body, "stream": True}) as r:
                    next(r.iter_lines())
            else:  # give up waiting
                with pytest.raises(httpx.ReadTimeout), \
                        httpx.Client(timeout=httpx.Timeout(full_s / 10, connect=5), headers=auth) as c:
                    c.post(f"{url}/v1/answer", json=body)
            r = httpx.post(f"{url}/v1/answer", json={**body, "max_new_tokens": 2}, timeout=60, headers=auth)
            assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
            assert time.perf_counter() - t < full_s * 0.7, ("the abandoned generation ran on", stream)
    finally:
        srv.should_exit = True
        thread.join(10)


def test_openai_client_lists_the_model_and_follows_a_conversation(server, tiny_generator):
    from openai import OpenAI

    client = OpenAI(base_url=server, api_key="test-key", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == [tiny_generator.name]
    assert models.data[0].model_extra["index"] and models.data[0].model_extra["medcite_version"]
    history = [{"role": "user", "content": "What is (are) Ewing Sarcoma ?"},
               {"role": "assistant", "content": "Ewing sarcoma is a bone tumor."}]
    resp = client.chat.completions.create(model=tiny_generator.name,
                                          messages=[*history, {"role": "user", "content": "How is it treated?"}])
    assert resp.model_extra["retrieval_query"] == "How is Ewing Sarcoma treated?"
    assert resp.model_extra["answer_id"].startswith("ans-")
    chunks = list(client.chat.completions.create(model=tiny_generator.name, stream=True,
                                                 messages=[*history, {"role": "user", "content": "How is it treated?"}]))
    last = chunks[-1].model_extra
    assert last["retrieval_query"] == "How is Ewing Sarcoma treated?" and last["answer_id"].startswith("ans-")
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip() == resp.choices[0].message.content


def test_eval_with_concurrent_requests_to_a_remote_generator_matches_the_sequential_run(server, tiny_index,
                                                                                        fixture_data, tmp_path):
    """`medcite eval --concurrency 4` against a remote generator (medcite's own endpoint here, vLLM in
    production): requests overlap, and results.jsonl is byte-identical to the sequential run's."""
    import json
    import threading

    from evaluation.config import EvalConfig
    from evaluation.run import run_eval
    from generator.config import GeneratorConfig
    from generator.loader import load_generator

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "gold_answer": a}) + "\n" for i, (q, a) in
                                 enumerate([("How is Ewing sarcoma treated?", "Chemotherapy and surgery."),
                                            ("What causes gout?", "Uric acid crystals."),
                                            ("What triggers migraine?", "Stress and hormones."),
                                            ("Is aspirin risky for bleeding?", "Yes, it thins the blood."),
                                            ("What is topic 1?", "Topic one.")])))
    peak, lock = [0, 0], threading.Lock()

    class Overlap:  # counts requests in flight at once
        def __init__(self, inner):
            self.inner = inner
            self.name, self.context_window, self.count_tokens = inner.name, inner.context_window, inner.count_tokens

        def generate(self, messages, **kw):
            with lock:
                peak[0] += 1
                peak[1] = max(peak)
            try:
                return self.inner.generate(messages, **kw)
            finally:
                with lock:
                    peak[0] -= 1

    def gen_loader(gcfg, decoding):
        return Overlap(load_generator(gcfg, decoding))

    def cfg(run: str, n: int) -> EvalConfig:
        return EvalConfig(run_name=run, data_dir=str(fixture_data), questions=str(questions), mirage="",
                          index=str(tiny_index), arms=("base:none", "base:hybrid"), k=2, concurrency=n,
                          out=str(tmp_path / "out"), bootstrap_samples=200, decoding=DecodingConfig(max_new_tokens=8),
                          generator=GeneratorConfig(backend="remote", remote_url=server, remote_model="medcite",
                                                    remote_api_key_env="MEDCITE_TEST_REMOTE_KEY",
                                                    remote_extra_body={"use_retrieval": False},
                                                    remote_penalty_scope="generated"))  # medcite penalises as served

    import os

    os.environ["MEDCITE_TEST_REMOTE_KEY"] = "test-key"
    try:
        seq = run_eval(cfg("seq", 1), lambda p: IndexRetriever.load(p, threads=1), gen_loader, log=lambda _: None)
        assert peak[1] == 1
        par = run_eval(cfg("par", 4), lambda p: IndexRetriever.load(p, threads=1), gen_loader, log=lambda _: None)
    finally:
        del os.environ["MEDCITE_TEST_REMOTE_KEY"]
    assert peak[1] > 1, "the concurrent run never had two requests in flight"
    assert (par / "results.jsonl").read_bytes() == (seq / "results.jsonl").read_bytes()
    assert len((seq / "results.jsonl").read_text().splitlines()) == 10
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="only with generator.backend remote"):
        EvalConfig(concurrency=2)
