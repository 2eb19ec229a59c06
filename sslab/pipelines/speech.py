"""``speech`` pipeline: audio file -> mono -> resample to ``sample_rate`` -> checks (silence, minimum
length) -> optional fixed ``chunk_seconds`` chunks (the probe's items) -> per-item zero mean / unit variance
(HF ``zero_mean_unit_var_norm``) -> right zero padding + attention mask -> wav2vec 2.0 layer ``layer``,
mean over real frames (Baevski et al. 2020)."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from sslab.core.pipeline import InputMismatch, InputPipeline, PathLike, expand_paths
from sslab.core.registry import PIPELINES


@PIPELINES.register("speech")
class SpeechPipeline(InputPipeline):
    """Spec keys: ``sample_rate``, ``min_seconds``, ``silence_threshold``, ``chunk_seconds`` (null: whole
    files), ``layer``, ``level``. Other rates are resampled (torchaudio sinc), as in training."""

    usage = 'enc.embed_raw(wave, sample_rate=sr)   # mono [T]; one row per chunk'

    def _chunks(self, wave: torch.Tensor) -> List[Tuple[int, int]]:
        cs: Optional[float] = self.spec.get("chunk_seconds")
        if not cs:
            return [(0, wave.numel())]
        n = int(round(float(cs) * int(self.spec["sample_rate"])))
        L = wave.numel()
        starts = list(range(0, max(L - n, 0) + 1, n)) if L >= n else [0]
        return [(s, s + n) for s in starts]

    def _items(self, wave: torch.Tensor, where: str) -> List[Tuple[str, Dict[str, torch.Tensor]]]:
        from sslab.datasets.audio import check_waveform, normalize_waveform

        sr = int(self.spec["sample_rate"])
        check_waveform(wave, where, sr, float(self.spec.get("min_seconds", 0.0)),
                       float(self.spec.get("silence_threshold", 1e-4)))
        norm = normalize_waveform if self.spec.get("normalize", True) else (lambda w: w)
        return [(f"{where}@{a}:{b}", {"input_values": norm(wave[a:b])}) for a, b in self._chunks(wave)]

    def preprocess(self, raw: Any, sample_rate: Optional[int] = None, **meta: Any) -> List[Dict[str, torch.Tensor]]:
        """``raw``: a mono waveform ``[T]`` (float, full scale 1.0); ``sample_rate`` is required (resampled to
        the encoder's rate). Long inputs are cut into ``chunk_seconds`` chunks as in the probe."""
        import torchaudio.functional as AF

        wave = torch.as_tensor(raw, dtype=torch.float32)
        if wave.dim() != 1:
            raise InputMismatch(f"speech input must be a mono waveform [T], got shape {tuple(wave.shape)}")
        if sample_rate is None:
            raise InputMismatch(f"speech input: pass sample_rate= (the encoder resamples to {self.spec['sample_rate']} Hz)")
        if int(sample_rate) != int(self.spec["sample_rate"]):
            wave = AF.resample(wave, orig_freq=int(sample_rate), new_freq=int(self.spec["sample_rate"]))
        return [item for _, item in self._items(wave, "speech input")]

    def read(self, paths: Sequence[PathLike]) -> Iterator[Tuple[str, Any]]:
        """Audio files / folders (``.wav``, ``.flac``, ``.ogg``; recursive); rows ``file@start:stop`` (samples
        at ``sample_rate``)."""
        from sslab.datasets.audio import AUDIO_EXTENSIONS, load_audio

        for path in expand_paths(paths, AUDIO_EXTENSIONS):
            yield from self._items(load_audio(path, int(self.spec["sample_rate"])), str(path))

    def collate(self, items: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        from sslab.datasets.audio import AudioCollator

        batch = AudioCollator("pad")([{"input_values": it["input_values"], "index": i} for i, it in enumerate(items)])
        return {"input_values": batch["input_values"], "attention_mask": batch["attention_mask"]}

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        return encoder.embed(inputs, layer=self.spec.get("layer"), level=self.spec.get("level", "utterance"))

    def describe(self) -> List[str]:
        s = self.spec
        return [f"- mono audio at {s['sample_rate']} Hz (other rates resampled with torchaudio); at least "
                f"{s.get('min_seconds')} s; silent clips (peak < {s.get('silence_threshold')}) refused",
                "- " + (f"cut into {s['chunk_seconds']} s chunks (the probe's items)" if s.get("chunk_seconds")
                        else "whole files"),
                "- each item normalised to zero mean, unit variance" if s.get("normalize", True) else "- no normalisation",
                "- batches right-padded with an attention mask",
                f"- features: layer {s.get('layer')} ({'encoder default' if s.get('layer') is None else 'hidden'}), "
                f"{s.get('level')} level (mean over real frames)"]
