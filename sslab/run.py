"""High-level entry points used by the CLI and notebooks: ``pretrain(cfg)`` and ``probe(run)``."""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from sslab.core import distributed as dist_utils
from sslab.core.config import ExperimentConfig, load_experiment
from sslab.core.export import build_encoder, load_encoder, save_encoder
from sslab.core.io import atomic_write_text
from sslab.core.modality import Modality, ProbeTask, build_modality
from sslab.core.trainer import Trainer, select_device
from sslab.eval.cv import check_cv, cv_splits
from sslab.eval.cv import summarize as summarize_folds
from sslab.eval.floors import Floor, as_floor, concat, n_rows, take
from sslab.eval.probe import extract_features, format_table, headline, knn_probe, linear_probe, subsample


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pretrain(cfg: ExperimentConfig, hooks: Sequence[Any] = ()) -> Path:
    """Build data, encoder and objective from ``cfg``, train, export the encoder; returns the run dir."""
    seed_everything(cfg.seed)
    from sslab.core.export import resolve_init_from

    cfg.encoder = resolve_init_from(cfg.encoder)  # encoder.init_from: DIR -> DIR's architecture (+ its weights)
    modality = build_modality(cfg)
    modality.check_probe_compatible()  # data.probe: refuse an input space the encoder cannot take, before training
    if cfg.probe.finetune:
        modality.finetune_options(cfg.probe.finetune)  # unknown keys / no protocol: before training too
    dataset, collate_fn = modality.pretrain_data()
    encoder = modality.build_encoder()
    objective = modality.build_objective(encoder)
    run_dir = cfg.run_dir
    trainer = Trainer(objective, dataset, collate_fn, cfg, run_dir, hooks=hooks)
    # rank 0 holds the run-directory lock from the config check (in fit) through the export
    with trainer.hold_run_dir():
        trainer.fit()  # also checks the config against a resumed run's config.yaml and saves it
        state, _ = trainer._model_and_optim_state()
        if trainer.is_main:
            prefix = getattr(objective, "export_prefix", "encoder.")  # e.g. JEPA exports its EMA target encoder
            enc_state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            prov = run_provenance(cfg, dataset)
            try:
                pipeline, files = modality.input_pipeline(), modality.pipeline_files()
            except Exception as err:  # never lose a trained encoder over its description; say so in the folder
                warnings.warn(f"encoder export without an input pipeline: {type(err).__name__}: {err}")
                pipeline, files = {}, {}
                prov["pipeline_error"] = f"{type(err).__name__}: {err}"
            save_encoder(objective.encoder, run_dir / "encoder", state_dict=enc_state or None,
                         extra={"modality": cfg.modality, "steps": cfg.train.steps},
                         pipeline=pipeline, files=files, provenance=prov)
            if hasattr(modality, "after_pretrain"):  # e.g. speech writes a HF-format folder
                modality.after_pretrain(objective, run_dir)
        dist_utils.barrier()
    return run_dir


def run_provenance(cfg: ExperimentConfig, dataset: Any) -> Dict[str, Any]:
    """Provenance of a pretraining run for ``encoder.json``: resolved config, data source, record count."""
    from sslab.core.config import to_dict
    from sslab.core.export import provenance

    d = cfg.data
    source = {k: d[k] for k in ("source", "sources", "pretrain", "path") if k in d}
    data: Dict[str, Any] = {"modality": cfg.modality, **source}
    try:
        data["pretraining_items"] = len(dataset)
    except TypeError:
        pass
    return provenance(config=to_dict(cfg), data=data, steps=cfg.train.steps,
                      batch_size=cfg.train.batch_size, seed=cfg.seed)


def _load_target(target: Union[str, Path], cfg: Optional[ExperimentConfig],
                 overrides: Sequence[str]) -> tuple[torch.nn.Module, ExperimentConfig, Path]:
    target = Path(target)
    if cfg is None:
        cfg_file = target / "config.yaml"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"{target} is not a run directory (no config.yaml); "
                                    "pass an experiment with --experiment to probe a bare encoder")
        cfg = load_experiment(cfg_file, overrides)
    encoder = load_encoder(target)
    out_dir = target if target.is_dir() else target.parent
    return encoder, cfg, out_dir


