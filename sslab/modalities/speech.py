"""Speech modality plugin: wav2vec 2.0 (continued) pretraining and speaker / language ID probes.

``data:`` section (:class:`SpeechDataConfig`)::

    source: auto          auto = the shared clips (<shared_data>/speech/transcripts.tsv) when present,
                          else generated audio | shared | folder | manifest | synthetic |
                          speech_cs (<shared_data>/speech_cs: Czech dialogs, Ogg Vorbis 22.05 kHz, with
                          transcripts and game levels; pretraining sees the training levels only,
                          untranscribed clips included; the speaker probe trains on training levels and
                          tests on held-out levels; the split is data.ctc.test_fraction / split_seed)
    path: null            audio folder (source: folder) or TSV/CSV manifest (source: manifest)
    max_seconds: 4.0      random crop of long clips;  min_seconds: 0.5 shorter clips are bad input
    on_bad: error         error | skip (counted, listed in the log)
    collate: pad          pad (+ attention mask) | min (crop the batch to its shortest clip, fairseq)
    language_alpha: null  e.g. 0.7: multilingual temperature re-sampling (IndicWav2Vec)
    probe_tasks: [speaker, language]   language ID is dropped when a language has < 2 utterances
    probe_seconds: 2.0    probe items are non-overlapping chunks; the train/test split is by utterance
    probe_layer: null     hidden layer to embed (null: the encoder's ``layer``); probe_level utterance|frame
    probe: {}             transfer: probe clips {source: shared|manifest|synthetic, path, ...} (keys as above)

Transfer (``data.probe``): the probe clips are decoded and resampled to the pretraining ``sample_rate``.
Refused before pretraining (:meth:`SpeechModality.check_probe_compatible`): a ``data.probe.sample_rate``
other than the pretraining one, an unlabelled probe source (``folder``: no speaker/language), a missing
manifest.

Length bucketing: the pretraining dataset exposes ``lengths`` (samples per item after resampling and
cropping, from the validation pass or the file headers; nothing is decoded for it), so
``train.length_bucketing: N`` makes the core sampler group similar lengths (less padding).

The HF checkpoint folder (``Wav2Vec2ForCTC.from_pretrained``-loadable) is written to ``<run>/hf`` by
:meth:`SpeechModality.after_pretrain`, which ``sslab.run.pretrain`` calls on rank 0 after the encoder
export; ``export_hf(run_dir)`` rebuilds it from the sslab export at any time.
"""
from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from sslab.core.config import ConfigError, from_dict
from sslab.core.modality import Modality, ProbeTask
from sslab.core.registry import MODALITIES
from sslab.datasets.audio import (AudioCollator, AudioDataset, AudioItem, normalize_waveform, read_manifest,
                                  scan_folder)
from sslab.datasets.audio_transcribed import level_split, read_transcribed
from sslab.datasets.audio_sampling import TemperatureResampledDataset
from sslab.datasets.audio_synthetic import SyntheticSpeechDataset

log = logging.getLogger(__name__)


def _shared_items(d: "SpeechDataConfig") -> List[AudioItem]:
    return read_manifest(Path(d.shared_data) / "speech" / "transcripts.tsv")


def _manifest_items(d: "SpeechDataConfig") -> List[AudioItem]:
    return read_manifest(d.path)  # type: ignore[arg-type]


def _folder_items(d: "SpeechDataConfig") -> List[AudioItem]:
    return scan_folder(d.path)  # type: ignore[arg-type]


def _speech_cs_items(d: "SpeechDataConfig") -> List[AudioItem]:
    return read_transcribed(Path(d.shared_data) / "speech_cs" / "transcripts.tsv")


# data.source -> clip lister (``synthetic`` generates audio instead; ``auto`` resolves to shared/synthetic)
ITEM_SOURCES: Dict[str, Callable[["SpeechDataConfig"], List[AudioItem]]] = {
    "shared": _shared_items, "manifest": _manifest_items, "folder": _folder_items, "speech_cs": _speech_cs_items}
LEVEL_SPLIT_SOURCES = ("speech_cs",)  # sources split by level: pretraining and probe training never see test levels
SOURCES = ("auto", "synthetic", *ITEM_SOURCES)


