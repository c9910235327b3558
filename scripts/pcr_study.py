"""Summarizes the PCR study's runs (scripts/pcr_study.sh): one table per regime, mean ± sd
over seeds of the final test NLL (softmax), ECE, accuracy and global gain of every
configuration, each PCR configuration against the best baseline of its regime (the lowest mean
test NLL among plain, the plain-wd grid, wn and bn), within or beyond noise.

"Beyond noise": the difference of means is more than twice its standard error,
sqrt(sd_a^2/n_a + sd_b^2/n_b), as in the reports of `weightnorm compare`.

    python3 scripts/pcr_study.py runs/pcr-study > table.md
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

BASELINES = ("plain", "plain-wd", "wn", "bn")


def stat(xs: list[float]) -> tuple[float, float, int]:
    n = len(xs)
    m = sum(xs) / n
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, sd, n


def beyond(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    if a[2] < 2 or b[2] < 2:
        return False
    se = math.sqrt(a[1] ** 2 / a[2] + b[1] ** 2 / b[2])
    return abs(a[0] - b[0]) > 2 * se


def show(s: tuple[float, float, int], d: int = 4) -> str:
    return f"{s[0]:.{d}f} ± {s[1]:.{d}f}"


def collect(root: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    """regime -> configuration -> metric -> values over seeds."""
    out: dict = {}
    for f in sorted(root.glob("*/*/*/seed-*/metrics.json")):
        regime, config, param = f.parts[-5], f.parts[-4], f.parts[-3]
        if regime.startswith("plots-"):
            continue
        m = json.loads(f.read_text())
        name = param if config == "base" else config
        row = out.setdefault(regime, {}).setdefault(name, {})
        gain = m.get("global_gain") or [[0, float("nan")]]
        for k, v in (
            ("nll", m["test_nll"]),
            ("ece", m["ece"]),
            ("acc", m["test_accuracy"]),
            ("gain", gain[-1][1]),
        ):
            row.setdefault(k, []).append(v)
    return out


def main() -> None:
    root = Path(sys.argv[1])
    data = collect(root)
    for regime, configs in data.items():
        stats = {c: {k: stat(v) for k, v in m.items()} for c, m in configs.items()}
        bases = [c for c in stats if c.split(":")[0] in BASELINES]
        best = min(bases, key=lambda c: stats[c]["nll"][0]) if bases else None
        print(f"\n### {regime}\n")
        print(f"Best baseline (lowest mean test NLL): **{best}**.\n")
        print("| configuration | test NLL | ECE | accuracy | final global gain | NLL vs best |")
        print("|---|---|---|---|---|---|")
        for c in sorted(stats, key=lambda c: (not c.startswith(BASELINES), c)):
            s = stats[c]
            vs = ""
            if best is not None and c != best:
                d = s["nll"][0] - stats[best]["nll"][0]
                vs = f"{d:+.4f} ({'beyond' if beyond(s['nll'], stats[best]['nll']) else 'within'} noise)"
            print(
                f"| {c} | {show(s['nll'])} | {show(s['ece'])} | {show(s['acc'])} | "
                f"{show(s['gain'], 2)} | {vs} |"
            )


if __name__ == "__main__":
    main()
