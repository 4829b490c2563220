"""The documentation: a short README that opens with the two commands, an MkDocs site that builds with --strict,
every generated block equal to what its source renders (measured tables from benchmarks/results, config tables
from the dataclasses, the endpoint list from the app's OpenAPI schema), prose in the third person, and one version
in pyproject.toml, the CHANGELOG, `medcite --version` and GET /v1/models."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_generated_block_matches_its_source():
    r = subprocess.run([sys.executable, "scripts/docs.py", "--check"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout


def test_a_block_disagreeing_with_its_results_file_is_caught(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    import docs as gen

    text = (ROOT / "docs" / "benchmarks.md").read_text()
    assert "<!-- gen:retrieval -->" in text
    fresh = gen.render_file(text, {})
    assert fresh == text
    tampered = re.sub(r"(\| hybrid \| )0\.\d+", r"\g<1>0.999", text, count=1)
    assert tampered != text and gen.render_file(tampered, {}) == text  # the renderer restores the measured value


def test_mkdocs_builds_strict(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for page in ("index.html", "api/index.html", "configuration/index.html", "benchmarks/index.html",
                 "openapi.json"):
        assert (tmp_path / "site" / page).is_file(), page


def test_the_readme_is_short_and_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]
    assert readme.index("```bash") < 30 and len(readme) < 8000 and "```mermaid" in readme
    for link in re.findall(r"\]\(((?:docs/)?[\w./-]+\.md)", readme):
        assert (ROOT / link).is_file(), link


def _prose(text: str) -> str:
    """Text outside code blocks, code spans and generated blocks."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"<!-- gen:([\w-]+) -->.*?<!-- /gen:\1 -->", "", text, flags=re.S)
    return re.sub(r"`[^`]*`", "", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_prose_is_third_person_without_build_narrative(page):
    prose = _prose(page.read_text())
    found = re.findall(r"\b(?:I|I'm|I've|I'd|my|we|We|our|this session)\b", prose)
    assert not found, f"{page.name}: {found[:5]}"


def test_one_version_everywhere():
    from litestar.testing import TestClient

    from service.app import create_app
    from service.config import ServeConfig
    from tests.fakes import FakeGenerator, FakeRetriever

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert re.search(rf"^## {re.escape(version)} ", (ROOT / "CHANGELOG.md").read_text(), re.M)
    out = subprocess.run([sys.executable, "-m", "medcite", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip() == f"medcite {version}"
    with TestClient(base_url="http://localhost", app=create_app(FakeRetriever(), FakeGenerator(), ServeConfig())) as c:
        models = c.get("/v1/models").json()["data"]
    assert {m["medcite_version"] for m in models} == {version}
