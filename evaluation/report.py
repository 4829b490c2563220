"""Summary statistics and the human-facing report of an evaluation run (summary.json, report.md, PNGs).

Every comparison is paired (same questions, two arms): mean difference with a bootstrap interval, per-question
wins/losses/ties, and McNemar's exact test for multiple choice. Averages never appear alone.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from evaluation.config import EvalConfig
from evaluation.stats import mcnemar, mean_ci, paired_bootstrap, win_loss_tie

OPEN_COMPARED = ("token_f1", "rouge_l", "draft_token_f1", "draft_rouge_l", "end_of_turn", "repeated_4gram_rate",
                 "answer_tokens")
OPEN_PLOTTED = ("token_f1", "rouge_l", "end_of_turn", "recall_at_k", "citation_support")
WIN_LOSS_METRICS = ("token_f1", "rouge_l")


def comparisons(arms: tuple[str, ...]) -> list[tuple[str, str]]:
    """(reference, candidate) pairs: every arm against the first; a tuned arm against base with the same retrieval."""
    pairs = [(arms[0], a) for a in arms[1:]]
    for a in arms:
        model, _, retrieval = a.partition(":")
        ref = f"base:{retrieval}"
        if model == "tuned" and ref in arms and (ref, a) not in pairs:
            pairs.append((ref, a))
    return pairs


def _by(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    out: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        out[r["task"]][r["arm"]].append(r)
    return out


def summarize_run(cfg: EvalConfig, rows: list[dict]) -> dict:
    grouped = _by(rows)
    seed, n = cfg.seed, cfg.bootstrap_samples
    summary: dict = {"arms": list(cfg.arms), "comparisons": [list(p) for p in comparisons(cfg.arms)], "tasks": {}}
    for task, arms in grouped.items():
        per_arm = {}
        for arm, rs in arms.items():
            metrics = sorted(set.intersection(*(set(r["metrics"]) for r in rs)))
            per_arm[arm] = {m: mean_ci([r["metrics"][m] for r in rs], n, seed) for m in metrics}
        comps = []
        for ref, cand in comparisons(cfg.arms):
            if ref not in arms or cand not in arms:
                continue
            a = {r["id"]: r for r in arms[cand]}
            b = {r["id"]: r for r in arms[ref]}
            ids = [i for i in a if i in b]
            entry: dict = {"reference": ref, "candidate": cand, "n": len(ids), "metrics": {}}
            names = OPEN_COMPARED if task == "open" else ("accuracy",)
            for m in names:
                if not all(m in a[i]["metrics"] and m in b[i]["metrics"] for i in ids):
                    continue
                x = [a[i]["metrics"][m] for i in ids]
                y = [b[i]["metrics"][m] for i in ids]
                entry["metrics"][m] = {**paired_bootstrap(x, y, n, seed), **win_loss_tie(x, y)}
            if task != "open":
                entry["mcnemar"] = mcnemar([a[i]["metrics"]["accuracy"] == 1 for i in ids],
                                           [b[i]["metrics"]["accuracy"] == 1 for i in ids])
            else:
                drops = sorted(ids, key=lambda i: a[i]["metrics"]["token_f1"] - b[i]["metrics"]["token_f1"])[:5]
                entry["largest_losses"] = [
                    {"id": i, "question": a[i]["question"], "delta_token_f1": round(
                        a[i]["metrics"]["token_f1"] - b[i]["metrics"]["token_f1"], 4),
                     "candidate_answer": a[i]["answer"][:300], "reference_answer": b[i]["answer"][:300]}
                    for i in drops if a[i]["metrics"]["token_f1"] < b[i]["metrics"]["token_f1"]]
            comps.append(entry)
        summary["tasks"][task] = {"per_arm": per_arm, "comparisons": comps}
    mirage = [t for t in summary["tasks"] if t.startswith("mirage/")]
    if mirage:
        overall = {}
        for arm in cfg.arms:
            accs = [summary["tasks"][t]["per_arm"][arm]["accuracy"]["mean"] for t in mirage
                    if arm in summary["tasks"][t]["per_arm"]]
            pooled = [r["metrics"]["accuracy"] for t in mirage for r in grouped[t].get(arm, [])]
            overall[arm] = {"macro_accuracy": round(sum(accs) / len(accs), 6) if accs else None,
                            "micro_accuracy": mean_ci(pooled, n, seed)}
        pooled_cmp = []
        for ref, cand in comparisons(cfg.arms):
            a = [r["metrics"]["accuracy"] == 1 for t in mirage for r in sorted(grouped[t].get(cand, []), key=lambda r: r["id"])]
            b = [r["metrics"]["accuracy"] == 1 for t in mirage for r in sorted(grouped[t].get(ref, []), key=lambda r: r["id"])]
            if a and len(a) == len(b):
                pooled_cmp.append({"reference": ref, "candidate": cand, "mcnemar": mcnemar(a, b),
                                   **paired_bootstrap([float(x) for x in a], [float(x) for x in b], n, seed)})
        summary["mirage_overall"] = {"per_arm": overall, "comparisons": pooled_cmp}
    return summary


# --- plots -----------------------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_metrics_by_arm(summary: dict, arms: list[str], path: Path) -> bool:
    per_arm = summary["tasks"].get("open", {}).get("per_arm")
    if not per_arm:
        return False
    plt = _plt()
    metrics = [m for m in OPEN_PLOTTED if any(m in per_arm[a] for a in per_arm)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.4), dpi=110)
    axes = axes if len(metrics) > 1 else [axes]
    for ax, m in zip(axes, metrics, strict=True):
        xs = [a for a in arms if m in per_arm.get(a, {})]
        means = [per_arm[a][m]["mean"] for a in xs]
        err = [[per_arm[a][m]["mean"] - per_arm[a][m]["ci_low"] for a in xs],
               [per_arm[a][m]["ci_high"] - per_arm[a][m]["mean"] for a in xs]]
        ax.bar(range(len(xs)), means, yerr=err, capsize=4, color=[f"C{arms.index(a)}" for a in xs])
        ax.set_xticks(range(len(xs)), xs, rotation=30, ha="right", fontsize=8)
        ax.set_title(m, fontsize=9)
    fig.suptitle("open-ended: mean with 95% bootstrap interval", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_mirage(summary: dict, arms: list[str], path: Path) -> bool:
    tasks = [t for t in summary["tasks"] if t.startswith("mirage/")]
    if not tasks:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 3.4), dpi=110)
    width = 0.8 / len(arms)
    for j, arm in enumerate(arms):
        vals = [summary["tasks"][t]["per_arm"].get(arm, {}).get("accuracy") for t in tasks]
        xs = [i + j * width for i, v in enumerate(vals) if v]
        means = [v["mean"] for v in vals if v]
        err = [[v["mean"] - v["ci_low"] for v in vals if v], [v["ci_high"] - v["mean"] for v in vals if v]]
        ax.bar(xs, means, width, yerr=err, capsize=3, label=arm, color=f"C{j}")
    ax.set_xticks([i + width * (len(arms) - 1) / 2 for i in range(len(tasks))], [t.split("/")[1] for t in tasks])
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("MIRAGE accuracy by task (95% bootstrap interval)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_wrong_lengths(rows: list[dict], arms: list[str], wrong_f1: float, path: Path) -> bool:
    open_rows = [r for r in rows if r["task"] == "open" and "answer_tokens" in r["metrics"]]
    if not open_rows:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    for j, arm in enumerate(arms):
        lens = [r["metrics"]["answer_tokens"] for r in open_rows if r["arm"] == arm and r["metrics"]["token_f1"] < wrong_f1]
        if lens:
            ax.hist(lens, bins=16, range=(0, max(r["metrics"]["answer_tokens"] for r in open_rows) + 1), alpha=0.5,
                    label=f"{arm} (n={len(lens)})", color=f"C{j}")
    ax.set_xlabel("answer length (tokens); a pile at the cap = answers that never stopped")
    ax.set_ylabel("wrong answers")
    ax.set_title(f"length of wrong answers (token F1 < {wrong_f1})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def plot_win_loss(summary: dict, path: Path) -> bool:
    bars = []
    for task, t in summary["tasks"].items():
        for c in t["comparisons"]:
            for m in (WIN_LOSS_METRICS if task == "open" else ("accuracy",)):
                if m in c["metrics"]:
                    s = c["metrics"][m]
                    bars.append((f"{task} {m}\n{c['candidate']} vs {c['reference']}", s["wins"], s["ties"], s["losses"]))
    if not bars:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(bars) + 1.2), dpi=110)
    for i, (_, w, t, lo) in enumerate(bars):
        total = max(1, w + t + lo)
        ax.barh(i, w / total, color="tab:green")
        ax.barh(i, t / total, left=w / total, color="0.8")
        ax.barh(i, lo / total, left=(w + t) / total, color="tab:red")
        ax.text(0.01, i, f"{w} win / {t} tie / {lo} loss", va="center", fontsize=7)
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of questions")
    ax.set_title("per-question wins / ties / losses of the candidate arm", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# --- markdown --------------------------------------------------------------------------------------------------------

def _ci(s: dict) -> str:
    return f"{s['mean']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def _diff(s: dict) -> str:
    return f"{s['mean_diff']:+.3f} [{s['ci_low']:+.3f}, {s['ci_high']:+.3f}]"


def render_report(cfg: EvalConfig, summary: dict, rows: list[dict], out: Path) -> str:
    arms = list(cfg.arms)
    lines = [f"# Evaluation `{cfg.run_name}`", ""]
    plots = {"metrics_by_arm.png": plot_metrics_by_arm(summary, arms, out / "metrics_by_arm.png"),
             "mirage_accuracy.png": plot_mirage(summary, arms, out / "mirage_accuracy.png"),
             "wrong_lengths.png": plot_wrong_lengths(rows, arms, cfg.wrong_f1, out / "wrong_lengths.png"),
             "win_loss.png": plot_win_loss(summary, out / "win_loss.png")}
    if "open" in summary["tasks"]:
        t = summary["tasks"]["open"]
        metrics = [m for m in ("token_f1", "rouge_l", "draft_token_f1", "draft_rouge_l", "recall_at_k",
                               "reciprocal_rank", "mode_generated", "mode_extractive", "mode_no_answer", "cites",
                               "draft_cites", "citation_validity", "draft_citation_validity", "citation_support",
                               "lexical_support", "draft_lexical_support", "invented_terms", "draft_invented_terms",
                               "triage", "end_of_turn", "repeated_4gram_rate", "runaway_list",
                               "distinct_2", "answer_tokens") if any(m in t["per_arm"][a] for a in t["per_arm"])]
        n = next(iter(t["per_arm"].values()))["token_f1"]["n"]
        lines += [f"## Open-ended questions (n = {n})", "", "Mean [95% bootstrap interval] per arm.", "",
                  "| metric | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        for m in metrics:
            lines.append(f"| {m} | " + " | ".join(_ci(t["per_arm"][a][m]) if m in t["per_arm"].get(a, {}) else "-"
                                                  for a in arms) + " |")
        lines += [""]
        for c in t["comparisons"]:
            lines += [f"**{c['candidate']} vs {c['reference']}** (paired, n = {c['n']}): difference "
                      "[95% interval]; questions where the candidate is higher / equal / lower (for F1 and ROUGE-L "
                      "higher is better; for repetition and length, lower)", "",
                      "| metric | difference | higher / equal / lower |", "|---|---|---|"]
            for m, s in c["metrics"].items():
                lines.append(f"| {m} | {_diff(s)} | {s['wins']} / {s['ties']} / {s['losses']} |")
            if c.get("largest_losses"):
                lines += ["", "Where the candidate lost most (token F1):", ""]
                lines += [f"- `{x['id']}` ({x['delta_token_f1']:+.3f}): {x['question']}" for x in c["largest_losses"]]
            lines += [""]
    mirage = [k for k in summary["tasks"] if k.startswith("mirage/")]
    if mirage:
        lines += ["## Multiple choice: MIRAGE (option log-likelihood; question-only retrieval)", "",
                  "| task | n | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
        for task in mirage:
            pa = summary["tasks"][task]["per_arm"]
            n = next(iter(pa.values()))["accuracy"]["n"]
            lines.append(f"| {task.split('/')[1]} | {n} | " + " | ".join(
                _ci(pa[a]["accuracy"]) if a in pa else "-" for a in arms) + " |")
        ov = summary["mirage_overall"]["per_arm"]
        lines.append("| **average over tasks** | | " + " | ".join(
            f"{ov[a]['macro_accuracy']:.3f}" if ov.get(a, {}).get("macro_accuracy") is not None else "-" for a in arms) + " |")
        lines += ["", "| comparison | task | accuracy difference | W / T / L | McNemar b / c, p |", "|---|---|---|---|---|"]
        for task in mirage:
            for c in summary["tasks"][task]["comparisons"]:
                s, mc = c["metrics"]["accuracy"], c["mcnemar"]
                lines.append(f"| {c['candidate']} vs {c['reference']} | {task.split('/')[1]} | {_diff(s)} | "
                             f"{s['wins']} / {s['ties']} / {s['losses']} | {mc['b']} / {mc['c']}, {mc['p_value']:.3f} |")
        for c in summary["mirage_overall"]["comparisons"]:
            mc = c["mcnemar"]
            lines.append(f"| {c['candidate']} vs {c['reference']} | all (pooled) | {_diff(c)} | | "
                         f"{mc['b']} / {mc['c']}, {mc['p_value']:.3f} |")
        lines += [""]
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name, made in plots.items() if made] + [""]
    rep = summary.get("reproducibility", {})
    lines += ["## Reproducibility", "", "```json"]
    import json

    lines += [json.dumps(rep, indent=2), "```", "",
              "Rows: `results.jsonl` (one per question and arm, with the answer and every metric); numbers: "
              "`summary.json`.", ""]
    return "\n".join(lines)
