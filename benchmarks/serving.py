"""Serving benchmark: overheads of the API around the model, decode efficiency, and answer quality of the two
repetition-penalty scopes. Ratios of side-by-side measurements only (this machine's timings swing 3-8x).

    .venv/bin/python benchmarks/serving.py [--index artifacts/index] [--quality-questions 30] [--parts e2e,decode]

1. E2E overhead: (E2E p50 - generate p50) / generate p50 over /v1/answer on a `medcite serve` subprocess
   (target <= 0.05).
2. Server efficiency: /v1/retrieve requests/s under a bounded loopback load / in-process retrieve() capacity,
   A/B/A/B (target >= 0.8).
3. Decode efficiency: decode tokens/s / (memory bandwidth measured now / weight bytes) (target >= 0.5):
   a batch-1 decode step must stream every weight once, so bandwidth / weight bytes is its ceiling.
4. Quality of penalty_scope=generated vs all on dev questions: token F1 against the gold answer, share of
   answers ending at end-of-turn, repeated 4-gram rate, share citing a passage, and share with a runaway list.
5. Decoding backends (`--parts backends`), each on the same dev questions through the pipeline: transformers
   fp32 (the reference), torchao int8 weight-only, llama.cpp on the packaged Q4_1 GGUF and requantized to
   q4_0 / q8_0. Speed: prefill tok/s and decode tok/s on the demo prompt, A/B/A/B; quality: draft and verified
   token F1 with a paired bootstrap interval against fp32, end-of-turn share, answers hitting the cap,
   repeated 4-grams, runaway lists.
6. Served (`--parts served`): a `medcite serve` subprocess with the llama.cpp backend. Decode tokens/s through
   /v1/answer ((completion - 1) / (generate - prefill), from the response's timings) over a plain
   transformers fp32 greedy loop of the same model on the same prompts, question by question in alternation
   (target >= 3); the ratio to the bandwidth bound of the weights actually streamed; and the demo question
   end to end from the client's side, median of 5 (target <= 2 s).

Writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.config import default_data_dir  # noqa: E402
from core.corpus import clean_records, read_corpus  # noqa: E402
from core.files import atomic_write_json  # noqa: E402
from core.quality import repeated_ngram_rate, runaway_list, token_f1  # noqa: E402
from generator.config import DecodingConfig, GeneratorConfig  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(index: str, port: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    # The server logs a JSON line per request to stderr: into a file, never a pipe nobody drains (a full pipe
    # buffer blocks the server after a few hundred requests).
    log = tempfile.NamedTemporaryFile("w+", prefix="medcite-serve-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "medcite", "serve", "--index", index, "--port", str(port), *extra],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
    import httpx

    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {Path(log.name).read_text()[-500:]}")
        time.sleep(0.5)
    raise SystemExit("server did not become ready")


def e2e_overhead(base: str, questions: list[str], max_new_tokens: int) -> dict:
    import httpx

    e2e, gen = [], []
    with httpx.Client(timeout=300) as c:
        for q in questions:
            t = time.perf_counter()
            r = c.post(f"{base}/v1/answer", json={"question": q, "max_new_tokens": max_new_tokens})
            e2e.append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
            gen.append(r.json()["timings"]["generate_ms"])
    e, g = statistics.median(e2e), statistics.median(gen)
    return {"requests": len(questions), "max_new_tokens": max_new_tokens, "e2e_p50_ms": round(e, 1),
            "generate_p50_ms": round(g, 1), "overhead": round((e - g) / g, 4)}


def retrieve_efficiency(base: str, retriever, queries: list[str], concurrency: int, reps: int) -> dict:
    import httpx

    def in_process() -> float:
        t = time.perf_counter()
        for q in queries:
            retriever.search(q, k=3, mode="hybrid")
        return len(queries) / (time.perf_counter() - t)

    def over_http() -> float:
        todo = list(queries)
        lock = threading.Lock()

        def worker() -> None:
            with httpx.Client(timeout=60) as c:
                while True:
                    with lock:
                        if not todo:
                            return
                        q = todo.pop()
                    c.post(f"{base}/v1/retrieve", json={"query": q, "k": 3}).raise_for_status()

        t = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return len(queries) / (time.perf_counter() - t)

    a, b = [], []
    for _ in range(reps):
        a.append(in_process())
        b.append(over_http())
    return {"queries": len(queries), "concurrency": concurrency, "in_process_rps": [round(x, 1) for x in a],
            "http_rps": [round(x, 1) for x in b], "ratio": round(statistics.median(b) / statistics.median(a), 3)}


def bandwidth() -> dict:
    """Memory bandwidth two ways, both read + write of 256 MiB (far beyond cache): numpy's single-threaded memcpy
    and torch's copy_ on the decode's own thread count. The larger one is the ceiling used."""
    import numpy as np
    import torch

    src = np.ones(64 * 1024 * 1024, dtype=np.float32)
    dst = np.empty_like(src)
    tsrc, tdst = torch.from_numpy(src), torch.empty(src.shape[0])
    bw_np, bw_torch = [], []
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        bw_np.append(2 * src.nbytes / (time.perf_counter() - t))
        t = time.perf_counter()
        tdst.copy_(tsrc)
        bw_torch.append(2 * src.nbytes / (time.perf_counter() - t))
    return {"numpy_GBps": round(max(bw_np) / 1e9, 2), "torch_GBps": round(max(bw_torch) / 1e9, 2),
            "bytes_per_s": max(max(bw_np), max(bw_torch))}


def plain_loop(model, ids, pad_id: int, n: int) -> float:
    """Seconds for a plain transformers greedy loop of exactly n new tokens (no penalty, no stop)."""
    import torch

    t = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=pad_id)
    return time.perf_counter() - t


def decode_efficiency(gen) -> dict:
    import torch

    weight_bytes = sum(p.numel() * p.element_size() for p in gen.model.parameters())
    bw = bandwidth()
    ids, _ = gen._inputs([{"role": "user", "content": "Describe the heart in detail."}])
    plain_loop(gen.model, ids, gen.pad_id, 4)  # warm-up
    n = 96
    per_token = statistics.median([(plain_loop(gen.model, ids, gen.pad_id, n + 1)
                                    - plain_loop(gen.model, ids, gen.pad_id, 1)) / n for _ in range(3)])
    tps = 1 / per_token
    ceiling = bw["bytes_per_s"] / weight_bytes
    return {"threads": torch.get_num_threads(), "weight_bytes": weight_bytes,
            "bandwidth_numpy_GBps": bw["numpy_GBps"], "bandwidth_torch_GBps": bw["torch_GBps"],
            "decode_tokens_per_s": round(tps, 1), "bandwidth_bound_tokens_per_s": round(ceiling, 1),
            "ratio": round(tps / ceiling, 3)}


DEMO_QUESTION = "What are the treatments for gout?"  # the Makefile's QUESTION
BACKENDS = {  # name -> GeneratorConfig fields (torchao: the fp32 model quantized after loading)
    "transformers-fp32": {},
    "transformers-torchao-int8wo": {},
    "llamacpp-q4_1-packaged": {"backend": "llamacpp"},
    "llamacpp-q4_0": {"backend": "llamacpp", "gguf_quant": "q4_0"},
    "llamacpp-q8_0": {"backend": "llamacpp", "gguf_quant": "q8_0"},
}


def load_backend(name: str):
    from generator.loader import load_generator

    gen = load_generator(GeneratorConfig(**BACKENDS[name]), log=lambda _: None)
    if "torchao" in name:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        quantize_(gen.model, Int8WeightOnlyConfig())
    return gen


def weights_streamed(gen) -> int:
    """Bytes of weights one decode step reads: the GGUF's tensors, or the torch parameters."""
    if hasattr(gen, "llm"):
        return os.path.getsize(gen.llm.model_path)  # tensors + a few kB of metadata
    return sum(p.numel() * p.element_size() for p in gen.model.parameters())


