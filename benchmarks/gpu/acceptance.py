"""GPU acceptance run: every modality's shipped objective on one GPU, in one command (issue 18).

    python benchmarks/gpu/acceptance.py --out gpu_report            # on a GPU machine, ~5-8 min on one H200
    python benchmarks/gpu/acceptance.py --smoke --out /tmp/acc       # CPU smoke mode (tiny sizes, a few steps)

For each item (a modality's shipped experiment at a GPU-sized configuration) it

1. compares the loss of one fixed batch in fp32 and under bf16 autocast (same weights, same RNG seed;
   relative difference against a threshold per objective, justified in ``ITEMS``),
2. runs a few optimizer steps eagerly and with ``torch.compile`` from the same weights and reports the loss
   difference and the speedup of the warm compiled step,
3. measures steps/s and samples/s after warm-up (bf16 autocast, fused AdamW, the objective's
   ``on_step_end``), the peak memory, and MFU = (FLOPs of one forward+backward counted by
   ``torch.utils.flop_counter.FlopCounterMode``) x steps/s / the bf16 matmul peak measured on this GPU.

Then the trainer itself: ``torchrun --nproc_per_node=1`` with DDP and with FSDP2 through ``sslab.cli
pretrain``, a resume from a checkpoint on CUDA against an uninterrupted run (bit-identical is not expected
on a GPU: the difference is reported), and ``benchmarks/trainer_overhead.py --device cuda`` when that mode
exists. Every item fails soft (its error text goes in the report) and the report is written after each
item, so a run that is cut short still leaves ``gpu_acceptance.json`` and ``gpu_acceptance.md``.

Inputs are synthetic where the real data is not on the GPU machine (ECG signals, speech, images) and go
through the real collators and maskers; tables (scikit-learn's bundled sets), text (the standard-library
docstring corpus) and graphs (MUTAG from ``--data``, else synthetic graphs) go through the modality plugin.
The script checks its own dependencies first and prints the ``pip download`` line for missing wheels.
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata as md
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


# ----------------------------------------------------------------------------------------------- items
@dataclass
class Built:
    """What an item builder returns: the objective (on device) and one fixed batch."""

    objective: nn.Module
    batch: Any
    samples: int  # samples in the batch (for samples/s)
    config: str  # one line: model and batch shape


@dataclass
class Item:
    name: str
    experiment: str  # the shipped experiment whose objective section is used
    build: Callable[[argparse.Namespace, torch.device], Built]
    bf16_rtol: float  # threshold on |loss_bf16 - loss_fp32| / |loss_fp32|
    why: str  # the justification of the threshold


ITEMS: Dict[str, Item] = {}


def item(name: str, experiment: str, bf16_rtol: float, why: str):
    def deco(fn: Callable[[argparse.Namespace, torch.device], Built]):
        ITEMS[name] = Item(name, experiment, fn, bf16_rtol, why)
        return fn
    return deco


def _load_cfg(experiment: str, overrides: List[str]):
    from sslab.core.config import load_experiment

    return load_experiment(ROOT / experiment, overrides)


def _objective_spec(experiment: str) -> tuple:
    """The shipped experiment's config and its objective section without ``name`` (and MELP's ``mlm`` step)."""
    cfg = _load_cfg(experiment, [])
    spec = {k: v for k, v in cfg.objective.items() if k not in ("name", "mlm")}
    return cfg, spec


def _to(batch: Any, device: torch.device) -> Any:
    from sslab.core.data import move_to_device

    return move_to_device(batch, device)


def _modality_built(cfg, batch_size: int, device: torch.device, describe: str) -> Built:
    """Objective + one collated batch of ``batch_size`` pretraining items through the modality plugin."""
    from sslab.core.modality import build_modality

    torch.manual_seed(0)
    modality = build_modality(cfg)
    dataset, collate = modality.pretrain_data()
    items = [dataset[i % len(dataset)] for i in range(batch_size)]
    batch = collate(items) if collate is not None else torch.utils.data.default_collate(items)
    objective = modality.build_objective(modality.build_encoder()).to(device)
    return Built(objective, _to(batch, device), batch_size, describe)


# bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 0.2 % per op); through a deep network the loss moves by
# a few tenths of a percent, more where a loss divides logits by a small temperature (contrastive, DINO-style
# sharpening), which multiplies the logit error before the softmax.
@item("ecg_jepa", "experiments/ecg/jepa.yaml", 0.03,
      "L1/smooth-L1 between two bf16 ViT outputs: rounding of ~0.4 % per layer partly cancels; 12 layers -> ~1 %")
def build_ecg_jepa(args: argparse.Namespace, device: torch.device) -> Built:
    from sslab.objectives.masking import BlockMasker1D, JEPACollator1D

    size, batch, fs = ("xs", 4, 100) if args.smoke else ("b", 256, 500)
    patch = 5 * fs // 100  # the shipped file's 50 ms patch at 100 Hz; 25 samples at 500 Hz
    cfg = _load_cfg("experiments/ecg/jepa.yaml", [f"encoder.size={size}", f"encoder.patch_size={patch}"])
    from sslab.core.modality import build_modality

    torch.manual_seed(0)
    modality = build_modality(cfg)
    objective = modality.build_objective(modality.build_encoder()).to(device)
    crop = int(2.5 * fs)
    d = cfg.data
    collate = JEPACollator1D(BlockMasker1D(context_ratio=tuple(d["context_ratio"]),
                                           min_block=int(d["min_block_seconds"] * fs / patch)), patch)
    g = torch.Generator().manual_seed(0)
    b = collate([torch.randn(12, crop, generator=g) for _ in range(batch)])
    n = sum(p.numel() for p in objective.encoder.parameters()) / 1e6
    return Built(objective, _to(b, device), batch,
                 f"ViT1D-{size} ({n:.0f}M), 12 x {crop} @ {fs} Hz, patch {patch}, batch {batch}")


@item("ecg_text_melp", "experiments/ecg_text/melp.yaml", 0.05,
      "CLIP-style InfoNCE divides similarities by a learned temperature (~0.07): logit errors x14 before softmax")
def build_melp(args: argparse.Namespace, device: torch.device) -> Built:
    from sslab.core.registry import OBJECTIVES
    from sslab.core.export import build_encoder

    cfg, spec = _objective_spec("experiments/ecg_text/melp.yaml")
    batch, L, vocab, fs = (4, 24, 200, 100) if args.smoke else (128, 96, 3000, 100)
    enc_spec = dict(cfg.encoder)
    if args.smoke:
        enc_spec.update(size="xs")
        spec.update(embed_dim=32, num_queries=4, text={"dim": 32, "depth": 1, "heads": 2},
                    decoder={"dim": 32, "depth": 1, "heads": 2})
    torch.manual_seed(0)
    encoder = build_encoder(enc_spec)
    objective = OBJECTIVES.build("melp", encoder=encoder, vocab_size=vocab, pad_id=0, bos_id=2, eos_id=3,
                                 **spec).to(device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (batch, L), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    sentence_ids = (torch.arange(L) // max(L // 4, 1)).clamp(max=3).repeat(batch, 1)
    sentence_ids[:, 0] = sentence_ids[:, -1] = -1
    b = {"ecg": torch.randn(batch, 12, int(10 * fs), generator=g), "input_ids": ids,
         "attention_mask": torch.ones(batch, L, dtype=torch.long), "sentence_ids": sentence_ids}
    return Built(objective, _to(b, device), batch,
                 f"ViT1D-{enc_spec.get('size')} + text {spec['text']}, 12 x {int(10 * fs)}, {L} tokens, batch {batch}")


@item("speech_wav2vec2", "experiments/speech/wav2vec2_continue.yaml", 0.05,
      "contrastive loss over 100 distractors at logit temperature 0.1 (x10) plus Gumbel quantizer argmax flips")
def build_wav2vec2(args: argparse.Namespace, device: torch.device) -> Built:
    from sslab.datasets.audio import AudioCollator
    from sslab.datasets.audio_synthetic import SyntheticSpeechDataset
    from sslab.encoders.wav2vec2 import Wav2Vec2Encoder, tiny_config
    from sslab.core.registry import OBJECTIVES

    cfg, spec = _objective_spec("experiments/speech/wav2vec2_continue.yaml")
    batch, seconds = (2, 1.0) if args.smoke else (16, 10.0)
    torch.manual_seed(0)
    encoder = Wav2Vec2Encoder(config=tiny_config() if args.smoke else {})  # {} = HF defaults = wav2vec 2.0 BASE
    objective = OBJECTIVES.build("wav2vec2", encoder=encoder, **spec).to(device)
    ds = SyntheticSpeechDataset(num_speakers=batch, utts_per_speaker=1, min_seconds=seconds, max_seconds=seconds)
    b = objective.make_collator(AudioCollator("pad"))([ds[i] for i in range(batch)])
    n = sum(p.numel() for p in encoder.parameters()) / 1e6
    return Built(objective, _to(b, device), batch,
                 f"wav2vec 2.0 {'tiny' if args.smoke else 'BASE'} ({n:.0f}M), batch {batch} x {seconds:g} s")


@item("vision_poa", "experiments/vision/poa.yaml", 0.05,
      "DINO/iBOT cross-entropy against a teacher sharpened at temperature 0.02-0.04 (x25-50 on logits)")
def build_poa(args: argparse.Namespace, device: torch.device) -> Built:
    from sslab.core.export import build_encoder
    from sslab.core.registry import OBJECTIVES

    cfg, spec = _objective_spec("experiments/vision/poa.yaml")
    img, local, batch, n_local = (32, 16, 4, 2) if args.smoke else (224, 96, 64, 4)
    torch.manual_seed(0)
    if args.smoke:  # the shipped file's tiny ViT (widths 16-64, depths 2-4) at 32 px
        encoder = build_encoder({**cfg.encoder, "img_size": img, "in_chans": 3})
    else:  # ViT-S/16 at 224 px, DINOv2-sized heads
        encoder = build_encoder({"name": "elastic_vit", "arch": "vit_small_patch16_224", "img_size": img,
                                 "patch_size": 16, "in_chans": 3, "drop_path_rate": 0.1})
        spec.update(widths=[192, 256, 320, 384], depths=[6, 8, 10, 12], out_dim=65536, head_hidden=2048,
                    head_bottleneck=256)
    objective = OBJECTIVES.build("poa", encoder=encoder, **spec).to(device)
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(batch, 3, img, img, generator=g) for _ in range(2)]
    views += [torch.randn(batch, 3, local, local, generator=g) for _ in range(n_local)]
    return Built(objective, _to({"views": views, "n_global": 2}, device), batch,
                 f"{'tiny ViT' if args.smoke else 'ViT-S/16'} elastic, 2 x {img} + {n_local} x {local} px, batch {batch}")


@item("text_mlm", "experiments/text/mlm_stdlib_docs.yaml", 0.01,
      "cross-entropy over the vocabulary at init (~ln V = 8.3): a bf16 logit error of 1e-2 moves it by 0.1 %")
def build_mlm(args: argparse.Namespace, device: torch.device) -> Built:
    size = (["encoder.dim=32", "encoder.depth=2", "encoder.heads=2", "data.vocab_size=500"] if args.smoke else
            ["encoder.dim=768", "encoder.depth=12", "encoder.heads=12", "data.max_len=128"])  # BERT-base
    batch = 4 if args.smoke else 128
    cfg = _load_cfg("experiments/text/mlm_stdlib_docs.yaml",
                    size + [f"output_dir={args.tmp}", "name=acc_text_mlm"])
    return _modality_built(cfg, batch, device, f"text transformer {cfg.encoder['dim']}/{cfg.encoder['depth']}/"
                           f"{cfg.encoder['heads']}, {cfg.data['max_len']} tokens (packed), batch {batch}")


@item("table_unitabe", "experiments/table/unitabe.yaml", 0.03,
      "typed reconstruction (MSE + token CE) plus InfoNCE at temperature 0.1")
def build_unitabe(args: argparse.Namespace, device: torch.device) -> Built:
    tables = "[sklearn:breast_cancer,sklearn:diabetes,sklearn:wine]"
    size = ([] if args.smoke else ["encoder.dim=256", "encoder.depth=6", "encoder.heads=8"])
    batch = 8 if args.smoke else 512
    cfg = _load_cfg("experiments/table/unitabe.yaml",
                    size + [f"data.pretrain={tables}", "data.eval=sklearn:wine", f"output_dir={args.tmp}",
                            "name=acc_table"])
    return _modality_built(cfg, batch, device, f"TabUnit {cfg.encoder['dim']}/{cfg.encoder['depth']}, "
                           f"scikit-learn tables, batch {batch} rows")


@item("graph_gin", "experiments/graph/mutag_attr_mask.yaml", 0.02,
      "categorical cross-entropy of masked node attributes after 5 GIN layers (sum aggregation, no temperature)")
def build_gin(args: argparse.Namespace, device: torch.device) -> Built:
    batch = 8 if args.smoke else 1024
    tu = Path(args.data) / "graphs"
    if (tu / "MUTAG").is_dir():
        over = [f"data.tu_root={tu}"]
        what = "MUTAG molecules"
    else:
        over = ["data.source=synthetic:er:num_graphs=256", "data.features=degree"]
        what = "synthetic ER graphs (MUTAG not found under --data)"
    if args.smoke:
        over += ["encoder.dim=16", "encoder.num_layers=2"]
    cfg = _load_cfg("experiments/graph/mutag_attr_mask.yaml", over)
    return _modality_built(cfg, batch, device, f"GIN {cfg.encoder['dim']} x {cfg.encoder['num_layers']}, "
                           f"{what}, batch {batch} graphs")


# --------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _amp(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _optimizer(objective: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    params = [p for p in objective.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")


def _loss_once(objective: nn.Module, batch: Any, device: torch.device, bf16: bool) -> float:
    torch.manual_seed(1234)  # identical dropout / Gumbel / sub-network draws in both precisions
    with torch.no_grad(), _amp(device, bf16):
        return float(objective(batch)["loss"].float())


def _train_steps(objective: nn.Module, forward: Callable[[Any], Dict[str, Any]], batch: Any, steps: int,
                 device: torch.device, bf16: bool, t_from: int = 1) -> Dict[str, Any]:
    """``steps`` optimizer steps on one batch; times steps ``t_from..steps-1`` (after warm-up)."""
    opt = _optimizer(objective, device)
    losses: List[float] = []
    t0 = None
    torch.manual_seed(99)
    for i in range(steps):
        if i == t_from:
            _sync(device)
            t0 = time.perf_counter()
        with _amp(device, bf16):
            loss = forward(batch)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if hasattr(objective, "on_step_end"):
            objective.on_step_end(i + 1, 1000)
        losses.append(loss.detach())
    _sync(device)
    dt = (time.perf_counter() - t0) / max(steps - t_from, 1) if t0 is not None else float("nan")
    return {"losses": [float(x) for x in losses], "step_s": dt}


def step_flops(objective: nn.Module, batch: Any, device: torch.device, bf16: bool) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(7)
    with FlopCounterMode(display=False) as counter, _amp(device, bf16):
        objective(batch)["loss"].backward()
    objective.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def measure(it: Item, args: argparse.Namespace, device: torch.device, peak_tflops: float,
            deadline: float) -> Dict[str, Any]:
    bf16 = device.type == "cuda" or args.smoke  # smoke: CPU autocast bf16 exercises the same code path
    res: Dict[str, Any] = {"item": it.name, "experiment": it.experiment, "bf16_rtol": it.bf16_rtol,
                           "bf16_rtol_why": it.why}
    t_build = time.perf_counter()
    built = it.build(args, device)
    res["config"] = built.config
    res["build_s"] = round(time.perf_counter() - t_build, 1)
    obj = built.objective.train()
    state0 = copy.deepcopy(obj.state_dict())

    # 1. fp32 vs bf16 on one fixed batch
    l32 = _loss_once(obj, built.batch, device, bf16=False)
    l16 = _loss_once(obj, built.batch, device, bf16=True)
    rel = abs(l16 - l32) / max(abs(l32), 1e-12)
    res.update(loss_fp32=l32, loss_bf16=l16, bf16_rel_diff=rel, bf16_ok=bool(math.isfinite(rel) and rel <= it.bf16_rtol))

    # 2. FLOPs, then throughput (eager, bf16 autocast), peak memory
    flops = step_flops(obj, built.batch, device, bf16)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps = args.steps
    eager = _train_steps(obj, obj, built.batch, steps + args.warmup, device, bf16, t_from=args.warmup)
    res.update(flops_per_step=flops, step_ms=1000 * eager["step_s"], steps_per_s=1 / eager["step_s"],
               samples_per_s=built.samples / eager["step_s"],
               tflops=flops / eager["step_s"] / 1e12,
               mfu=(flops / eager["step_s"] / 1e12) / peak_tflops if peak_tflops else None,
               peak_mem_gib=(torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None),
               losses_finite=all(math.isfinite(x) for x in eager["losses"]))

    # 3. eager vs torch.compile from the same weights: loss difference and warm-step speedup
    if time.time() > deadline:
        res["compile"] = "skipped: time budget"
        return res
    k = args.compile_steps
    obj.load_state_dict(state0)
    ref = _train_steps(obj, obj, built.batch, k, device, bf16)
    obj.load_state_dict(state0)
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()  # graph breaks of this item only
    compiled = torch.compile(obj, backend=args.compile_backend)
    t_c = time.perf_counter()
    comp = _train_steps(obj, compiled, built.batch, k, device, bf16)
    res["compile_total_s"] = round(time.perf_counter() - t_c, 1)
    diffs = [abs(a - b) / max(abs(a), 1e-12) for a, b in zip(ref["losses"], comp["losses"])]
    res["compile_graph_breaks"] = int(sum(counters["graph_break"].values()))
    res.update(compile_loss_rel_diff_max=max(diffs), compile_step_ms=1000 * comp["step_s"],
               eager_step_ms_same_run=1000 * ref["step_s"], compile_speedup=ref["step_s"] / comp["step_s"])
    return res


# --------------------------------------------------------------------------------- trainer items
VECTOR_YAML = """name: {name}
modality: vector
seed: 0
output_dir: {out}
data: {{source: digits, mask_ratio: 0.5}}
encoder: {{name: mlp, in_dim: 64, dim: 64, hidden: [256, 256]}}
objective: {{name: masked_feature, in_dim: 64}}
train: {{steps: {steps}, batch_size: 64, log_every: 1, ckpt_every: 5, progress: false}}
optim: {{lr: 0.001, warmup_steps: 5}}
"""


def _sslab(args_list: List[str], env: Dict[str, str], torchrun: bool = False, timeout: int = 240
           ) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "sslab.cli"] \
        if torchrun else [sys.executable, "-m", "sslab.cli"]
    return subprocess.run(cmd + args_list, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _encoder_weights(run_dir: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "encoder" / "encoder.safetensors"))


def _last_loss(run_dir: Path) -> float:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return float(json.loads(lines[-1])["loss"])


def trainer_items(args: argparse.Namespace, device: torch.device) -> List[Dict[str, Any]]:
    """torchrun DDP / FSDP2 with nproc 1, and resume on the device, through ``sslab.cli pretrain``."""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    dev = "cuda" if device.type == "cuda" else "cpu"
    steps = 10 if args.smoke else 40
    work = Path(args.tmp) / "trainer"
    work.mkdir(parents=True, exist_ok=True)
    rows: List[Dict[str, Any]] = []

    def run_case(name: str, fn: Callable[[], Dict[str, Any]]) -> None:
        t = time.perf_counter()
        try:
            row = {"item": name, **fn()}
        except Exception as err:  # fail soft: the report names the error
            row = {"item": name, "ok": False, "error": f"{type(err).__name__}: {err}"}
        row["wall_s"] = round(time.perf_counter() - t, 1)
        rows.append(row)

    def write(name: str, total: int) -> Path:
        path = work / f"{name}.yaml"
        path.write_text(VECTOR_YAML.format(name=name, out=work, steps=total))
        return path

    def single() -> Dict[str, Any]:
        p = _sslab(["pretrain", str(write("single", steps)), f"train.device={dev}"], env)
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-800:])
        return {"ok": True, "final_loss": _last_loss(work / "single")}

    def torchrun(kind: str) -> Callable[[], Dict[str, Any]]:
        def go() -> Dict[str, Any]:
            p = _sslab(["pretrain", str(write(f"torchrun_{kind}", steps)), f"train.device={dev}",
                        f"train.distributed={kind}"], env, torchrun=True)
            if p.returncode != 0:
                raise RuntimeError(p.stderr[-800:])
            single_dir = work / "single"
            out: Dict[str, Any] = {"ok": True, "final_loss": _last_loss(work / f"torchrun_{kind}")}
            if (single_dir / "encoder").is_dir():
                a, b = _encoder_weights(single_dir), _encoder_weights(work / f"torchrun_{kind}")
                out["max_abs_diff_vs_single_process"] = max(float((a[k] - b[k]).abs().max()) for k in a)
            return out
        return go

    def resume() -> Dict[str, Any]:
        path = write("resumed", steps)
        p = _sslab(["pretrain", str(path), f"train.device={dev}", f"train.stop_after={steps // 2}"], env)
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-800:])
        p = _sslab(["pretrain", str(path), f"train.device={dev}"], env)
        if p.returncode != 0:
            raise RuntimeError(p.stderr[-800:])
        a, b = _encoder_weights(work / "single"), _encoder_weights(work / "resumed")
        diff = max(float((a[k] - b[k]).abs().max()) for k in a)
        return {"ok": True, "max_abs_diff_vs_uninterrupted": diff, "bit_identical": diff == 0.0,
                "final_loss": _last_loss(work / "resumed"),
                "final_loss_uninterrupted": _last_loss(work / "single")}

    run_case("trainer_single_process", single)
    run_case("torchrun_ddp_nproc1", torchrun("ddp"))
    run_case("torchrun_fsdp2_nproc1", torchrun("fsdp"))
    run_case("resume_from_checkpoint", resume)
    run_case("trainer_overhead", lambda: trainer_overhead(args, dev, env))
    return rows


def trainer_overhead(args: argparse.Namespace, dev: str, env: Dict[str, str]) -> Dict[str, Any]:
    """``benchmarks/trainer_overhead.py --device cuda`` (its last ``RESULT {json}`` line), when it has that mode."""
    script = ROOT / "benchmarks" / "trainer_overhead.py"
    helptext = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60).stdout
    if "--device" not in helptext:
        return {"ok": False, "error": "benchmarks/trainer_overhead.py has no --device mode yet"}
    extra = ["--rounds", "1", "--steps", "20"] if args.smoke else ["--rounds", "3", "--steps", "200"]
    p = subprocess.run([sys.executable, str(script), "--device", dev, *extra], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-800:])
    found = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if not found:
        return {"ok": False, "error": "no RESULT line", "stdout_tail": p.stdout[-400:]}
    return {"ok": True, **json.loads(found[-1][len("RESULT "):])}


# ---------------------------------------------------------------------------------- machine, deps
def machine_info(device: torch.device, smoke: bool) -> Dict[str, Any]:
    info: Dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "host_cpus": os.cpu_count()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as err:
            info["driver"] = f"unknown ({err})"
    n = 256 if smoke else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 3 if smoke else 20
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    info["bf16_matmul_tflops_measured"] = 2 * n**3 * reps / (time.perf_counter() - t) / 1e12
    info["bf16_matmul_shape"] = f"{n}x{n}x{n}, random data, median-free mean of {reps}"
    return info


def check_dependencies() -> Dict[str, Any]:
    """Which of the project's dependencies (pyproject.toml) are missing here, and the wheels to carry."""
    text = (ROOT / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    names = [re.split(r"[<>=!~ \[;]", s.strip().strip('",'))[0] for s in block.splitlines()
             if s.strip().startswith('"')]
    missing, versions = [], {}
    for name in names:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            missing.append(name)
    hint = ("" if not missing else
            "carry these as wheels (no network on the GPU machine): python3 -m pip download --no-deps "
            "--only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 "
            "--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl " + " ".join(missing))
    return {"missing": missing, "versions": versions, "carry_hint": hint}


# ------------------------------------------------------------------------------------------ report
def _fmt(v: Any, spec: str) -> str:
    return "—" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def write_report(out: Path, report: Dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_acceptance.json").write_text(json.dumps(report, indent=2, default=str))
    m = report["machine"]
    lines = [f"# GPU acceptance ({'smoke, CPU' if report['smoke'] else m.get('gpu', 'cpu')})", "",
             f"torch {m['torch']}, CUDA {m.get('cuda')}, driver {m.get('driver', '—')}, "
             f"measured bf16 matmul peak {m['bf16_matmul_tflops_measured']:.0f} TFLOP/s ({m['bf16_matmul_shape']}); "
             f"missing dependencies: {', '.join(report['dependencies']['missing']) or 'none'}", "",
             "| item | ok | config | fp32 vs bf16 loss (rel. diff / limit) | step ms | samples/s | TFLOP/s | MFU "
             "| peak GiB | compile speedup | compile loss diff (graph breaks) | error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["items"]:
        if "error" in r:
            lines.append(f"| {r['item']} | **fail** | {r.get('config', '')} | | | | | | | | | {r['error'][:300]} |")
            continue
        ok = r["bf16_ok"] and r["losses_finite"]
        comp = r.get("compile")
        lines.append(
            f"| {r['item']} | {'ok' if ok else '**fail**'} | {r['config']} | "
            f"{r['loss_fp32']:.4f} vs {r['loss_bf16']:.4f} ({r['bf16_rel_diff']:.2e} / {r['bf16_rtol']}) | "
            f"{_fmt(r['step_ms'], '.1f')} | {_fmt(r['samples_per_s'], '.0f')} | {_fmt(r['tflops'], '.1f')} | "
            f"{_fmt(100 * r['mfu'] if r.get('mfu') else None, '.1f')}% | {_fmt(r.get('peak_mem_gib'), '.1f')} | "
            f"{comp or _fmt(r.get('compile_speedup'), '.2f') + 'x'} | {_fmt(r.get('compile_loss_rel_diff_max'), '.1e')} "
            f"({r.get('compile_graph_breaks', '—')}) | |")
    lines += ["", "| trainer item | ok | numbers | wall s | error |", "|---|---|---|---|---|"]
    for r in report["trainer"]:
        nums = {k: v for k, v in r.items() if k not in ("item", "ok", "error", "wall_s")}
        lines.append(f"| {r['item']} | {'ok' if r.get('ok') else '**fail**'} | "
                     f"{json.dumps(nums, default=str)[:400]} | {r.get('wall_s')} | {r.get('error', '')[:300]} |")
    lines += ["", f"total wall time {report.get('total_s', 0):.0f} s"]
    (out / "gpu_acceptance.md").write_text("\n".join(lines) + "\n")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_acceptance")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on CPU (the test's mode)")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu (smoke only)")
    ap.add_argument("--only", nargs="*", default=None, help=f"items to run (default all: {', '.join(ITEMS)})")
    ap.add_argument("--no-trainer", action="store_true", help="skip the torchrun / resume / overhead items")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per item (default 10; smoke 2)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3; smoke 1)")
    ap.add_argument("--compile-steps", type=int, default=None, help="steps eager and compiled (default 6; smoke 2)")
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default inductor; smoke: eager, i.e. Dynamo tracing without codegen)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip compile checks after this many seconds (default 300; smoke: never)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="where MUTAG etc. live")
    args = ap.parse_args(argv)
    args.steps = args.steps or (2 if args.smoke else 10)
    args.warmup = args.warmup or (1 if args.smoke else 3)
    args.compile_steps = args.compile_steps or (2 if args.smoke else 6)
    args.budget_s = args.budget_s if args.budget_s is not None else (float("inf") if args.smoke else 300.0)
    args.compile_backend = args.compile_backend or ("eager" if args.smoke else "inductor")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not args.smoke:
        print("acceptance.py: no CUDA device; use --smoke for the CPU smoke mode", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t_start = time.time()
    deadline = t_start + args.budget_s
    out = Path(args.out)
    args.tmp = tempfile.mkdtemp(prefix="sslab_acc_")
    deps = check_dependencies()
    if deps["missing"]:
        print(f"missing dependencies: {', '.join(deps['missing'])}\n{deps['carry_hint']}", file=sys.stderr)
    report: Dict[str, Any] = {"smoke": args.smoke, "device": str(device), "dependencies": deps,
                              "machine": machine_info(device, args.smoke), "items": [], "trainer": []}
    peak = report["machine"]["bf16_matmul_tflops_measured"]
    print(f"machine: {json.dumps(report['machine'])}", flush=True)
    if not args.no_trainer:  # quick, and what every run relies on: first
        report["trainer"] = trainer_items(args, device)
        write_report(out, report)
        print(json.dumps(report["trainer"], default=str), flush=True)
    names = args.only if args.only else list(ITEMS)
    for name in names:
        if name not in ITEMS:
            print(f"unknown item {name!r}; known: {', '.join(ITEMS)}", file=sys.stderr)
            return 2
        t = time.perf_counter()
        try:
            row = measure(ITEMS[name], args, device, peak, deadline)
        except Exception as err:  # fail soft: one broken item must not hide the others
            row = {"item": name, "error": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc()[-2000:]}
        row["wall_s"] = round(time.perf_counter() - t, 1)
        report["items"].append(row)
        report["total_s"] = time.time() - t_start
        write_report(out, report)
        brief = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                 if k in ("item", "error", "bf16_rel_diff", "step_ms", "samples_per_s", "mfu", "compile_speedup",
                          "peak_mem_gib", "wall_s")}
        print(json.dumps(brief), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    report["total_s"] = time.time() - t_start
    write_report(out, report)
    print((out / "gpu_acceptance.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