@dataclass
class SpeechDataConfig:
    source: str = "auto"
    path: Optional[str] = None
    shared_data: str = "../shared/data"
    sample_rate: int = 16000
    max_seconds: float = 4.0
    min_seconds: float = 0.5
    on_bad: str = "error"
    validate: str = "full"
    cache: bool = True
    collate: str = "pad"
    language_alpha: Optional[float] = None
    epoch_size: Optional[int] = None
    synthetic: Dict[str, Any] = field(default_factory=lambda: {
        "num_speakers": 6, "utts_per_speaker": 6, "min_seconds": 2.0, "max_seconds": 4.0})
    probe_tasks: List[str] = field(default_factory=lambda: ["speaker", "language"])
    probe_seconds: float = 2.0
    probe_test_fraction: float = 0.34
    probe_layer: Optional[int] = None
    probe_level: str = "utterance"
    probe: Dict[str, Any] = field(default_factory=dict)  # transfer: probe clips (source, path, options)
    ctc: Dict[str, Any] = field(default_factory=dict)


def min_samples_for(frames: int, conv_kernel: Sequence[int], conv_stride: Sequence[int]) -> int:
    """Fewest waveform samples from which the conv feature encoder makes ``frames`` frames (inverse of
    ``conv_output_lengths``: each layer outputs ``(n - k) // s + 1``)."""
    n = frames
    for k, st in zip(reversed(list(conv_kernel)), reversed(list(conv_stride))):
        n = (n - 1) * st + k
    return n


def check_min_length(ds: Dataset, conv_kernel: Sequence[int], conv_stride: Sequence[int], mask_length: int) -> None:
    """Every clip must give the masking ``mask_length + 1`` frames; a shorter one is named here, before
    training (``data.min_seconds=0`` let a 12 ms file through to a batch-level error without its name)."""
    if not isinstance(ds, AudioDataset):
        return
    from sslab.datasets.audio import AudioFileError

    need = min_samples_for(mask_length + 1, conv_kernel, conv_stride)
    for item, n in zip(ds.items, ds.lengths):
        if n < need:
            sr = ds.sample_rate
            raise AudioFileError(item.path, f"too short for the model: {n / sr:.3f} s < {need / sr:.3f} s "
                                 f"({need} samples give the {mask_length + 1} frames that objective.mask_length="
                                 f"{mask_length} needs); set data.min_seconds >= {need / sr:.3f} "
                                 "(with data.on_bad: skip to leave such files out)", "too_short")


def _spec_conv(spec: Dict[str, Any]) -> Tuple[List[int], List[int]]:
    """(conv_kernel, conv_stride) of an encoder spec without building the model."""
    if spec.get("name") != "wav2vec2":
        raise ConfigError(f"speech modality needs encoder.name: wav2vec2, got {spec.get('name')!r}")
    cfg: Dict[str, Any] = {}
    if spec.get("pretrained"):
        cfg_file = Path(spec["pretrained"]).expanduser() / "config.json"
        if not cfg_file.is_file():
            raise FileNotFoundError(f"encoder.pretrained: {cfg_file.parent} is not a local HF model folder (no config.json)")
        cfg = json.loads(cfg_file.read_text())
    elif spec.get("config") is not None:
        cfg = dict(spec["config"])
    cfg.update(spec.get("config_overrides") or {})
    from transformers import Wav2Vec2Config

    full = Wav2Vec2Config(**{k: v for k, v in cfg.items() if k in ("conv_kernel", "conv_stride")})
    return list(full.conv_kernel), list(full.conv_stride)


class ProbeChunks(Dataset):
    """Probe items ``({"input_values": [T]}, class index)``: fixed chunks ``(utterance, start, stop)``
    of the corpus' utterances, each normalised on its own."""

    def __init__(self, corpus: Any, chunks: List[Tuple[int, int, int]], labels: List[int]) -> None:
        self.corpus, self.chunks, self.labels = corpus, chunks, labels

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def utterances(self) -> List[int]:
        return [u for u, _, _ in self.chunks]

    def __getitem__(self, i: int) -> Tuple[Dict[str, torch.Tensor], int]:
        utt, start, stop = self.chunks[i]
        return {"input_values": normalize_waveform(self.corpus.waveform(utt)[start:stop])}, self.labels[i]


