"""End to end through the core Trainer: pretrain -> export -> probe vs random init -> `sslab average`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from text_helpers import one_thread  # noqa: F401

from sslab.core.config import load_experiment
from sslab.core.modality import build_modality

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "experiments" / "text").glob("*.yaml"))
TINY = ["encoder.dim=32", "encoder.depth=2", "train.batch_size=8", "train.progress=false", "train.log_every=1"]


_TOK_CACHE: list = []


@pytest.fixture(autouse=True)
def _shared_tokenizer_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One tokenizer cache for the module: the PTB-XL tokenizer is trained once."""
    if not _TOK_CACHE:
        _TOK_CACHE.append(tmp_path_factory.mktemp("text_tok_cache"))


def _cfg(path: Path, tmp: Path, shared: Path, extra=()):
    over = [f"output_dir={tmp}", f"data.shared_data={shared}", f"data.tokenizer_cache={_TOK_CACHE[0]}", *extra]
    return load_experiment(path, over)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_every_text_experiment_builds_and_computes_a_loss(path: Path, tmp_path: Path, shared_data: Path) -> None:
    torch.manual_seed(0)
    cfg = _cfg(path, tmp_path, shared_data)
    modality = build_modality(cfg)
    dataset, collate = modality.pretrain_data()
    objective = modality.build_objective(modality.build_encoder())
    out = objective(collate([dataset[i] for i in range(16)]))
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    task = modality.probe_tasks()[0]
    if cfg.data["probe"] == "ptbxl":
        assert task.task == "multiclass" and len(task.train) + len(task.test) == 307  # 308 reports, 1 without label
    else:
        from sslab.datasets.text_stdlib import stdlib_probe_documents

        assert cfg.data["probe"] == "stdlib_docs" and task.task == "multiclass"
        assert len(task.train) + len(task.test) == len(stdlib_probe_documents()[0])
    assert (cfg.run_dir / "tokenizer.json").is_file()


def test_pretrain_probe_and_average_switchlora(tmp_path: Path, shared_data: Path) -> None:
    from safetensors.torch import load_file

    from sslab.cli import main
    from sslab.core.checkpoint import list_checkpoints, load_checkpoint
    from sslab.run import pretrain, probe

    exp = next(p for p in EXPERIMENTS if p.stem == "switchlora_mlm_ptbxl")
    cfg = _cfg(exp, tmp_path, shared_data, ["encoder.base.dim=32", "encoder.base.depth=2", "train.steps=6",
                                             "train.ckpt_every=2", "train.keep_last=3", "train.batch_size=8",
                                             "train.progress=false", "train.log_every=1",
                                             "encoder.adapter.switch_every=2"])
    run = pretrain(cfg)
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m][-1] == 6
    assert sum(m.get("switched", 0) for m in metrics) > 0  # SwitchLoRA switched through on_step_end
    res = probe(run, progress=False)
    encs = {r["encoder"] for r in res["rows"]}
    assert encs == {"pretrained", "random_init", "floor:tfidf"}  # + the TF-IDF classical floor
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in res["rows"])
    # sslab average over the 3 kept checkpoints equals the hand-computed mean of their encoder weights
    assert main(["average", str(run), "--last", "3"]) == 0
    ckpts = list_checkpoints(run / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000002.pt", "step_00000004.pt", "step_00000006.pt"]
    states = [load_checkpoint(p)["objective"] for p in ckpts]
    avg = load_file(str(run / "encoder_avg" / "encoder.safetensors"))
    key = "base.blocks.0.attn.qkv.lora_A"
    assert torch.allclose(avg[key], sum(s["encoder." + key] for s in states) / 3, atol=1e-6)
    from sslab import load_encoder

    enc = load_encoder(run / "encoder_avg")
    assert enc(torch.randint(60, 200, (1, 8))).shape == (1, 8, 32)
    assert main(["average", str(run), "--last", "5"]) == 2  # only 3 checkpoints exist: clear error


def test_electra_gdes_export_holds_the_merged_embedding(tmp_path: Path, shared_data: Path) -> None:
    from sslab.core.checkpoint import latest_checkpoint, load_checkpoint
    from sslab.run import pretrain

    exp = next(p for p in EXPERIMENTS if p.stem == "electra_gdes_ptbxl")
    cfg = _cfg(exp, tmp_path, shared_data, [*TINY, "train.steps=3"])
    run = pretrain(cfg)
    from sslab import load_encoder

    enc = load_encoder(run)
    state = load_checkpoint(latest_checkpoint(run / "checkpoints"))["objective"]
    merged = state["generator.tok_emb.weight"] + state["gdes_delta"]
    assert state["gdes_delta"].abs().sum() > 0
    assert torch.allclose(enc.tok_emb.weight, merged, atol=1e-6)


def test_csv_probe_and_config_errors(tmp_path: Path, shared_data: Path) -> None:
    from sslab.core.config import ConfigError
    from sslab.datasets.text import CorpusError

    exp = next(p for p in EXPERIMENTS if p.stem == "mlm_ptbxl")
    csv = tmp_path / "probe.csv"
    csv.write_text("text,label\n" + "".join(f"sinusrhythmus normales ekg {i},a\nvorhofflimmern {i},b\n" for i in range(10)))
    modality = build_modality(_cfg(exp, tmp_path, shared_data, [f"data.probe={csv}"]))
    task = modality.probe_tasks()[0]
    assert task.class_names == ["a", "b"] and len(task.train) == 15 and len(task.test) == 5
    csv.write_text("body,label\nx,a\n")
    with pytest.raises(CorpusError, match=r"probe.csv: missing column\(s\) \['text'\]"):
        build_modality(_cfg(exp, tmp_path, shared_data, [f"data.probe={csv}"])).probe_tasks()
    with pytest.raises(ConfigError, match="unknown config key .data.vocab"):
        build_modality(_cfg(exp, tmp_path, shared_data, ["data.vocab=3"]))
    m = build_modality(_cfg(exp, tmp_path, shared_data, ["objective.name=jepa_not_text"]))
    with pytest.raises(Exception, match="jepa_not_text"):
        m.pretrain_data()