def backend_speed(gens: dict, messages: list[dict], reps: int) -> dict:
    """Prefill and decode tokens/s of every backend on one prompt, through the product's generate(): decode is
    (completion - 1) / (total - prefill) on an answer forced to 128 tokens by a prompt that asks for length."""
    long_msgs = messages[:-1] + [{"role": "user", "content": messages[-1]["content"] +
                                  " Explain every passage in great detail, at length."}]
    out: dict[str, dict[str, list[float]]] = {n: {"prefill": [], "decode": []} for n in gens}
    for rep in range(reps):  # A B C, then C B A
        for name in list(gens)[:: 1 if rep % 2 == 0 else -1]:
            g = gens[name]
            t = time.perf_counter()
            r = g.generate(long_msgs, max_new_tokens=128)
            total = time.perf_counter() - t
            pre = (r.prefill_ms or 0) / 1000
            out[name]["prefill"].append(r.prompt_tokens / pre)
            out[name]["decode"].append((r.completion_tokens - 1) / (total - pre))
    return {n: {"prefill_tokens_per_s": round(statistics.median(v["prefill"]), 1),
                "decode_tokens_per_s": round(statistics.median(v["decode"]), 1)} for n, v in out.items()}


def backend_quality(gens: dict, retriever, dev: list[dict], gold_text: dict[str, str]) -> dict:
    from evaluation.stats import mean_ci, paired_bootstrap
    from pipeline.answer import Pipeline

    rows: dict[str, list[dict]] = {n: [] for n in gens}
    for n, d in enumerate(dev, start=1):  # question by question, every backend: load drifts hit them all alike
        if n % 10 == 0:
            print(f"quality: question {n}/{len(dev)}", flush=True)
        gold = gold_text[d["gold_medquad_id"]]
        for name, g in gens.items():
            a = Pipeline(retriever, g).answer(d["question"])
            rows[name].append({"draft_f1": token_f1(a.draft, gold), "f1": token_f1(a.text, gold),
                               "eot": a.stop_reason == "end_of_turn", "cap": a.stop_reason == "length",
                               "rep4": repeated_ngram_rate(a.draft), "runaway": runaway_list(a.draft),
                               "tokens": a.usage["completion_tokens"], "generated": a.answer_mode == "generated"})
    ref = rows["transformers-fp32"]
    out = {}
    for name, rs in rows.items():
        out[name] = {
            "questions": len(rs),
            "draft_token_f1": mean_ci([r["draft_f1"] for r in rs]),
            "verified_token_f1": mean_ci([r["f1"] for r in rs]),
            "draft_f1_minus_fp32": paired_bootstrap([r["draft_f1"] for r in rs], [r["draft_f1"] for r in ref]),
            "verified_f1_minus_fp32": paired_bootstrap([r["f1"] for r in rs], [r["f1"] for r in ref]),
            **means(rs, {"end_of_turn_share": ("eot", 3), "hit_cap_share": ("cap", 3),
                         "repeated_4gram_rate": ("rep4", 4), "runaway_list_share": ("runaway", 3),
                         "generated_mode_share": ("generated", 3), "mean_completion_tokens": ("tokens", 1)})}
        print(name, json.dumps(out[name]), flush=True)
    return out


