"""The layout docs/getting-started.md's "Layout" section promises: one job per top-level package, arrows pointing down only.
Read from the source with `ast` (lazy imports inside functions count too)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "retriever", "retriever_train", "index_build", "generator", "judge", "finetune", "service",
            "evaluation", "medcite")
ALLOWED = {
    "core": set(),
    "retriever": {"core"},
    "index_build": {"core", "retriever"},
    # the training jobs of the small models; the triage layer learns from the service's reviewed rules' labels;
    # the judges' thresholds are calibrated with the served judge at each precision it runs at
    "retriever_train": {"core", "retriever", "index_build", "service", "judge"},
    "generator": {"core"},
    "judge": {"core"},
    "finetune": {"core", "generator", "retriever", "judge"},
    "service": {"core", "retriever", "generator", "judge"},
    "evaluation": {"core", "retriever", "generator", "service", "judge"},
    "medcite": set(PACKAGES),
}
HEAVY_FORBIDDEN = {"core": {"torch", "faiss", "litestar", "transformers"}, "generator": {"trl", "datasets"},
                   "service": {"trl", "datasets"}, "retriever": {"trl", "datasets", "litestar"},
                   "judge": {"trl", "datasets", "litestar"}}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_arrows_point_down_and_heavy_libraries_stay_where_they_belong():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).glob("*.py")):
            used = _imports(path)
            inner = (used & set(PACKAGES)) - {pkg}
            assert inner <= ALLOWED[pkg], f"{path.relative_to(ROOT)} imports {sorted(inner - ALLOWED[pkg])}"
            bad = used & HEAVY_FORBIDDEN.get(pkg, set())
            assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_utils_module():
    assert not list(ROOT.glob("*/utils.py")), "a thing without a home does not exist yet"
