"""Paired statistics for comparing two arms on the same questions: win/loss/tie, paired bootstrap intervals,
McNemar's exact test. Standard library + numpy; every function is deterministic given its seed.

    from evaluation.stats import paired_bootstrap, win_loss_tie, mcnemar
    paired_bootstrap(f1_rag, f1_base)           # {"mean_diff", "ci_low", "ci_high", ...}
    mcnemar(correct_rag, correct_base)          # {"b", "c", "p_value"}
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb


def mean_ci(values: Sequence[float], samples: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean with a percentile bootstrap interval."""
    import numpy as np

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(samples, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"mean": round(float(x.mean()), 6), "ci_low": round(float(lo), 6), "ci_high": round(float(hi), 6),
            "n": int(len(x))}


def paired_bootstrap(a: Sequence[float], b: Sequence[float], samples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """Mean of a - b over paired questions, with a percentile interval from resampling questions, and the
    share of resamples where the difference is <= 0 (a one-sided bootstrap p-value for "a beats b")."""
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) == 0:
        return {"mean_diff": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "p_le_0": float("nan"),
                "n": 0}
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(samples, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"mean_diff": round(float(d.mean()), 6), "ci_low": round(float(lo), 6), "ci_high": round(float(hi), 6),
            "p_le_0": round(float((means <= 0).mean()), 6), "n": int(len(d))}


def win_loss_tie(a: Sequence[float], b: Sequence[float], tol: float = 1e-9) -> dict[str, int]:
    """Per question: a wins (a > b + tol), loses, or ties."""
    wins = sum(x > y + tol for x, y in zip(a, b, strict=True))
    losses = sum(y > x + tol for x, y in zip(a, b, strict=True))
    return {"wins": wins, "losses": losses, "ties": len(a) - wins - losses}


def mcnemar(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> dict[str, float]:
    """McNemar's exact test on paired correctness: b = a right & b wrong, c = a wrong & b right; two-sided
    binomial p-value on the discordant pairs (exact, so it is valid for the small counts of quick runs)."""
    b = sum(x and not y for x, y in zip(a_correct, b_correct, strict=True))
    c = sum(y and not x for x, y in zip(a_correct, b_correct, strict=True))
    n = b + c
    if n == 0:
        return {"b": 0, "c": 0, "p_value": 1.0}
    tail = sum(comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
    return {"b": b, "c": c, "p_value": round(min(1.0, 2 * tail), 6)}


def wilson(k: int, n: int, level: float = 0.95) -> list[float]:
    """The Wilson score interval of k successes in n (scipy.stats.binomtest): small sets say how little they pin
    down."""
    from scipy.stats import binomtest

    if not n:
        return [0.0, 1.0]
    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return [round(float(ci.low), 4), round(float(ci.high), 4)]
