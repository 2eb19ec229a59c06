"""Run by torchrun in test_trainer.py: train the tiny objective and save the final full state dict."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from core_fixtures import RegressionData, make_cfg, make_objective  # noqa: E402

from sslab.core import distributed as dist_utils  # noqa: E402
from sslab.core.trainer import Trainer  # noqa: E402

run_dir, batch, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cfg = make_cfg(run_dir, ["train.steps=6", f"train.batch_size={batch}", f"train.distributed={mode}"])
trainer = Trainer(make_objective(), RegressionData(), None, cfg, run_dir)
metrics = trainer.fit()
state, _ = trainer._model_and_optim_state()  # full (unsharded) state under FSDP: collective
if trainer.is_main:
    torch.save({"state": {k: v.detach().cpu() for k, v in state.items()}, "loss": metrics["loss"]},
               run_dir / "final.pt")
dist_utils.cleanup()
