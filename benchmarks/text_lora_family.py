"""LoRA family vs full training on the same text encoder: parameter counts, training-state memory,
activation memory, step time and MLM loss after a short run on the PTB-XL reports.

Memory is measured, not estimated, where it can be on CPU: activation memory is the byte sum of the
tensors autograd saves for backward (``torch.autograd.graph.saved_tensors_hooks``) in one training
forward; parameter, gradient and AdamW-state bytes follow from the (trainable) parameter tensors.
On CUDA the script also reports ``torch.cuda.max_memory_allocated`` for one step.

    .venv/bin/python benchmarks/text_lora_family.py --steps 60
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

VARIANTS = {
    "full": None,
    "lora_all": {"kind": "lora", "r": 8, "target_modules": ["qkv", "proj", "fc1", "fc2"]},
    "layra_first1_last1": {"kind": "lora", "r": 8, "target_modules": ["qkv", "proj", "fc1", "fc2"],
                           "layers": "first:1,last:1"},
    "dylora": {"kind": "dylora", "r": 8, "target_modules": ["qkv", "proj", "fc1", "fc2"]},
    "switchlora": {"kind": "switchlora", "r": 8, "target_modules": ["qkv", "proj", "fc1", "fc2"], "switch_every": 10},
    # the same without the optimizer-moment reset and counterpart freeze (the behaviour before 2026-11-29)
    "switchlora_no_reset": {"kind": "switchlora", "r": 8, "target_modules": ["qkv", "proj", "fc1", "fc2"],
                            "switch_every": 10, "reset_optimizer": False, "freeze_steps": 0},
    "lora_all_frozen_rest": {"kind": "lora", "r": 8, "target_modules": ["qkv", "proj", "fc1", "fc2"],
                             "freeze_rest": True},
}


def activation_bytes(fn) -> int:  # type: ignore[no-untyped-def]
    total = [0]
    seen = set()

    def pack(t: torch.Tensor):  # type: ignore[no-untyped-def]
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return total[0], out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--shared-data", default="../shared/data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write results as JSON here")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    from sslab.core.config import load_experiment
    from sslab.core.export import build_encoder
    from sslab.core.modality import build_modality
    from sslab.encoders.adapters import count_parameters
    from sslab.objectives.mlm import MLMObjective

    cfg = load_experiment("experiments/text/mlm_ptbxl.yaml", [f"data.shared_data={args.shared_data}",
                                                             "output_dir=/tmp/sslab_text_lora_bench"])
    modality = build_modality(cfg)
    ds, collate = modality.pretrain_data()
    vocab = len(modality.tokenizer())
    base = {"name": "text_transformer", "vocab_size": vocab, "dim": args.dim, "depth": args.depth, "heads": 4,
            "max_len": 160}
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in args.variants:
        adapter = VARIANTS[name]
        torch.manual_seed(args.seed)
        spec = base if adapter is None else {"name": "adapted", "base": base, "adapter": adapter}
        enc = build_encoder(spec)
        obj = MLMObjective(enc, mask_prob=0.15).to(device)
        counts = count_parameters(obj)
        trainable = [p for p in obj.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
        if hasattr(enc, "bind_optimizer"):  # as the core Trainer does: SwitchLoRA resets moments in `opt`
            enc.bind_optimizer(opt)
        g = torch.Generator().manual_seed(args.seed)
        losses, times, act, moments_reset = [], [], 0, 0
        for step in range(args.steps):
            idx = torch.randint(len(ds), (args.batch,), generator=g)
            torch.manual_seed(step)
            batch = {k: v.to(device) for k, v in collate([ds[int(i)] for i in idx]).items()}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            if step == 0:
                act, out = activation_bytes(lambda: obj(batch))
            else:
                out = obj(batch)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            hook_out = obj.on_step_end(step + 1, args.steps) or {}
            times.append(time.perf_counter() - t)
            losses.append(out["loss"].item())
            moments_reset += int(hook_out.get("moments_reset", 0))
        param_b = sum(p.numel() * p.element_size() for p in {id(p): p for p in obj.parameters()}.values())
        param_b += sum(b.numel() * b.element_size() for b in obj.buffers())
        grad_b = sum(p.numel() * p.element_size() for p in trainable)
        row = {"variant": name, "total_params": counts["total"], "trainable_params": counts["trainable"],
               "trainable_frac": round(counts["trainable_frac"], 4),
               "param_MiB": round(param_b / 2**20, 2), "grad_MiB": round(grad_b / 2**20, 2),
               "adamw_state_MiB": round(2 * grad_b / 2**20, 2), "activation_MiB": round(act / 2**20, 2),
               "train_state_MiB": round((param_b + 3 * grad_b) / 2**20, 2),
               "step_ms_median": round(1000 * sorted(times)[len(times) // 2], 1),
               "loss_first5": round(sum(losses[:5]) / 5, 3), "loss_last5": round(sum(losses[-5:]) / 5, 3),
               "moments_reset": moments_reset}
        if device.type == "cuda":
            row["cuda_peak_MiB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