def backends(retriever, dev: list[dict], gold_text: dict[str, str], names: list[str], quality_names: list[str],
             reps: int) -> dict:
    from generator.prompt import build_messages

    gens = {}
    for name in names:
        try:
            gens[name] = load_backend(name)
        except ImportError as e:  # torchao is in the bench extra only
            print(f"skipping {name}: {e}", flush=True)
    demo_hits = retriever.search(DEMO_QUESTION, k=3)
    first = next(iter(gens.values()))
    messages, _ = build_messages(DEMO_QUESTION, demo_hits, count_tokens=first.count_tokens, budget=1536)
    speed = backend_speed(gens, messages, reps)
    for name, g in gens.items():
        speed[name]["weight_bytes"] = weights_streamed(g)
    print("speed", json.dumps(speed), flush=True)
    # Answer quality only for the backends fast enough to matter (torchao's eager int8 decodes at half fp32's speed)
    picked = {n: g for n, g in gens.items() if n in quality_names}
    return {"speed": speed, "quality": backend_quality(picked, retriever, dev, gold_text)}


def served(index: str, retriever, dev: list[dict], backend_args: tuple[str, ...], weight_bytes: int) -> dict:
    """Decode tokens/s through /v1/answer against a plain transformers fp32 loop on the same prompts, question by
    question, alternating which goes first; and the demo question end to end, median of 5."""
    import httpx

    from generator.hf import HFGenerator
    from generator.prompt import build_messages

    hf = HFGenerator.load(GeneratorConfig(), DecodingConfig())
    port = free_port()
    server = start_server(index, port, backend_args)
    base = f"http://127.0.0.1:{port}"
    api_tok, api_s, loop_tok, loop_s, demo = 0, 0.0, 0, 0.0, []
    try:
        with httpx.Client(timeout=300) as c:
            c.post(f"{base}/v1/answer", json={"question": DEMO_QUESTION}).raise_for_status()  # warm-up
            for i, d in enumerate(dev):
                def via_api(q: str = d["question"]) -> None:
                    nonlocal api_tok, api_s
                    r = c.post(f"{base}/v1/answer", json={"question": q})
                    r.raise_for_status()
                    body = r.json()
                    n, tm = body["usage"]["completion_tokens"], body["timings"]
                    if n > 1:
                        api_tok += n - 1
                        api_s += (tm["generate_ms"] - tm["prefill_ms"]) / 1000

                def via_loop(q: str = d["question"]) -> None:
                    nonlocal loop_tok, loop_s
                    msgs, _ = build_messages(q, retriever.search(q, k=3), count_tokens=hf.count_tokens, budget=1536)
                    ids, _ = hf._inputs(msgs)
                    n = 64
                    loop_s += plain_loop(hf.model, ids, hf.pad_id, n + 1) - plain_loop(hf.model, ids, hf.pad_id, 1)
                    loop_tok += n

                for fn in (via_api, via_loop) if i % 2 == 0 else (via_loop, via_api):
                    fn()
            for _ in range(5):
                t = time.perf_counter()
                r = c.post(f"{base}/v1/answer", json={"question": DEMO_QUESTION})
                demo.append(time.perf_counter() - t)
                r.raise_for_status()
            demo_body = r.json()
    finally:
        server.terminate()
        server.wait(30)
    api_tps, loop_tps = api_tok / api_s, loop_tok / loop_s
    bw = bandwidth()["bytes_per_s"]
    return {"backend": " ".join(backend_args), "questions": len(dev),
            "served_decode_tokens_per_s": round(api_tps, 1), "plain_transformers_fp32_tokens_per_s": round(loop_tps, 1),
            "ratio": round(api_tps / loop_tps, 2),
            "weight_bytes_streamed": weight_bytes, "bandwidth_bound_tokens_per_s": round(bw / weight_bytes, 1),
            "ratio_to_bandwidth_bound": round(api_tps / (bw / weight_bytes), 3),
            "demo_e2e_s": [round(x, 3) for x in demo], "demo_e2e_median_s": round(statistics.median(demo), 3),
            "demo_timings_ms": demo_body["timings"], "demo_completion_tokens": demo_body["usage"]["completion_tokens"],
            "demo_answer_mode": demo_body["answer_mode"]}


