"""sslab: self-supervised pretraining for domain data with one shared trainer core."""
from __future__ import annotations

__version__ = "0.1.0"

from sslab.core.export import EncoderLoadError, load_encoder, save_encoder  # noqa: E402
from sslab.core.pipeline import InputMismatch  # noqa: E402

__all__ = ["load_encoder", "save_encoder", "EncoderLoadError", "InputMismatch", "__version__"]
