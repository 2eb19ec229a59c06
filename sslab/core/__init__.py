"""The shared trainer core: registry, config, trainer, distributed, checkpoints, schedules, EMA, metrics."""
