"""Run by torchrun in test_trainer.py: train the tiny objective and save the final parameters."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from core_fixtures import RegressionData, flat_params, make_cfg, make_objective  # noqa: E402

from sslab.core import distributed as dist_utils  # noqa: E402
from sslab.core.trainer import Trainer  # noqa: E402

run_dir, batch = Path(sys.argv[1]), int(sys.argv[2])
cfg = make_cfg(run_dir, ["train.steps=6", f"train.batch_size={batch}"])
objective = make_objective()
trainer = Trainer(objective, RegressionData(), None, cfg, run_dir)
metrics = trainer.fit()
if trainer.is_main:
    torch.save({"params": flat_params(objective), "loss": metrics["loss"]}, run_dir / "final.pt")
dist_utils.cleanup()
