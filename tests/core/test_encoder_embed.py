"""Issue 14, per modality: pretrain a tiny run, export, then in a FRESH process that sees only a copy of the
encoder folder run ``sslab embed`` on raw files, and get back the probe's features (1e-5).

One module fixture pretrains every modality (a step or two each) and runs ONE subprocess that calls the CLI
once per encoder (interpreter start-up and plugin loading dominate a subprocess here)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch

from sslab.core.config import load_experiment
from sslab.core.export import load_encoder
from sslab.core.modality import build_modality
from sslab.eval.probe import extract_features
from sslab.run import pretrain

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SSLAB_SHARED_DATA", REPO.parent / "shared" / "data"))
COMMON = ["train.steps=1", "train.batch_size=8", "train.progress=false", "probe.batch_size=16"]


def _probe_features(cfg: Any, run: Path, split: str = "test") -> Tuple[Any, np.ndarray]:
    """(modality, features of the probe's ``split``) exactly as ``sslab.run.probe`` computes them."""
    mod = build_modality(cfg)
    task = mod.probe_tasks()[0]
    enc = load_encoder(run)
    X, _ = extract_features(lambda x: mod.embed(enc, x), getattr(task, split), task.collate_fn,
                            batch_size=cfg.probe.batch_size)
    return (mod, task), X


def _cfg(tmp: Path, name: str, *extra: str):
    return load_experiment(None, [f"output_dir={tmp}", f"name={name}", *COMMON, *extra])


# --------------------------------------------------------------------------- one builder per modality
# each returns (run dir, raw inputs for sslab embed, names of the probe rows, the probe's features)

def build_vector(tmp: Path):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    cfg = _cfg(tmp, "vector", "modality=vector", "encoder={name: mlp, in_dim: 64, dim: 16, hidden: [32]}",
               "objective={name: masked_feature, in_dim: 64}")
    run = pretrain(cfg)
    raw = tmp / "digits_raw.npy"
    d = load_digits()
    np.save(raw, d.data)  # the raw 0..16 pixel counts: the pipeline divides by 16
    _, te = train_test_split(np.arange(len(d.target)), test_size=0.3, random_state=0, stratify=d.target)
    _, X = _probe_features(cfg, run)
    return run, [raw], [f"{raw}:{i}" for i in te], X


def build_vision(tmp: Path):
    from sklearn.datasets import load_digits

    d = load_digits()
    images, y = (d.images * 15).astype(np.uint8), d.target
    npz = tmp / "digits_medmnist.npz"
    np.savez(npz, train_images=images[:96], train_labels=y[:96, None], test_images=images[96:144],
             test_labels=y[96:144, None])
    cfg = _cfg(tmp, "vision", "modality=vision", f"data={{source: npz, path: {npz}, img_size: 8, channels: 1}}",
               "encoder={name: vit_timm, img_size: 8, patch_size: 4, in_chans: 1, embed_dim: 16, depth: 1, "
               "num_heads: 2}", "objective={name: sit}")
    run = pretrain(cfg)
    _, X = _probe_features(cfg, run)
    perm = torch.randperm(48, generator=torch.Generator().manual_seed(0)).tolist()  # data.shuffle_seed
    return run, [npz], [f"{npz}:test[{i}]" for i in perm], X


def build_text(tmp: Path):
    words = ("heart rhythm sinus normal block branch left right atrial fibrillation wave segment elevation "
             "depression axis").split()
    rng = np.random.default_rng(0)
    (tmp / "corpus").mkdir()
    for i in range(24):
        (tmp / "corpus" / f"d{i}.txt").write_text(" ".join(rng.choice(words, 20)))
    probe_csv = tmp / "texts.csv"
    with open(probe_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for i in range(32):
            lab = i % 2
            w.writerow([" ".join(rng.choice(words[:7] if lab else words[7:], 6 + i % 11)), f"c{lab}",
                        "test" if i % 4 == 0 else "train"])
    cfg = _cfg(tmp, "text", "modality=text", f"data={{sources: [{tmp / 'corpus'}], vocab_size: 120, max_len: 10, "
               f"probe: {probe_csv}, tokenizer_cache: ''}}",
               "encoder={name: text_transformer, dim: 16, depth: 1, heads: 2, max_len: 32}", "objective={name: mlm}")
    run = pretrain(cfg)
    _, X = _probe_features(cfg, run, "train")
    return run, [probe_csv], [f"{probe_csv}:{i}" for i in range(32) if i % 4], X  # some texts exceed max_len


def build_table(tmp: Path):
    from sslab.eval.table_baselines import split_indices

    rng = np.random.default_rng(0)
    table = tmp / "toy.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["age", "color", "score", "y"])
        for i in range(40):
            w.writerow([int(rng.integers(20, 70)), rng.choice(["red", "blue", "?"]), f"{rng.normal():.3f}",
                        "yes" if i % 2 else "no"])
    cfg = _cfg(tmp, "table", "modality=table",
               f"data={{pretrain: ['sklearn:iris', 'sklearn:wine'], eval: 'csv:toy', csv: {{toy: {{path: {table}, "
               "target: y}}, vocab_size: 300, max_rows_per_table: 40}",
               "encoder={name: tabunit, dim: 16, depth: 1, heads: 2}", "objective={name: unitabe}")
    run = pretrain(cfg)
    (mod, _), X = _probe_features(cfg, run)
    _, te = split_indices(mod.eval_table(), 0.3, 0)
    return run, [table], [f"{table}:{i}" for i in te], X


def build_graph(tmp: Path):
    cfg = _cfg(tmp, "graph", "modality=graph", f"data={{source: MUTAG, tu_root: {SHARED / 'graphs'}, "
               "features: node_labels+degree, max_degree: 8}", "encoder={name: gin, dim: 16, num_layers: 2}",
               "objective={name: graph_attr_mask}")
    run = pretrain(cfg)
    (_, task), X = _probe_features(cfg, run)
    folder = SHARED / "graphs" / "MUTAG"
    return run, [folder], [f"{folder}:{i}" for i in task.test.indices], X


def build_speech(tmp: Path):
    import soundfile as sf

    from sslab.encoders.wav2vec2 import tiny_config

    tiny = tiny_config(conv_dim=[16] * 7, hidden_size=32, intermediate_size=64, codevector_dim=32,
                       proj_codevector_dim=16, num_codevectors_per_group=16)
    (tmp / "wav").mkdir()
    rng = np.random.default_rng(0)
    rows = ["file\tspeaker\tlanguage"]
    for spk, f0 in (("a", 140.0), ("b", 230.0)):
        for u in range(3):
            sr = 8000 if u == 0 else 16000  # a file at another rate: resampled as in training
            t = np.arange(int(sr * (1.1 + 0.3 * u))) / sr
            x = 0.3 * np.sin(2 * np.pi * f0 * (1 + 0.1 * u) * t) + 0.02 * rng.standard_normal(len(t))
            sf.write(tmp / "wav" / f"{spk}{u}.wav", x.astype(np.float32), sr)
            rows.append(f"wav/{spk}{u}.wav\t{spk}\ten")
    (tmp / "clips.tsv").write_text("\n".join(rows) + "\n")
    cfg = _cfg(tmp, "speech", "modality=speech", f"data={{source: manifest, path: {tmp / 'clips.tsv'}, "
               "max_seconds: 1.0, probe_seconds: 0.5, probe_tasks: [speaker]}", "train.batch_size=3", "encoder.name=wav2vec2",
               f"encoder.config={json.dumps(tiny)}", "objective.name=wav2vec2")
    run = pretrain(cfg)
    (mod, task), X = _probe_features(cfg, run)
    items = mod.corpus().items
    return run, [tmp / "wav"], [f"{items[u].path}@{a}:{b}" for u, a, b in task.test.chunks], X


def build_ecg(tmp: Path):
    ptbxl = SHARED / "ecg" / "ptbxl"
    cfg = _cfg(tmp, "ecg", "modality=ecg", "encoder={name: vit1d, in_chans: 12, patch_size: 5, dim: 16, depth: 1, "
               "heads: 2}", "objective={name: jepa}", "data.source=ptbxl", f"data.path={ptbxl}",
               "data.pretrain_folds=[3]", "data.probe_train_folds=[3]", "data.probe_test_folds=[6]",
               f"data.cache_dir={tmp / 'cache'}", "data.workers=1")
    run = pretrain(cfg)
    (mod, _), X = _probe_features(cfg, run, "train")
    names = [str(r) for r in mod.ptbxl().split([3]).records]
    return run, [ptbxl], names, X  # the whole PTB-XL folder is embedded; the probe's rows are looked up


def build_ecg_text(tmp: Path):
    ptbxl = SHARED / "ecg" / "ptbxl"
    cfg = load_experiment(REPO / "experiments" / "ecg_text" / "melp.yaml", [
        f"output_dir={tmp}", "name=ecg_text", *COMMON, f"data.path={ptbxl}", "data.pretrain_folds=[3]",
        "data.probe_train_folds=[3]", "data.probe_test_folds=[6]", f"data.cache_dir={tmp / 'cache'}",
        "data.workers=1", "data.vocab_size=200", "train.num_workers=0",
        "encoder={name: vit1d, in_chans: 12, patch_size: 25, dim: 16, depth: 1, heads: 2}",
        "objective={name: melp, embed_dim: 16, num_queries: 2, text: {dim: 16, depth: 1, heads: 2}, "
        "decoder: {dim: 16, depth: 1, heads: 2}}"])
    run = pretrain(cfg)
    (_, task), X = _probe_features(cfg, run, "train")
    signals = task.train.get_signal  # the probe's records: indices into the record cache
    names = [signals.get.__self__.names[i] for i in signals.indices]
    return run, [ptbxl], names, X  # only the ECG tower is exported; its pipeline is the ECG one


BUILDERS: Dict[str, Tuple[Callable[[Path], Any], bool]] = {
    "vector": (build_vector, False), "vision": (build_vision, False), "text": (build_text, False),
    "table": (build_table, False), "speech": (build_speech, False), "graph": (build_graph, True),
    "ecg": (build_ecg, True), "ecg_text": (build_ecg_text, True)}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> Dict[str, Any]:
    """modality -> (names of the probe rows, probe features, names written by sslab embed, embed features)."""
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("embed")
    built: Dict[str, Any] = {}
    jobs: List[List[str]] = []
    for name, (build, needs_shared) in BUILDERS.items():
        if needs_shared and not SHARED.is_dir():
            continue
        work = root / name
        work.mkdir()
        run, inputs, names, X = build(work)
        moved = root / "elsewhere" / f"{name}_encoder"  # only the encoder folder travels
        shutil.copytree(run / "encoder", moved)
        out = root / "out" / f"{name}.npy"
        jobs.append(["embed", str(moved), *map(str, inputs), "--out", str(out), "--device", "cpu",
                     "--batch-size", "7"])
        built[name] = (names, X, out)
    torch.set_num_threads(n_threads)
    script = ("import json, sys\nfrom sslab.cli import main\n"
              "for job in json.loads(sys.argv[1]):\n    assert main(job) == 0, job\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(jobs)], cwd=root / "elsewhere", env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = {}
    for name, (names, X, out) in built.items():
        with open(out.with_name(out.stem + ".index.csv")) as f:
            index = [row["input"] for row in csv.DictReader(f)]
        result[name] = (names, X, index, np.load(out))
    return result


@pytest.mark.parametrize("modality", list(BUILDERS))
def test_sslab_embed_on_raw_files_gives_the_probe_features(embedded, modality):
    if modality not in embedded:
        pytest.skip(f"{modality}: needs the shared sample data at {SHARED}")
    names, X, index, Z = embedded[modality]
    assert len(index) == len(Z) and len(set(index)) == len(index)
    pos = {n: i for i, n in enumerate(index)}
    missing = [n for n in names if n not in pos]
    assert not missing, f"probe rows not embedded: {missing[:3]}"
    got = Z[[pos[n] for n in names]]
    assert got.shape == X.shape
    np.testing.assert_allclose(got, X, rtol=0, atol=1e-5)
