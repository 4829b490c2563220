"""The fine-tuning run's report: a loss-vs-quality plot and report.md, written next to the chosen adapter.

The point of the plot is the write-ups' lesson: the checkpoint with the lowest eval loss is not necessarily the
one whose answers are best, so both curves are drawn and both picks are marked.
"""

from __future__ import annotations

from pathlib import Path

from finetune.config import FinetuneConfig


def best_by_loss(history: dict[int, dict]) -> int | None:
    losses = [(row["eval_loss"], step) for step, row in history.items() if row.get("eval_loss") is not None]
    return min(losses)[1] if losses else None


def plot_loss_vs_quality(history: dict[int, dict], train_log: list[dict], best: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(history)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train_log:
        ax.plot([r["step"] for r in train_log], [r["loss"] for r in train_log], color="0.7", lw=1, label="train loss")
    loss_steps = [s for s in steps if history[s].get("eval_loss") is not None]
    ax.plot(loss_steps, [history[s]["eval_loss"] for s in loss_steps], "o-", color="tab:blue", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(steps, [history[s]["quality"] for s in steps], "s-", color="tab:orange", label="probe quality")
    ax2.set_ylabel("probe quality score (higher is better)")
    ax2.axvline(best, color="tab:orange", ls="--", lw=1)
    by_loss = best_by_loss(history)
    if by_loss is not None:
        ax.axvline(by_loss, color="tab:blue", ls=":", lw=1)
    agree = "agree" if by_loss in (None, best) else "DISAGREE"
    ax.set_title(f"best by quality: step {best}; best by loss: step {by_loss} ({agree})", fontsize=9)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


_COLUMNS = ("step", "train_loss", "eval_loss", "quality", "token_f1", "end_of_turn", "length_cap",
            "repeated_4gram_rate", "longest_list_run", "runaway_list", "distinct_2", "answer_tokens")


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render_report(cfg: FinetuneConfig, history: dict[int, dict], best: int, stamp: dict, out: Path) -> str:
    by_loss = best_by_loss(history)
    base = history.get(0, {})
    lines = [
        f"# Fine-tuning run `{cfg.run_name}`", "",
        f"Base model: {stamp['base_model_name']} ({cfg.quantization}); LoRA r={cfg.lora_r}, alpha={cfg.lora_alpha}, "
        f"dropout={cfg.lora_dropout} on {', '.join(cfg.target_modules)}. Prompt `{stamp['prompt_version']}`; data "
        f"fingerprint `{stamp['data_fingerprint']}`.", "",
        f"**Kept: checkpoint-{best}** (probe quality {history[best]['quality']:.4f}; base model "
        f"{_fmt(base.get('quality'))}). Lowest eval loss: step {by_loss}"
        + ("." if by_loss in (None, best) else " - a different checkpoint: loss and answers disagree here."), "",
        f"Quality = {' + '.join(f'{w:g} x {k}' for k, w in cfg.quality_weights.items())} over "
        f"{cfg.probe_size} held-out probe prompts answered with the deployment decoding "
        f"(greedy, repetition penalty {cfg.decoding.repetition_penalty}, {cfg.decoding.max_new_tokens} new tokens).", "",
        "![loss vs quality](loss_vs_quality.png)", "",
        "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS),
    ]
    for step in sorted(history):
        row = history[step]
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in _COLUMNS) + " |")
    lines += ["", "Step 0 is the base model. Per-probe answers of every evaluation are in the run directory "
              f"(`{Path(cfg.work_dir) / cfg.run_name / 'probes'}`); the data card is `data_card.md`.", ""]
    return "\n".join(lines)
