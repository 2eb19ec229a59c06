"""Converters of published checkpoints (original ECG-JEPA, HF wav2vec 2.0, timm ViT) into sslab encoder
folders, registered in ``sslab.core.registry.IMPORTERS`` and run by ``sslab import FORMAT CHECKPOINT --out DIR``."""
