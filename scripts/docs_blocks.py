"""The pieces every generated block of scripts/docs.py is made of: a results file read, its provenance line, a Markdown
table, a figure with its interval."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# The command that writes a results file which does not record its own (older benchmarks).
COMMANDS = {"retrieval": "python benchmarks/retrieval.py", "serving": "python benchmarks/serving.py",
            "load": "python benchmarks/load.py", "finetune": "python benchmarks/training.py",
            "verification": "python benchmarks/verification.py",
            "verification-llamacpp": "python benchmarks/verification.py --backend llamacpp"}


def load(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"docs: {path.relative_to(ROOT)} is missing (run its benchmark)")
    return json.loads(path.read_text())


def optional(name: str) -> dict | None:
    """A results file that only some runs write (None when it is missing)."""
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _git_date(path: Path) -> str:
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%cs", "--", str(path)], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return out or "date not recorded"


def source(*names: str) -> str:
    """The provenance line under every measured table."""
    parts = []
    for n in names:
        d = load(n)
        cmd = d.get("command") or COMMANDS.get(n, f"python benchmarks/{n}.py")
        date = d.get("date") or _git_date(RESULTS / f"{n}.json")
        parts.append(f"`benchmarks/results/{n}.json` (`{cmd}`, {date})")
    return "_Rendered from " + "; ".join(parts) + " by `scripts/docs.py`._"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def f3(x) -> str:
    return "-" if x is None else f"{x:.3f}"


# --- renderers: one per block name -------------------------------------------------------------------------------

def ci(v: dict, metric: str) -> str:
    """A figure with its bootstrap interval: 0.918 [0.837, 0.980]."""
    lo, hi = v.get(f"{metric}_ci95", (None, None))
    return f3(v[metric]) + (f" [{f3(lo)}, {f3(hi)}]" if lo is not None else "")


RULER_NAMES = {"medquad_dev": "MedQuAD dev", "consumer": "consumer dev (linked)",
               "consumer_messages": "consumer messages"}


def entailment() -> str:
    e = load("entailment")
    names = {**RULER_NAMES, "medquad_dev": "MedQuAD dev (verbatim in the list)",
             "patient_style": "patient-style rewrites"}
    arms = [a for a in e["rulers"]["consumer"] if "recall@1" in e["rulers"]["consumer"][a]
            and isinstance(e["rulers"]["consumer"][a]["recall@1"], float)]
    rows = []
    for ruler in ("consumer", "consumer_messages", "patient_style", "medquad_dev"):
        res = e["rulers"][ruler]
        for arm in arms:
            d = res.get(f"{arm} - served", {})
            diff = (" / ".join(f"{x['mean_diff']:+.3f} [{x['ci_low']:+.3f}, {x['ci_high']:+.3f}]"
                               for x in (d["recall@1"], d["recall@5"])) if d else "")
            rows.append([f"{names[ruler]} ({res[arm]['n']})", arm, f3(res[arm]["recall@1"]), f3(res[arm]["recall@3"]),
                         ci(res[arm], "recall@5"), diff])
    lat = e["latency"]
    t = e.get("training", {})
    trained = (f" The model: {t['rows']:,} training rows, held-out average precision "
               f"{t['dev_after'].get('eval_dev_average_precision')}, accuracy {t['dev_after'].get('eval_dev_accuracy')}"
               f" ({t['held_out']:,} held-out rows), {t['train_seconds'] / 60:.0f} min to train here." if t else "")
    return (f"Retrieved as the answer pipeline retrieves, {e['questions_listed']:,} distinct MedQuAD questions listed, "
            f"the nearest {e['candidates']} read by the entailment model (`+entailment@t`: fused when P >= t):\n\n"
            + table(["ruler", "arm", "recall@1", "recall@3", "recall@5 (95% CI)", "paired - served: recall@1 / @5"],
                    rows)
            + f"\n\nRetrieve p50 (interleaved): {', '.join(f'{a} {v} ms' for a, v in lat['p50_ms'].items())}."
            + trained + "\n\n" + source("entailment"))


def generator_finetune() -> str:
    """The fine-tuned generator against the base (issue 37 item 5): benchmarks/answers.py with and without
    --adapter, served verification and with the model's checked sentences allowed."""
    arms = [("quotes (served default)", "base", "answers-generator-base"),
            ("quotes (served default)", "fine-tuned", "answers-generator-tuned"),
            ("checked generated sentences allowed", "base", "answers-generator-base-generated"),
            ("checked generated sentences allowed", "fine-tuned", "answers-generator-tuned-generated")]
    rows = []
    for verify, model, name in arms:
        row = [verify, model]
        for s in ("dev", "consumer"):
            v = load(name)["sets"][s]
            j = v["judges"]
            f1 = j["token_f1"]
            row += [f"{j['modes'].get('generated', 0)} / {v['n']}", f3(j["cites_gold"]),
                    f"{f3(f1['mean'])} [{f3(f1['ci_low'])}, {f3(f1['ci_high'])}]"]
        rows.append(row)
    return (table(["verification", "generator", "dev: generated kept", "dev: cites gold", "dev: token F1",
                   "consumer: generated kept", "consumer: cites relevant (49)", "consumer: token F1 (49)"], rows)
            + "\n\n" + source(*(n for _, _, n in arms)))
