"""Class-specific words of PTB-XL reports, from the TRAINING folds only: where the default zero-shot prompts
of ``sslab.modalities.ecg_text.PTBXL_SUPER_PROMPTS`` come from (no test-fold text or label is read).

For each superdiagnostic class and each word / word bigram of the (lowercased, as the report tokenizer
does) reports, counts the training reports of the class that contain it (``pos``) and of the other reports
(``neg``), and ranks by the smoothed log-odds ratio ``log((pos+a)/(P-pos+a)) - log((neg+a)/(N-neg+a))``
(a = 0.5) among terms in at least ``--min-pos`` reports of the class. PTB-XL's reports are German, Swedish
and English machine/cardiologist statements, so the list is multilingual.

    .venv/bin/python benchmarks/ecg_text_ptbxl_prompt_words.py                     # shared subset, folds 1-5
    .venv/bin/python benchmarks/ecg_text_ptbxl_prompt_words.py --folds 1 2 3 4 5 6 7 8  # full PTB-XL

Also prints which default prompt words occur in the training reports of their class (coverage).
"""
from __future__ import annotations

import argparse
import re

import numpy as np

WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*")
GENERIC = {"ecg", "ekg", "sinus", "rhythm", "sinusrhythmus", "sinusrytm"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/ecg/ptbxl")
    ap.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5], help="training folds only")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--min-pos", type=int, default=3)
    args = ap.parse_args()

    from sslab.datasets.ecg_text import ptbxl_pairs
    from sslab.eval.zeroshot import class_terms
    from sslab.modalities.ecg_text import PTBXL_SUPER_PROMPTS

    src = ptbxl_pairs(args.data, args.folds, "superdiagnostic", on_empty="skip")
    print(f"{len(src.reports)} training reports (folds {args.folds}); positives per class: "
          + ", ".join(f"{c} {int(n)}" for c, n in zip(src.classes, src.labels.sum(0))))
    words = class_terms(src.reports, src.labels, src.classes, args.min_pos)
    for c, rows in words.items():
        print(f"\n{c}: term (log-odds, in-class reports, other reports)")
        print("  " + "; ".join(f"{t} ({lo:+.1f}, {p}, {n})" for t, lo, p, n in rows[: args.top]))
    print("\ncoverage of the default prompts: share of the class's training reports sharing a word with a prompt")
    sets = [set(WORD.findall(r.lower())) for r in src.reports]
    for c, prompts in PTBXL_SUPER_PROMPTS.items():
        y = src.labels[:, src.classes.index(c)] > 0
        for p in prompts:
            w = set(WORD.findall(p.lower())) - GENERIC
            hit = np.array([bool(w & s) for s in sets])
            print(f"  {c:5s} {p!r:45s} class {hit[y].mean():.2f}  others {hit[~y].mean():.2f}")


if __name__ == "__main__":
    main()
