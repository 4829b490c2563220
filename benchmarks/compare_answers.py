"""Do two runs of benchmarks/answers.py answer alike? For refactors that must not change behaviour: every sampled
answer (text, mode, warnings, draft, passages shown) must be byte-identical, and every per-set figure equal (timings
aside).

    .venv/bin/python benchmarks/answers.py --limit 40 --sample 40 --name answers-before   # on the old code
    .venv/bin/python benchmarks/answers.py --limit 40 --sample 40 --name answers-after    # on the new code
    .venv/bin/python benchmarks/compare_answers.py answers-before answers-after

Writes benchmarks/results/compare-<a>-<b>.json; exits 1 when anything differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TIMINGS = ("verify_ms_p50", "verify_over_generate")


def _sample(name: str) -> list[dict]:
    return [json.loads(x) for x in (RESULTS / f"{name}_sample.jsonl").read_text().splitlines() if x.strip()]


def _figures(name: str) -> dict:
    """Per set and arm, every figure but the timings."""
    sets = json.loads((RESULTS / f"{name}.json").read_text())["sets"]
    return {s: {arm: ({k: v for k, v in fig.items() if k not in TIMINGS} if isinstance(fig, dict) else fig)
                for arm, fig in arms.items()} for s, arms in sets.items()}


def compare(a: str, b: str) -> dict:
    sa, sb = _sample(a), _sample(b)
    key = lambda r: (r["arm"], r["set"], r["question"])  # noqa: E731
    ka, kb = {key(r): r for r in sa}, {key(r): r for r in sb}
    differing = [{"arm": k[0], "set": k[1], "question": k[2],
                  "fields": sorted(f for f in ka[k] if ka[k][f] != kb[k].get(f))}
                 for k in ka if k in kb and ka[k] != kb[k]]
    fa, fb = _figures(a), _figures(b)
    figures = [f"{s}/{arm}" for s in fa for arm in fa[s] if fa[s][arm] != fb.get(s, {}).get(arm)]
    return {"a": a, "b": b, "answers_compared": len(set(ka) & set(kb)), "only_in_one": len(set(ka) ^ set(kb)),
            "answers_identical": len(set(ka) & set(kb)) - len(differing), "differing": differing,
            "figures_differing": figures}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="results stem of the first run (benchmarks/results/<a>.json)")
    ap.add_argument("b", help="results stem of the second run")
    args = ap.parse_args()
    out = compare(args.a, args.b)
    path = RESULTS / f"compare-{args.a}-{args.b}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    same = not out["differing"] and not out["figures_differing"] and not out["only_in_one"]
    print(f"{out['answers_identical']} of {out['answers_compared']} answers byte-identical, "
          f"{len(out['figures_differing'])} set figures differ -> {path}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
