"""Generated speech-like audio for runs without real data (source-filter synthesis).

Each "speaker" has a fundamental frequency and a vocal-tract length factor that scales formants;
each "language" has its own vowel inventory and syllable rate. An utterance is a sequence of
syllables: a fricative noise burst (sometimes) followed by a voiced vowel = a jittered glottal pulse
train at f0 filtered by three formant resonators (Klatt 1980 style), with amplitude envelopes and
background noise. Speaker identity and language are therefore recoverable from the signal, which
makes speaker-/language-ID probes meaningful on this data. Deterministic per (seed, index).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from sslab.core.registry import DATASETS
from sslab.datasets.audio import TARGET_SR, normalize_waveform

# (F1, F2, F3) in Hz for an adult male vocal tract (Peterson & Barney 1952, rounded)
VOWELS = {
    "i": (270, 2290, 3010), "I": (390, 1990, 2550), "e": (530, 1840, 2480), "ae": (660, 1720, 2410),
    "a": (730, 1090, 2440), "o": (570, 840, 2410), "U": (440, 1020, 2240), "u": (300, 870, 2240),
    "V": (640, 1190, 2390), "3": (490, 1350, 1690),
}
LANGUAGES = {  # vowel inventory, mean syllable seconds, fricative probability
    "syn_a": (["i", "a", "u", "e", "o"], 0.16, 0.5),
    "syn_b": (["I", "ae", "V", "3", "U", "i"], 0.22, 0.25),
    "syn_c": (["a", "i", "u"], 0.12, 0.7),
}


def _resonator(x: np.ndarray, freq: float, bw: float, sr: int) -> np.ndarray:
    from scipy.signal import lfilter

    r = np.exp(-np.pi * bw / sr)
    theta = 2 * np.pi * freq / sr
    a = [1.0, -2 * r * np.cos(theta), r * r]
    return lfilter([1.0 - r], a, x)


def synthesize_utterance(rng: np.random.Generator, f0: float, tract: float, language: str,
                         seconds: float, sr: int = TARGET_SR) -> np.ndarray:
    """One utterance of ``seconds`` seconds (float32, peak ~0.5)."""
    vowels, syl_sec, p_fric = LANGUAGES[language]
    out: List[np.ndarray] = []
    total = int(seconds * sr)
    n = 0
    while n < total:
        if rng.random() < p_fric:  # fricative: band-passed noise
            m = int(sr * rng.uniform(0.03, 0.08))
            noise = rng.standard_normal(m)
            fric = _resonator(noise, rng.uniform(2500, 6000) * tract, 1500, sr) * 0.15
            out.append(fric * np.hanning(m))
            n += m
        m = int(sr * syl_sec * rng.uniform(0.7, 1.3))
        t0 = f0 * rng.uniform(0.9, 1.1)
        glide = np.linspace(1.0, rng.uniform(0.85, 1.15), m)  # intonation
        phase = np.cumsum(t0 * glide / sr)
        pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per glottal period
        src = pulses + 0.02 * rng.standard_normal(m)
        v = VOWELS[vowels[int(rng.integers(len(vowels)))]]
        y = sum(_resonator(src, f * tract, 60 + 40 * k, sr) for k, f in enumerate(v))
        env = np.minimum(1.0, np.minimum(np.arange(m), np.arange(m)[::-1]) / (0.015 * sr))
        out.append(y * env)
        n += m
        if rng.random() < 0.3:  # short pause
            m = int(sr * rng.uniform(0.02, 0.1))
            out.append(np.zeros(m))
            n += m
    wave = np.concatenate(out)[:total]
    wave = wave + 0.003 * rng.standard_normal(total) * np.abs(wave).max()
    return (0.5 * wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)


@DATASETS.register("audio_synthetic")
class SyntheticSpeechDataset(Dataset):
    """``num_speakers x utts_per_speaker`` generated utterances; same item dict as ``AudioDataset``.

    Speaker ``s`` speaks language ``languages[s % len(languages)]``; utterance lengths are uniform
    in ``[min_seconds, max_seconds]``.
    """

    def __init__(self, num_speakers: int = 6, utts_per_speaker: int = 6, min_seconds: float = 2.0,
                 max_seconds: float = 4.0, languages: Optional[List[str]] = None, seed: int = 0,
                 sample_rate: int = TARGET_SR, normalize: bool = True) -> None:
        languages = languages or list(LANGUAGES)
        unknown = [l for l in languages if l not in LANGUAGES]
        if unknown:
            raise ValueError(f"unknown synthetic languages {unknown}; choose from {list(LANGUAGES)}")
        if num_speakers < 1 or utts_per_speaker < 1:
            raise ValueError("need at least one speaker and one utterance per speaker")
        rng = np.random.default_rng(seed)
        self.speakers = [{"f0": float(rng.uniform(85, 250)), "tract": float(rng.uniform(0.85, 1.2)),
                          "language": languages[s % len(languages)]} for s in range(num_speakers)]
        self.utts_per_speaker, self.seed, self.sample_rate, self.normalize = utts_per_speaker, seed, sample_rate, normalize
        self.seconds = rng.uniform(min_seconds, max_seconds, size=num_speakers * utts_per_speaker).tolist()

    def __len__(self) -> int:
        return len(self.speakers) * self.utts_per_speaker

    @property
    def durations(self) -> List[float]:
        return list(self.seconds)

    @property
    def lengths(self) -> List[int]:
        return [int(s * self.sample_rate) for s in self.seconds]

    def label(self, index: int) -> Dict[str, str]:
        spk = index // self.utts_per_speaker
        return {"speaker": f"spk{spk}", "language": self.speakers[spk]["language"]}

    def waveform(self, index: int) -> torch.Tensor:
        spk = self.speakers[index // self.utts_per_speaker]
        rng = np.random.default_rng([self.seed, index])
        wave = synthesize_utterance(rng, spk["f0"], spk["tract"], spk["language"], self.seconds[index], self.sample_rate)
        return torch.from_numpy(wave)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"synthetic speech index {index} out of range [0, {len(self)})")
        wave = self.waveform(index)
        if self.normalize:
            wave = normalize_waveform(wave)
        return {"input_values": wave, "index": index, **self.label(index)}