def collate_probe(items: Sequence[Tuple[Dict[str, torch.Tensor], int]]) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
    batch = AudioCollator("pad")([{"input_values": x["input_values"], "index": i} for i, (x, _) in enumerate(items)])
    return ({"input_values": batch["input_values"], "attention_mask": batch["attention_mask"]},
            torch.tensor([y for _, y in items], dtype=torch.long))


@MODALITIES.register("speech")
class SpeechModality(Modality):
    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.data: SpeechDataConfig = from_dict(SpeechDataConfig, cfg.data, path="data")
        d = self.data
        if d.source not in SOURCES:
            raise ConfigError(f"data.source: expected one of {list(SOURCES)}, got {d.source!r}")
        if d.source in ("folder", "manifest") and not d.path:
            raise ConfigError(f"data.path is required for data.source: {d.source}")
        if d.probe_level not in ("utterance", "frame"):
            raise ConfigError(f"data.probe_level: expected utterance or frame, got {d.probe_level!r}")
        bad = [t for t in d.probe_tasks if t not in ("speaker", "language")]
        if bad:
            raise ConfigError(f"data.probe_tasks: unknown task {bad[0]!r}; choose from speaker, language")
        from sslab.eval.ctc import CTCConfig

        self.ctc: CTCConfig = from_dict(CTCConfig, d.ctc, path="data.ctc")
        self._corpus: Optional[Dataset] = None
        self._items: Optional[Tuple[List[AudioItem], List[AudioItem]]] = None

    # ------------------------------------------------------------------ corpus
    @property
    def resolved_source(self) -> str:
        """The source actually used (``auto`` resolved)."""
        if self.data.source != "auto":
            return self.data.source
        return "shared" if (Path(self.data.shared_data) / "speech" / "transcripts.tsv").is_file() else "synthetic"

    def split_items(self) -> Tuple[List[AudioItem], List[AudioItem]]:
        """``(train, test)`` clips of a level-split source (``speech_cs``): whole game levels held out
        (``data.ctc.test_fraction`` of the transcribed audio, ``data.ctc.split_seed``)."""
        if self.resolved_source not in LEVEL_SPLIT_SOURCES:
            raise ConfigError(f"data.source: {self.resolved_source!r} has no level split "
                              f"(sources with one: {list(LEVEL_SPLIT_SOURCES)})")
        if self._items is None:
            items = ITEM_SOURCES[self.resolved_source](self.data)
            self._items = level_split(items, self.ctc.test_fraction, self.ctc.split_seed, self.ctc.test_levels)
        return self._items

    def _dataset(self, items: Sequence[AudioItem]) -> AudioDataset:
        d = self.data
        return AudioDataset(items, sample_rate=d.sample_rate, max_seconds=d.max_seconds, min_seconds=d.min_seconds,
                            on_bad=d.on_bad, validate=d.validate, cache=d.cache,
                            progress=self.cfg.train.progress if len(items) > 200 else False)

    def corpus(self) -> Dataset:
        """The utterance dataset (``AudioDataset`` or ``SyntheticSpeechDataset``), built once. For a
        level-split source: the training levels only (what pretraining may see)."""
        if self._corpus is None:
            d, src = self.data, self.resolved_source
            if src == "synthetic":
                log.info("speech data: generated audio (SyntheticSpeechDataset %s)", d.synthetic)
                self._corpus = SyntheticSpeechDataset(**d.synthetic, seed=self.cfg.seed, sample_rate=d.sample_rate)
            elif src in LEVEL_SPLIT_SOURCES:
                train, test = self.split_items()
                log.info("speech data: %d clips of %d training levels from %s (%d clips of %d test levels held out)",
                         len(train), len({it.group for it in train}), src, len(test), len({it.group for it in test}))
                self._corpus = self._dataset(train)
            else:
                items = ITEM_SOURCES[src](d)
                log.info("speech data: %d clips from %s", len(items), src)
                self._corpus = self._dataset(items)
        return self._corpus

    def _labels(self, key: str) -> List[Optional[str]]:
        ds = self.corpus()
        if isinstance(ds, SyntheticSpeechDataset):
            return [ds.label(i)[key] for i in range(len(ds))]
        return [getattr(it, key) for it in ds.items]  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ pretraining
    def pretrain_data(self) -> Tuple[Dataset, Optional[Callable[[Sequence[Any]], Any]]]:
        from sslab.objectives.wav2vec2 import Wav2Vec2MaskingCollator

        ds = self.corpus()
        d = self.data
        if d.language_alpha is not None:
            ds = TemperatureResampledDataset(ds, self._labels("language"), self.corpus().durations,  # type: ignore[attr-defined]
                                             alpha=d.language_alpha, num_samples=d.epoch_size, seed=self.cfg.seed)
        obj = {k: v for k, v in self.cfg.objective.items() if k != "name"}
        kernel, stride = _spec_conv(self.cfg.encoder)
        collate = Wav2Vec2MaskingCollator(
            AudioCollator(d.collate), kernel, stride, mask_prob=obj.get("mask_prob", 0.65),
            mask_length=obj.get("mask_length", 10), min_masks=obj.get("min_masks", 2),
            num_negatives=obj.get("num_negatives", 100))
        check_min_length(self.corpus(), kernel, stride, int(obj.get("mask_length", 10)))
        return ds, collate

    def after_pretrain(self, objective: nn.Module, run_dir: Path) -> Path:
        """Write ``<run_dir>/hf`` (HF ``Wav2Vec2ForPreTraining`` folder) from the sslab encoder export.

        Called once on rank 0 by ``sslab.run.pretrain`` after ``<run_dir>/encoder`` is saved. Rebuilding
        from that export (not from ``objective.encoder``) gives the same weights as the export even when
        the live parameters are FSDP shards."""
        out = export_hf(run_dir, Path(run_dir) / "hf")
        log.info("speech: HF checkpoint folder written to %s", out)
        return out

    # ------------------------------------------------------------------ probes
    def check_probe_compatible(self) -> None:
        merged = self.probe_data_config()
        if merged is None:
            return
        d, t = self.data, from_dict(SpeechDataConfig, merged, path="data.probe")
        if t.sample_rate != d.sample_rate:
            raise ConfigError(f"data.probe.sample_rate={t.sample_rate} differs from the pretraining data.sample_rate="
                              f"{d.sample_rate}: the wav2vec2 feature encoder is tied to its rate; leave it unset and "
                              "the probe clips are resampled")
        if t.source == "folder":
            raise ConfigError(f"data.probe.source=folder ({t.path}): a folder scan has no speaker/language labels to "
                              "probe; use a manifest with speaker/language columns")
        if t.source == "manifest" and not (t.path and Path(t.path).is_file()):
            raise ConfigError(f"data.probe.path: manifest {t.path or '(unset)'} not found")
        self.probe_twin()

    def probe_tasks(self) -> List[ProbeTask]:
        twin = self.probe_twin()
        if twin is not None:
            return twin.probe_tasks()
        tasks = []
        for key in self.data.probe_tasks:
            task = self._chunk_task(key)
            if task is not None:
                tasks.append(task)
        return tasks

    def _chunk_task(self, key: str) -> Optional[ProbeTask]:
        """Utterances of classes with >= 2 utterances, split by utterance (stratified), cut into chunks.
        Level-split sources: train = training levels, test = held-out levels (classes present on both)."""
        if self.resolved_source in LEVEL_SPLIT_SOURCES:
            return self._level_task(key)
        ds = self.corpus()
        labels = self._labels(key)
        by_class: Dict[str, List[int]] = defaultdict(list)
        for i, lab in enumerate(labels):
            if lab is not None and not str(lab).startswith("unknown"):
                by_class[str(lab)].append(i)
        dropped = {c: len(v) for c, v in by_class.items() if len(v) < 2}
        classes = sorted(c for c, v in by_class.items() if len(v) >= 2)
        if dropped:
            log.warning("speech probe %s: dropped classes with < 2 utterances: %s", key, dropped)
        if len(classes) < 2:
            log.warning("speech probe %s: fewer than 2 classes with >= 2 utterances; task skipped", key)
            return None
        rng = np.random.default_rng(self.cfg.seed)
        n = int(round(self.data.probe_seconds * self.data.sample_rate))
        splits: Dict[str, Tuple[list, list]] = {"train": ([], []), "test": ([], [])}
        for ci, c in enumerate(classes):
            utts = rng.permutation(by_class[c]).tolist()
            n_test = max(1, int(round(self.data.probe_test_fraction * len(utts))))
            for rank, u in enumerate(utts):
                split = "test" if rank < n_test else "train"
                wave_len = int(round(ds.durations[u] * self.data.sample_rate))  # type: ignore[attr-defined]
                starts = list(range(0, max(wave_len - n, 0) + 1, n)) if wave_len >= n else [0]
                for s in starts:
                    splits[split][0].append((u, s, s + n))
                    splits[split][1].append(ci)
        return ProbeTask(name=f"{key}_id", task="multiclass", train=ProbeChunks(ds, *splits["train"]),
                         test=ProbeChunks(ds, *splits["test"]), collate_fn=collate_probe, class_names=classes)

    def _chunks(self, ds: AudioDataset, utterances: Sequence[int], labels: Sequence[int]) -> ProbeChunks:
        n = int(round(self.data.probe_seconds * self.data.sample_rate))
        chunks, ys = [], []
        for u, y in zip(utterances, labels):
            wave_len = int(round(ds.durations[u] * self.data.sample_rate))
            for s in (range(0, wave_len - n + 1, n) if wave_len >= n else [0]):
                chunks.append((u, s, s + n))
                ys.append(y)
        return ProbeChunks(ds, chunks, ys)

    def _level_task(self, key: str) -> Optional[ProbeTask]:
        """Probe trained on the training levels, tested on the held-out levels; classes with >= 2 training
        clips and >= 1 test clip (the others are dropped and logged)."""
        train_items, test_items = self.split_items()
        train_ds, test_ds = self.corpus(), self._dataset(test_items)
        assert isinstance(train_ds, AudioDataset)
        lab_tr = [getattr(it, key) for it in train_ds.items]
        lab_te = [getattr(it, key) for it in test_ds.items]
        count_tr, count_te = Counter(l for l in lab_tr if l), Counter(l for l in lab_te if l)
        classes = sorted(c for c in count_tr if count_tr[c] >= 2 and count_te[c] >= 1)
        dropped = sorted((set(count_tr) | set(count_te)) - set(classes))
        if dropped:
            log.warning("speech probe %s: dropped %d classes without >= 2 training and >= 1 test clips: %s",
                        key, len(dropped), dropped[:10])
        if len(classes) < 2:
            log.warning("speech probe %s: fewer than 2 classes on both sides of the level split; task skipped", key)
            return None
        index = {c: i for i, c in enumerate(classes)}
        tr = [(u, index[l]) for u, l in enumerate(lab_tr) if l in index]
        te = [(u, index[l]) for u, l in enumerate(lab_te) if l in index]
        return ProbeTask(name=f"{key}_id", task="multiclass", train=self._chunks(train_ds, *zip(*tr)),
                         test=self._chunks(test_ds, *zip(*te)), collate_fn=collate_probe, class_names=classes)

    # ------------------------------------------------------------------ encoder artifact (issue 14)
    def input_pipeline(self) -> Dict[str, Any]:
        """Sample rate, waveform normalisation, minimum length, the probe's chunking and embedding layer."""
        d = self.data
        return {"kind": "speech", "sample_rate": d.sample_rate, "mono": "mean of channels",
                "resample": "torchaudio.functional.resample", "normalize": "zero mean, unit variance per item",
                "min_seconds": d.min_seconds, "silence_threshold": 1e-4, "chunk_seconds": d.probe_seconds,
                "max_seconds_pretraining": d.max_seconds, "layer": d.probe_layer, "level": d.probe_level}

    def embed(self, encoder: nn.Module, inputs: Any) -> torch.Tensor:
        """Mean of layer ``probe_layer`` over real frames (``probe_level: frame``: the centre frame)."""
        return encoder.embed(inputs, layer=self.data.probe_layer, level=self.data.probe_level)  # type: ignore[operator]


def export_hf(run_or_encoder: Union[str, Path], out_dir: Optional[Union[str, Path]] = None) -> Path:
    """Rebuild the HF ``Wav2Vec2ForPreTraining`` folder from an sslab export (run dir or encoder dir)."""
    from sslab.core.export import load_encoder

    encoder = load_encoder(run_or_encoder)
    if not hasattr(encoder, "save_pretrained"):
        raise TypeError(f"{run_or_encoder}: not a wav2vec2 encoder export")
    target = Path(out_dir) if out_dir is not None else Path(run_or_encoder) / "hf"
    return encoder.save_pretrained(target)  # type: ignore[operator]