def means(rows: list[dict], spec: dict[str, tuple[str, int]]) -> dict[str, float]:
    """{output name: (row key, decimals)} -> the rounded mean of that key over the rows."""
    return {name: round(statistics.mean(r[key] for r in rows), nd) for name, (key, nd) in spec.items()}


def quality(retriever, gen, dev: list[dict], gold_text: dict[str, str], k: int) -> dict:
    from pipeline.answer import Pipeline
    from pipeline.config import PipelineConfig

    out = {}
    for scope in ("generated", "all"):
        rows = []
        for d in dev:
            a = Pipeline(retriever, gen, None, PipelineConfig(k=k)).answer(d["question"], penalty_scope=scope)
            rows.append({"f1": token_f1(a.text, gold_text[d["gold_medquad_id"]]),
                         "eot": a.stop_reason == "end_of_turn", "rep4": repeated_ngram_rate(a.text),
                         "cites": bool(a.citations), "runaway": runaway_list(a.text),
                         "tokens": a.usage["completion_tokens"]})
        out[scope] = {"questions": len(rows),
                      **means(rows, {"token_f1": ("f1", 4), "end_of_turn_share": ("eot", 3),
                                     "repeated_4gram_rate": ("rep4", 4), "citing_share": ("cites", 3),
                                     "runaway_list_share": ("runaway", 3), "mean_completion_tokens": ("tokens", 1)})}
        print(scope, json.dumps(out[scope]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index", default="artifacts/index")
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--quality-questions", type=int, default=30)
    ap.add_argument("--e2e-requests", type=int, default=8)
    ap.add_argument("--backend-questions", type=int, default=40)
    ap.add_argument("--served-questions", type=int, default=20)
    ap.add_argument("--served-backend", default="--set generator.backend=llamacpp --set generator.gguf_quant=q4_0",
                    help="the serve flags of the backend measured in part 6")
    ap.add_argument("--backends", default=",".join(BACKENDS), help="part 5: comma-separated names of BACKENDS")
    ap.add_argument("--quality-backends", default="transformers-fp32,llamacpp-q4_1-packaged,llamacpp-q4_0",
                    help="part 5: the backends whose answers are scored (transformers-fp32 is the reference)")
    ap.add_argument("--parts", default="e2e,retrieve,decode,quality",
                    help="comma-separated subset to run; results of parts not run are kept from the last file")
    args = ap.parse_args()
    parts = set(args.parts.split(","))

    from generator.hf import HFGenerator
    from retriever.search import IndexRetriever

    dev = [json.loads(line) for line in (Path(args.data_dir) / "splits" / "medquad_dev.jsonl").read_text().splitlines()]
    retriever = IndexRetriever.load(args.index)
    gen = HFGenerator.load(GeneratorConfig(), DecodingConfig())  # the serve.yaml defaults
    out_file = RESULTS / "serving.json"
    res: dict = json.loads(out_file.read_text()) if out_file.is_file() else {}
    res.update({"index": retriever.fingerprint[:12], "model": gen.name})

    if parts & {"e2e", "retrieve"}:
        port = free_port()
        server = start_server(args.index, port)
        base = f"http://127.0.0.1:{port}"
        try:
            if "e2e" in parts:
                res["e2e"] = e2e_overhead(base, [d["question"] for d in dev[:args.e2e_requests]], max_new_tokens=64)
                print("e2e", json.dumps(res["e2e"]), flush=True)
            if "retrieve" in parts:
                res["retrieve"] = retrieve_efficiency(base, retriever, [d["question"] for d in dev[:100]], 4, 2)
                print("retrieve", json.dumps(res["retrieve"]), flush=True)
        finally:
            server.terminate()
            server.wait(30)
    if "decode" in parts:
        res["decode"] = decode_efficiency(gen)
        print("decode", json.dumps(res["decode"]), flush=True)
    if parts & {"quality", "backends"}:
        records, _ = clean_records(read_corpus("medquad:medquad", args.data_dir).records)
        gold_text = {r.id: r.text for r in records}
        for r in records:
            for dup in r.duplicate_ids:
                gold_text[dup] = r.text
    if "quality" in parts:
        res["penalty_scope_quality"] = quality(retriever, gen, dev[:args.quality_questions], gold_text, k=3)
    if "backends" in parts:
        res["backends"] = backends(retriever, dev[:args.backend_questions], gold_text, args.backends.split(","),
                                   args.quality_backends.split(","), reps=4)
        atomic_write_json(out_file, res)  # kept if a later part fails
    if "served" in parts:
        quant = next((f.split("=", 1)[1] for f in args.served_backend.split() if f.startswith("generator.gguf_quant=")),
                     "q4_1-packaged")
        streamed = res.get("backends", {}).get("speed", {}).get(f"llamacpp-{quant}", {}).get("weight_bytes", 0)
        if not streamed:
            raise SystemExit(f"run part 5 with llamacpp-{quant} first: part 6 needs its weight size")
        res["served"] = served(args.index, retriever, dev[:args.served_questions],
                               tuple(args.served_backend.split()), streamed)
        print("served", json.dumps(res["served"]), flush=True)
    res["targets_met"] = {"e2e overhead <= 0.05": res.get("e2e", {}).get("overhead", 1) <= 0.05,
                          "server efficiency >= 0.8": res.get("retrieve", {}).get("ratio", 0) >= 0.8,
                          "decode efficiency >= 0.5": res.get("decode", {}).get("ratio", 0) >= 0.5,
                          "served decode >= 3x plain transformers fp32": res.get("served", {}).get("ratio", 0) >= 3,
                          "demo end to end <= 2 s": res.get("served", {}).get("demo_e2e_median_s", 9) <= 2}
    print(json.dumps(res["targets_met"], indent=1))
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(out_file, res)
    print(f"wrote {out_file}")


if __name__ == "__main__":
    main()
