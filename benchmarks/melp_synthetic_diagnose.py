"""Why is (or isn't) zero-shot working on a synthetic MELP run? Trains ``experiments/ecg_text/melp_synthetic.yaml``
(plus overrides) and separates the possible causes:

* prompt zero-shot (the reported metric): cosine of the ECG embedding with the prompt-ensembled class embeddings;
* report-centroid zero-shot: the class embedding is the mean text embedding of the *training* reports of the class
  (no prompts) -- if this works and the prompt version does not, the prompts are out of the reports' distribution;
* ECG-side linear separability of the rate class (logistic regression on the rhythm-level ECG embeddings, train ->
  test) -- if this is at chance, the ECG tower did not learn the rate at all;
* text-side separability (the same on the report embeddings) -- does the text tower encode the rate class?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/melp_synthetic_diagnose.py train.steps=150
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/melp_synthetic_diagnose.py "data.report_facts=[rate,regularity]"

Prints one JSON line with the numbers (and the loss curve ends).
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def main(overrides: list) -> None:
    torch.set_num_threads(1)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from sslab.core.config import load_experiment
    from sslab.datasets.ecg_text import ECGTextPairs
    from sslab.eval.zeroshot import encode_ecgs, encode_texts, evaluate, zero_shot_metrics
    from sslab.modalities.ecg_text import load_melp
    from sslab.run import pretrain

    tmp = Path(tempfile.mkdtemp(prefix="melp_diag_"))
    cfg = load_experiment("experiments/ecg_text/melp_synthetic.yaml",
                          [f"output_dir={tmp}", "train.progress=false", "data.workers=1"] + list(overrides))
    t0 = time.time()
    run = pretrain(cfg)
    train_s = time.time() - t0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss_rhythm" in r or "loss_token" in r]
    modality, melp = load_melp(run)
    res = evaluate(melp, modality)
    out = {"overrides": overrides, "train_s": round(train_s, 1),
           "losses_first_last": {k: [round(rows[0][k], 3), round(rows[-1][k], 3)]
                                 for k in ("loss_token", "loss_beat", "loss_rhythm") if k in rows[0]},
           "prompt_zero_shot": round(res["zero_shot"]["macro_auc"], 3),
           "prompt_zero_shot_per_class": {k: round(v, 3) for k, v in res["zero_shot"]["auc_per_class"].items()},
           "ecg2report_R@5": round(res["retrieval"]["ecg2report"]["R@5"], 3)}
    col = modality.collator()
    emb = {}
    for which in ("train", "test"):
        s = modality.split(which)
        pairs = ECGTextPairs(s.get_signal, s.reports, modality.crop, random_crop=False)
        emb[which] = (encode_ecgs(melp, pairs).numpy(), encode_texts(melp, col, s.reports).numpy(), s.labels)
    (e_tr, t_tr, _), (e_te, t_te, _) = emb["train"], emb["test"]
    # every generating factor: is it in the aligned space (report centroids), in the ECG / text embeddings?
    _, lab, _, tr, te = modality._synthetic_data()
    noise = np.digitize(np.asarray(lab["noise"]), [0.02, 0.05])  # the report's three noise phrases
    factors = {"rhythm": np.asarray(lab["rhythm"]), "morphology": np.asarray(lab["morphology"]), "noise": noise}
    for key, y in factors.items():
        y_tr, y_te = y[tr].astype(int), y[te].astype(int)
        C = int(y.max()) + 1
        cent = np.stack([t_tr[y_tr == c].mean(0) for c in range(C)])
        cent /= np.linalg.norm(cent, axis=1, keepdims=True)
        r = {"report_centroid_zero_shot": zero_shot_metrics(e_te @ cent.T, y_te, "multiclass",
                                                             [str(c) for c in range(C)])["macro_auc"]}
        for name, (a, b) in {"ecg_linear": (e_tr, e_te), "text_linear": (t_tr, t_te)}.items():
            clf = LogisticRegression(max_iter=2000, C=1.0).fit(a, y_tr)
            r[name + "_auc"] = float(roc_auc_score(y_te, clf.predict_proba(b), multi_class="ovr"))
        out[key] = {k: round(v, 3) for k, v in r.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