def _score(Xtr: Any, ytr: np.ndarray, Xte: Any, yte: np.ndarray, kind: str, frac: float, seed: int,
           pc: Any, scorer: Optional[Any] = None) -> Dict[str, Any]:
    """One probe fit: the standard linear probe, or a floor's own scorer on the same label subsample."""
    if scorer is None:
        res = linear_probe(Xtr, ytr, Xte, yte, kind, C=pc.C, max_iter=pc.max_iter, label_fraction=frac,
                           seed=seed, class_weight=pc.class_weight)
        res["kind"] = res.pop("task")
        return res
    idx = subsample(np.asarray(ytr), frac, kind, seed)
    res = scorer(take(Xtr, idx), np.asarray(ytr)[idx], Xte, yte, kind, seed)
    return {"kind": kind, "n_train": int(len(idx)), "n_test": int(len(yte)), "label_fraction": frac, **res}


def _task_labels(ds: Any) -> np.ndarray:
    """Labels of a probe dataset of ``(inputs, label)`` items (when no encoder extracted them)."""
    return np.stack([np.asarray(ds[i][1]) for i in range(len(ds))])


def probe_encoders(modality: Modality, encoders: Dict[str, torch.nn.Module], cfg: ExperimentConfig,
                   tasks: Optional[List[ProbeTask]] = None, progress: Optional[bool] = None,
                   fold_rows: Optional[List[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """Linear probe (+ kNN for multiclass) of each named encoder on each probe task, plus the modality's
    classical floors (``encoder="floor:<name>"``, when ``probe.floors``) and, with ``probe.finetune``, each
    encoder fine-tuned end to end on a copy (``task="<task>:finetune"``, ``protocol="finetune"``) on the
    same label subsample.

    With ``probe.cv`` each task's train and test items are pooled and scored by repeated K-fold
    (:mod:`sslab.eval.cv`); per-fold rows are appended to ``fold_rows`` and the returned row holds the mean
    over splits (``<metric>_std`` beside it)."""
    device = select_device(cfg.train.device)
    progress = cfg.train.progress if progress is None else progress  # None: bars only on a terminal
    pc = cfg.probe
    ft_options = modality.finetune_options(pc.finetune) if pc.finetune else None  # bad keys: before any work
    tasks = modality.probe_tasks() if tasks is None else tasks
    if not tasks:
        raise ValueError(f"modality {cfg.modality!r} defines no probe tasks for this data configuration")
    rows: List[Dict[str, Any]] = []
    cv = check_cv(pc.cv) if pc.cv else None
    for task in tasks:
        feats: Dict[str, Floor] = {}
        ytr = yte = None
        for enc_name, encoder in encoders.items():
            encoder = encoder.to(device).eval()

            def embed(inputs: Any, _enc: torch.nn.Module = encoder) -> torch.Tensor:
                return modality.embed(_enc, inputs)

            Xtr, ytr = extract_features(embed, task.train, task.collate_fn, device, pc.batch_size, progress,
                                        desc=f"{task.name}/{enc_name}/train")
            Xte, yte = extract_features(embed, task.test, task.collate_fn, device, pc.batch_size, progress,
                                        desc=f"{task.name}/{enc_name}/test")
            feats[enc_name] = Floor(Xtr, Xte)
        if pc.floors:
            for name, value in modality.floor_features(task).items():
                feats[f"floor:{name}"] = as_floor(name, value)
        if ytr is None:
            ytr, yte = _task_labels(task.train), _task_labels(task.test)
        for name, f in feats.items():
            if n_rows(f.train) != len(ytr) or n_rows(f.test) != len(yte):
                raise ValueError(f"probe task {task.name!r}: {name} has {n_rows(f.train)}/{n_rows(f.test)} "
                                 f"train/test rows, the task {len(ytr)}/{len(yte)}")
        protocols = [(task.name, feats, {})]
        if ft_options is not None:
            protocols.append((f"{task.name}:finetune", _finetune_feats(modality, task, encoders, ft_options),
                              {"protocol": "finetune"}))
        for frac in pc.label_fractions:
            for name, group, extra in protocols:
                rows += _score_rows(name, group, extra, task, ytr, yte, frac, cfg, cv, fold_rows)
    return rows


def _finetune_feats(modality: Modality, task: ProbeTask, encoders: Dict[str, torch.nn.Module],
                    options: Any) -> Dict[str, Floor]:
    """Per encoder, a :class:`Floor` of item indices (train items, then test items) whose scorer fine-tunes a
    copy of the encoder (:meth:`Modality.finetune_scorer`): ``_score`` subsamples it like any probe."""
    n_tr, n_te = len(task.train), len(task.test)  # type: ignore[arg-type]
    return {name: Floor(np.arange(n_tr), np.arange(n_tr, n_tr + n_te), modality.finetune_scorer(task, enc, options))
            for name, enc in encoders.items()}


def _score_rows(task_name: str, feats: Dict[str, Floor], extra: Dict[str, Any], task: ProbeTask,
                ytr: np.ndarray, yte: np.ndarray, frac: float, cfg: ExperimentConfig, cv: Optional[Any],
                fold_rows: Optional[List[Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Probe rows of one label fraction: ``{"task": task_name, "encoder": name, **extra, **metrics}`` per entry
    of ``feats`` (kNN beside the linear probe of an encoder's own features, multiclass, all labels)."""
    pc = cfg.probe
    rows: List[Dict[str, Any]] = []
    if cv is None:
        for name, f in feats.items():
            row: Dict[str, Any] = {"task": task_name, "encoder": name, **extra,
                                   **_score(f.train, ytr, f.test, yte, task.task, frac, cfg.seed, pc, f.scorer)}
            if task.task == "multiclass" and frac == 1.0 and not name.startswith("floor:") and f.scorer is None:
                row.update(knn_probe(f.train, ytr, f.test, yte, k=pc.knn_k, temperature=pc.knn_temperature,
                                     standardize=pc.knn_standardize))
            rows.append(row)
        return rows
    y = np.concatenate([ytr, yte])
    splits = cv_splits(y, task.task, *cv, groups=task.groups)
    for name, f in feats.items():
        X = concat(f.train, f.test)
        per_fold = []
        for k, (rep, tr, te) in enumerate(splits):
            res = _score(take(X, tr), y[tr], take(X, te), y[te], task.task, frac, k, pc, f.scorer)
            per_fold.append({"task": task_name, "encoder": name, **extra, "repeat": rep, "fold": k, **res})
        if fold_rows is not None:
            fold_rows.extend(per_fold)
        rows.append({**summarize_folds(per_fold), "cv": f"{cv[1]}x{cv[0]}-fold"})
    return rows


def probe(target: Union[str, Path], cfg: Optional[ExperimentConfig] = None, overrides: Sequence[str] = (),
          out_dir: Optional[Union[str, Path]] = None, progress: Optional[bool] = None) -> Dict[str, Any]:
    """Probe a run (or exported encoder) beside the same encoder at random init; writes probe.json/.md/.png."""
    encoder, cfg, default_out = _load_target(target, cfg, overrides)
    out = Path(out_dir) if out_dir is not None else default_out
    modality = build_modality(cfg)
    encoders: Dict[str, torch.nn.Module] = {"pretrained": encoder}
    if cfg.probe.compare_random_init:
        seed_everything(cfg.seed)  # the same init the pretraining run started from
        encoders["random_init"] = build_encoder(encoder.sslab_spec)  # type: ignore[arg-type]
    fold_rows: List[Dict[str, Any]] = []
    rows = probe_encoders(modality, encoders, cfg, progress=progress, fold_rows=fold_rows)
    result: Dict[str, Any] = {"target": str(target), "modality": cfg.modality, "rows": rows}
    if fold_rows:
        result["folds"] = fold_rows  # per-fold rows of a probe.cv run (tables show the means)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "probe.json", json.dumps(result, indent=2))
    atomic_write_text(out / "probe.md", format_table(rows) + "\n")
    plot_probe(rows, out / "probe.png")
    _record_probe_in_encoder(target, rows)
    return result


def _record_probe_in_encoder(target: Union[str, Path], rows: List[Dict[str, Any]]) -> None:
    """Add the probe table to the probed encoder folder's ``encoder.json`` and model card (issue 14)."""
    from sslab.core.export import encoder_folder, record_probe

    try:
        folder = encoder_folder(target)
    except FileNotFoundError:
        return
    record_probe(folder, rows, format_table(rows))


def plot_probe(rows: List[Dict[str, Any]], out_png: Path) -> Path:
    """Grouped bars: headline score per task, one bar per encoder (label fraction 1.0)."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's (e.g. notebook) backend alone

    full = [r for r in rows if r.get("label_fraction", 1.0) == 1.0]
    tasks = list(dict.fromkeys(r["task"] for r in full))
    encs = list(dict.fromkeys(r["encoder"] for r in full))
    fig = Figure(figsize=(max(4, 1.8 * len(tasks) + 1), 3.2))
    ax = fig.subplots()
    width = 0.8 / max(len(encs), 1)
    for j, enc in enumerate(encs):
        vals = []
        for t in tasks:
            match = [r for r in full if r["task"] == t and r["encoder"] == enc]
            val = headline(match[0])[1] if match else None
            vals.append(0.0 if val is None else val)  # degenerate rows: no bar (table says why)
        ax.bar([i + j * width for i in range(len(tasks))], vals, width, label=enc)
    ax.set_xticks([i + width * (len(encs) - 1) / 2 for i in range(len(tasks))])
    ax.set_xticklabels(tasks, fontsize=8)
    ax.set_ylabel("probe score (AUC / acc / R²)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    return out_png
