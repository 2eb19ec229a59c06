"""Quality-score curriculum (``data.curriculum: score``): the batches the objective receives through
the core Trainer come in score order, and a curriculum with shuffling on is a config error."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, List

import pytest
import torch
from text_helpers import one_thread, pydoc_docs  # noqa: F401

from sslab.core.config import ConfigError, load_experiment
from sslab.core.modality import build_modality
from sslab.core.trainer import Trainer

EXPERIMENT = Path(__file__).resolve().parents[2] / "experiments" / "text" / "curriculum_ptbxl.yaml"
N_DOCS, BATCH = 20, 4


def _corpus(tmp: Path, with_unscored: bool = False) -> Path:
    """A JSONL corpus of distinct real paragraphs with shuffled, distinct scores."""
    rng = random.Random(0)
    scores = [round(0.05 * i, 2) for i in range(N_DOCS)]
    rng.shuffle(scores)
    path = tmp / "scored.jsonl"
    with path.open("w") as fh:
        for i, (doc, s) in enumerate(zip(pydoc_docs(), scores)):
            row = {"text": f"document {i} " + doc.text[:200]}
            if not (with_unscored and i in (3, 7)):
                row["score"] = s
            fh.write(json.dumps(row) + "\n")
    return path


def _cfg(tmp: Path, corpus: Path, extra: List[str]) -> Any:
    over = [f"output_dir={tmp}", f"data.sources=[{corpus}]", "data.probe=none", "data.vocab_size=400",
            f"data.tokenizer_cache={tmp / 'tok'}", "encoder.dim=16", "encoder.depth=1", "encoder.heads=2",
            f"train.batch_size={BATCH}", "train.progress=false", "train.log_every=1", "train.ckpt_every=0",
            "optim.warmup_steps=0", *extra]
    return load_experiment(EXPERIMENT, over)


def _received_scores(cfg: Any) -> List[List[float]]:
    """Train through the core Trainer and return the scores of the documents in every batch the
    objective's forward receives (originals recovered from the MLM labels)."""
    modality = build_modality(cfg)
    dataset, collate = modality.pretrain_data()
    by_ids = {tuple(it["input_ids"]): it["score"] for it in dataset.items}
    objective = modality.build_objective(modality.build_encoder())
    seen: List[List[float]] = []

    def record(_module: Any, args: Any) -> None:
        batch = args[0]
        ids = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])
        rows = [tuple(r[m].tolist()) for r, m in zip(ids, batch["attention_mask"].bool())]
        seen.append([by_ids[r] for r in rows])  # KeyError = a row that is not an unmodified document

    objective.register_forward_pre_hook(record)
    Trainer(objective, dataset, collate, cfg, cfg.run_dir).fit()
    return seen


@pytest.mark.parametrize("order", ["ascending", "descending"])
def test_objective_receives_batches_in_score_order(tmp_path: Path, order: str) -> None:
    steps = N_DOCS // BATCH + 2  # one full epoch and the start of the next
    cfg = _cfg(tmp_path, _corpus(tmp_path), [f"data.curriculum_order={order}", f"train.steps={steps}"])
    seen = _received_scores(cfg)
    assert len(seen) == steps and all(len(b) == BATCH for b in seen)
    epoch = [s for b in seen[: N_DOCS // BATCH] for s in b]
    expected = sorted(epoch, reverse=order == "descending")
    assert epoch == expected and len(set(epoch)) == N_DOCS  # every document once, in score order
    assert [s for b in seen[N_DOCS // BATCH:] for s in b] == expected[: 2 * BATCH]  # next epoch restarts


def test_unscored_documents_come_first_with_a_warning(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, _corpus(tmp_path, with_unscored=True), ["train.steps=1"])
    with pytest.warns(UserWarning, match="2 of 20 documents have no score"):
        dataset, _ = build_modality(cfg).pretrain_data()
    scores = [it["score"] for it in dataset.items]
    assert scores[:2] == [None, None] and scores[2:] == sorted(scores[2:])


def test_curriculum_with_shuffle_or_bucketing_is_a_config_error(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path)
    with pytest.raises(ConfigError, match=r"data\.curriculum.*train\.shuffle"):
        build_modality(_cfg(tmp_path, corpus, ["train.shuffle=true"])).pretrain_data()
    with pytest.raises(ConfigError, match=r"train\.length_bucketing"):
        build_modality(_cfg(tmp_path, corpus, ["train.length_bucketing=4"])).pretrain_data()
    with pytest.raises(ConfigError, match=r"data\.curriculum_order"):
        build_modality(_cfg(tmp_path, corpus, ["data.curriculum_order=up"]))
    with pytest.raises(ConfigError, match=r"data\.curriculum="):
        build_modality(_cfg(tmp_path, corpus, ["data.curriculum=length"]))
    # without a curriculum, shuffling stays allowed and the corpus order is kept in the dataset
    ds, _ = build_modality(_cfg(tmp_path, corpus, ["data.curriculum=none", "train.shuffle=true"])).pretrain_data()
    assert [it["score"] for it in ds.items] != sorted(it["score"] for it in ds.items)


def test_no_scores_at_all_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("\n\n".join(" ".join(d.text.split())[:200] for d in pydoc_docs()[:N_DOCS]))  # 20 paragraphs
    with pytest.raises(ConfigError, match="none of the 20 documents has a score"):
        build_modality(_cfg(tmp_path, path, [])).pretrain_data()
