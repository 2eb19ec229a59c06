"""Low-resource ASR evaluation with CTC (Graves et al. 2006): a frozen-feature CTC probe and CTC fine-tuning.

* :class:`CharVocab` — characters of the (normalised) training transcripts + the CTC blank (index 0);
  the word separator is the space character.
* :func:`greedy_decode` — best path: argmax per frame, merge repeats, drop blanks (Graves et al. 2006, sec. 3.2).
* :func:`error_rates` — CER / WER = total edit distance / total reference length, with
  ``torchaudio.functional.edit_distance`` (Levenshtein; substitutions + insertions + deletions).
* :func:`train_ctc_probe` — a linear CTC head over frozen frame features (SUPERB's "PR/ASR with a frozen
  upstream", Yang et al. 2021, reduced to a linear layer), trained on a labelled subset.
* :class:`CTCModel` / :func:`finetune_ctc` — the same linear head on top of an sslab speech encoder's
  trainable part (wav2vec 2.0 fine-tuning, Baevski et al. 2020 sec. 4.3: the conv feature encoder stays
  frozen, the transformer is trained unless ``freeze_encoder``; SpecAugment-style time masks with the
  encoder's mask embedding). The encoder must offer ``front(inputs) -> (features, frame_mask)`` (frozen),
  ``back(features, frame_mask, layer, mask) -> tokens``, ``front_parameters()`` and ``dim``
  (:class:`sslab.encoders.wav2vec2.Wav2Vec2Encoder` does). Because the front is frozen, its output is
  computed once per clip (:func:`front_features`) and fine-tuning runs only the back.

Label budgets are minutes of transcribed audio (10 min / 1 h / 10 h in Libri-light, Kahn et al. 2020).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sslab.datasets.audio_transcribed import normalize_transcript

BLANK = "<blank>"


@dataclass
class CTCConfig:
    """``data.ctc`` of a speech experiment (``experiments/speech/wav2vec2_czech.yaml``)."""

    label_minutes: List[float] = field(default_factory=lambda: [10.0, 30.0])
    test_fraction: float = 0.2  # share of transcribed audio in held-out levels
    split_seed: int = 0  # the level split is the same for every model seed
    test_levels: Optional[List[str]] = None  # explicit held-out levels (overrides test_fraction / split_seed)
    layer: int = -1  # frozen features for the probe: -1 = last transformer block
    probe_epochs: int = 40
    probe_lr: float = 3e-3
    finetune_epochs: int = 15
    finetune_lr: float = 1e-3  # encoder (transformer + feature projection)
    finetune_head_lr: float = 1e-2  # the linear head
    finetune_from_probe: bool = True  # start fine-tuning from the CTC probe's head (head-first, then all)
    batch_size: int = 8
    mask_time_prob: float = 0.05  # SpecAugment time masks during fine-tuning (HF Wav2Vec2 default)
    mask_time_length: int = 10
    floors: List[str] = field(default_factory=lambda: ["mfcc", "logmel"])


# --------------------------------------------------------------------------- vocabulary, decoding, scoring


class CharVocab:
    """Blank (0) + the sorted characters of normalised training transcripts."""

    def __init__(self, chars: Iterable[str]) -> None:
        chars = sorted(set(chars))
        if not chars:
            raise ValueError("CTC vocabulary: no characters")
        if any(len(c) != 1 for c in chars):
            raise ValueError(f"CTC vocabulary: entries must be single characters, got {[c for c in chars if len(c) != 1][:3]}")
        self.symbols: List[str] = [BLANK] + chars
        self.index: Dict[str, int] = {c: i for i, c in enumerate(self.symbols)}

    @classmethod
    def from_texts(cls, texts: Iterable[str], normalize: Callable[[str], str] = normalize_transcript) -> "CharVocab":
        return cls(ch for t in texts for ch in normalize(t))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> List[int]:
        """Ids of an already normalised text; a character outside the vocabulary raises (training texts
        define the vocabulary, so this only happens for held-out text)."""
        unknown = sorted({c for c in text if c not in self.index})
        if unknown:
            raise KeyError(f"CTC vocabulary: characters {unknown} not in the training transcripts")
        return [self.index[c] for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.symbols[i] for i in ids if i != 0)


def greedy_decode(log_probs: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> List[List[int]]:
    """Best-path decoding of ``[B, T, V]`` scores: argmax, merge repeats, drop blank (0)."""
    best = log_probs.argmax(-1)
    out = []
    for b in range(best.shape[0]):
        seq = best[b, : int(lengths[b])] if lengths is not None else best[b]
        seq = torch.unique_consecutive(seq)
        out.append([int(i) for i in seq if int(i) != 0])
    return out


def error_rates(hyps: Sequence[str], refs: Sequence[str]) -> Dict[str, float]:
    """Corpus CER and WER: summed Levenshtein distances over summed reference lengths
    (characters incl. spaces / whitespace-split words), via ``torchaudio.functional.edit_distance``."""
    from torchaudio.functional import edit_distance

    if len(hyps) != len(refs):
        raise ValueError(f"error_rates: {len(hyps)} hypotheses but {len(refs)} references")
    char_err = sum(edit_distance(list(r), list(h)) for h, r in zip(hyps, refs))
    word_err = sum(edit_distance(r.split(), h.split()) for h, r in zip(hyps, refs))
    n_char = sum(len(r) for r in refs)
    n_word = sum(len(r.split()) for r in refs)
    if n_char == 0:
        raise ValueError("error_rates: references are empty")
    return {"cer": char_err / n_char, "wer": word_err / max(n_word, 1),
            "char_errors": int(char_err), "ref_chars": int(n_char)}


def trivial_references(refs: Sequence[str]) -> Dict[str, float]:
    """CER of hypotheses that recognise nothing, to read a CER table against: ``empty`` (1.0), and two
    that are told the number of words of each reference (an oracle no model has): ``spaces`` (only
    the word separators) and ``e_per_word`` (one ``e``, the most frequent Czech letter, per word)."""
    norm = [normalize_transcript(r) for r in refs]
    return {"empty": error_rates([""] * len(norm), norm)["cer"],
            "spaces": error_rates([" " * r.count(" ") for r in norm], norm)["cer"],
            "e_per_word": error_rates([" ".join("e" * len(r.split())) for r in norm], norm)["cer"]}


def ctc_feasible(num_frames: int, target: Sequence[int]) -> bool:
    """A CTC path exists: frames >= labels + repeated neighbours (a blank must separate repeats)."""
    repeats = sum(1 for a, b in zip(target, target[1:]) if a == b)
    return num_frames >= len(target) + repeats


# --------------------------------------------------------------------------- shared training loop


def _pad(seqs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([s.shape[0] for s in seqs], dtype=torch.long)
    out = seqs[0].new_zeros(len(seqs), int(lengths.max()), *seqs[0].shape[1:])
    for i, s in enumerate(seqs):
        out[i, : s.shape[0]] = s
    return out, lengths


def _targets(ids: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor([i for seq in ids for i in seq], dtype=torch.long),
            torch.tensor([len(seq) for seq in ids], dtype=torch.long))


def prepare_targets(feats: Sequence[torch.Tensor], texts: Sequence[str], vocab: CharVocab
                    ) -> Tuple[List[int], List[List[int]], int]:
    """Indices of trainable clips, their label ids, and how many were left out because no CTC path
    fits their frames (clip too short for its text) — counted, never silently."""
    keep, ids, dropped = [], [], 0
    for i, (f, t) in enumerate(zip(feats, texts)):
        target = vocab.encode(normalize_transcript(t))
        if not target:
            dropped += 1
            continue
        if not ctc_feasible(f.shape[0], target):
            dropped += 1
            continue
        keep.append(i)
        ids.append(target)
    if not keep:
        raise ValueError("CTC: no training clip has enough frames for its transcript")
    return keep, ids, dropped


def _fit(model: nn.Module, forward: Callable[[List[int], bool], Tuple[torch.Tensor, torch.Tensor]],
         ids: Sequence[Sequence[int]], epochs: int, lr: float, batch_size: int, seed: int,
         weight_decay: float = 0.0, lr_scales: Optional[Dict[str, float]] = None) -> List[float]:
    """AdamW + linear warmup (10%) / linear decay over ``epochs`` passes; CTC loss averaged over target
    lengths (PyTorch ``reduction='mean'``). ``forward(batch_indices, train) -> (log_probs [B, T, V],
    frame lengths [B])``; ``lr_scales`` maps a parameter-name prefix to an LR factor. Returns the mean
    loss per epoch."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    groups: Dict[float, List[nn.Parameter]] = {}
    for n, p in named:
        scale = next((f for prefix, f in (lr_scales or {}).items() if n.startswith(prefix)), 1.0)
        groups.setdefault(scale, []).append(p)
    opt = torch.optim.AdamW([{"params": ps, "lr": lr * f} for f, ps in groups.items()], lr=lr,
                            weight_decay=weight_decay)
    n = len(ids)
    steps = epochs * math.ceil(n / batch_size)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
    g = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=g).tolist()
        total, count = 0.0, 0
        for k in range(0, n, batch_size):
            idx = order[k: k + batch_size]
            log_probs, lengths = forward(idx, True)
            targets, target_lengths = _targets([ids[i] for i in idx])
            loss = F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths,
                              blank=0, reduction="mean", zero_infinity=True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history.append(total / count)
    model.eval()
    return history


def _evaluate(forward: Callable[[List[int], bool], Tuple[torch.Tensor, torch.Tensor]], n: int,
              refs: Sequence[str], vocab: CharVocab, batch_size: int) -> Dict[str, Any]:
    hyps: List[str] = []
    with torch.no_grad():
        for k in range(0, n, batch_size):
            idx = list(range(k, min(n, k + batch_size)))
            log_probs, lengths = forward(idx, False)
            hyps.extend(vocab.decode(seq) for seq in greedy_decode(log_probs, lengths))
    norm_refs = [normalize_transcript(r) for r in refs]
    out: Dict[str, Any] = error_rates(hyps, norm_refs)
    out["examples"] = [{"ref": r, "hyp": h} for r, h in list(zip(norm_refs, hyps))[:3]]
    out["n_test"] = n
    if all(h == "" for h in hyps):
        out["degenerate"] = "empty output for every test clip (blank only)"
    return out


# --------------------------------------------------------------------------- frozen-feature CTC probe


def train_ctc_probe(train_feats: Sequence[torch.Tensor], train_texts: Sequence[str],
                    test_feats: Sequence[torch.Tensor], test_texts: Sequence[str], vocab: CharVocab,
                    epochs: int = 40, lr: float = 3e-3, batch_size: int = 8, seed: int = 0,
                    return_head: bool = False) -> Any:
    """Linear CTC head over frozen frame features ``[T_i, D]`` (standardised with the training frames'
    mean / std); CER / WER on the test clips by greedy decoding. ``return_head=True`` returns
    ``(result, head)`` with the standardisation folded into ``head`` (it maps raw features), the warm
    start of :func:`finetune_ctc` (linear probing then fine-tuning, Kumar et al. 2022)."""
    keep, ids, dropped = prepare_targets(train_feats, train_texts, vocab)
    tr = [train_feats[i].float() for i in keep]
    cat = torch.cat(tr)
    mean, std = cat.mean(0), cat.std(0).clamp(min=1e-5)
    torch.manual_seed(seed)
    head = nn.Linear(cat.shape[1], len(vocab))

    def run(feats: Sequence[torch.Tensor]) -> Callable[[List[int], bool], Tuple[torch.Tensor, torch.Tensor]]:
        def forward(idx: List[int], train: bool) -> Tuple[torch.Tensor, torch.Tensor]:
            x, lengths = _pad([(feats[i].float() - mean) / std for i in idx])
            return head(x).log_softmax(-1), lengths
        return forward

    history = _fit(head, run(tr), ids, epochs, lr, batch_size, seed)
    result = _evaluate(run(list(test_feats)), len(test_feats), test_texts, vocab, 4 * batch_size)
    result.update({"n_train": len(keep), "n_dropped_short": dropped, "train_loss": history[-1],
                   "train_loss_first": history[0]})
    if not return_head:
        return result
    raw = nn.Linear(cat.shape[1], len(vocab))
    with torch.no_grad():  # W((x - m) / s) + b = (W / s) x + (b - W (m / s))
        raw.weight.copy_(head.weight / std)
        raw.bias.copy_(head.bias - head.weight @ (mean / std))
    return result, raw


# --------------------------------------------------------------------------- fine-tuning


class CTCModel(nn.Module):
    """Linear CTC head on an sslab speech encoder. The encoder's front (conv feature encoder) is always
    frozen; ``freeze_encoder=True`` freezes the rest too (then only the head learns)."""

    def __init__(self, encoder: nn.Module, vocab_size: int, layer: int = -1, freeze_encoder: bool = False,
                 mask_time_prob: float = 0.0, mask_time_length: int = 10) -> None:
        super().__init__()
        for name in ("front", "back", "front_parameters", "dim"):
            if not hasattr(encoder, name):
                raise TypeError(f"CTC fine-tuning needs an encoder with front/back/front_parameters/dim; "
                                f"{type(encoder).__name__} has no {name!r}")
        self.encoder, self.layer = encoder, layer
        self.freeze_encoder = freeze_encoder
        self.mask_time_prob, self.mask_time_length = mask_time_prob, mask_time_length
        self.head = nn.Linear(int(encoder.dim), vocab_size)
        for p in encoder.parameters():
            p.requires_grad_(not freeze_encoder)
        for p in encoder.front_parameters():
            p.requires_grad_(False)

    def _time_mask(self, frame_mask: torch.Tensor) -> Optional[torch.Tensor]:
        if not (self.training and self.mask_time_prob > 0 and not self.freeze_encoder):
            return None
        from transformers.models.wav2vec2.modeling_wav2vec2 import _compute_mask_indices

        m = _compute_mask_indices(tuple(frame_mask.shape), self.mask_time_prob, self.mask_time_length,
                                  attention_mask=frame_mask.long(), min_masks=2)
        return torch.from_numpy(m).to(frame_mask.device) & frame_mask

    def forward_front(self, front: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Log-probabilities ``[B, N, V]`` from cached front features."""
        tokens = self.encoder.back(front, frame_mask, self.layer, self._time_mask(frame_mask))
        return self.head(tokens).log_softmax(-1)

    def forward(self, inputs: Any) -> Tuple[torch.Tensor, torch.Tensor]:
        """Waveform batch -> (log-probabilities ``[B, N, V]``, frame lengths ``[B]``)."""
        with torch.no_grad():
            front, frame_mask = self.encoder.front(inputs)
        return self.forward_front(front, frame_mask), frame_mask.sum(-1)


@torch.no_grad()
def front_features(encoder: nn.Module, waves: Sequence[torch.Tensor], batch_size: int = 8) -> List[torch.Tensor]:
    """Frozen front output ``[N_i, C]`` of each (normalised) waveform, batched by length, unpadded."""
    from sslab.datasets.audio import AudioCollator

    encoder.eval()
    out: List[Optional[torch.Tensor]] = [None] * len(waves)
    order = sorted(range(len(waves)), key=lambda i: waves[i].numel())
    collate = AudioCollator("pad")
    for k in range(0, len(order), batch_size):
        idx = order[k: k + batch_size]
        batch = collate([{"input_values": waves[i], "index": i} for i in idx])
        front, frame_mask = encoder.front(batch)
        for j, i in enumerate(idx):
            out[i] = front[j, : int(frame_mask[j].sum())].clone()
    return out  # type: ignore[return-value]


@torch.no_grad()
def back_features(encoder: nn.Module, fronts: Sequence[torch.Tensor], layer: int = -1,
                  batch_size: int = 16) -> List[torch.Tensor]:
    """Frozen frame features ``[N_i, D]`` of ``layer`` from cached front features."""
    encoder.eval()
    out = []
    for k in range(0, len(fronts), batch_size):
        x, lengths = _pad(fronts[k: k + batch_size])
        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        tokens = encoder.back(x, mask, layer)
        out.extend(tokens[j, : int(n)].clone() for j, n in enumerate(lengths))
    return out


def finetune_ctc(encoder: nn.Module, train_fronts: Sequence[torch.Tensor], train_texts: Sequence[str],
                 test_fronts: Sequence[torch.Tensor], test_texts: Sequence[str], vocab: CharVocab,
                 layer: int = -1, freeze_encoder: bool = False, epochs: int = 15, lr: float = 1e-3,
                 head_lr: Optional[float] = None, batch_size: int = 8, seed: int = 0,
                 mask_time_prob: float = 0.05, mask_time_length: int = 10,
                 init_head: Optional[nn.Linear] = None) -> Dict[str, Any]:
    """CTC fine-tuning of ``encoder`` (modified in place) from cached front features; CER / WER on test.
    ``lr`` for the encoder, ``head_lr`` (default ``lr``) for the linear head. ``init_head``: start from a
    trained head (e.g. the CTC probe's, ``train_ctc_probe(..., return_head=True)``) instead of a fresh one —
    the head-first stage of wav2vec 2.0 fine-tuning (fairseq ``freeze_finetune_updates``), which moves the
    fine-tuning past CTC's all-blank plateau within a short budget."""
    keep, ids, dropped = prepare_targets(train_fronts, train_texts, vocab)
    tr = [train_fronts[i] for i in keep]
    torch.manual_seed(seed)
    model = CTCModel(encoder, len(vocab), layer, freeze_encoder, mask_time_prob, mask_time_length)
    if init_head is not None:
        if tuple(init_head.weight.shape) != tuple(model.head.weight.shape):
            raise ValueError(f"init_head: weight shape {tuple(init_head.weight.shape)} != "
                             f"{tuple(model.head.weight.shape)} (encoder dim x vocabulary)")
        model.head.load_state_dict(init_head.state_dict())

    def run(fronts: Sequence[torch.Tensor]) -> Callable[[List[int], bool], Tuple[torch.Tensor, torch.Tensor]]:
        def forward(idx: List[int], train: bool) -> Tuple[torch.Tensor, torch.Tensor]:
            model.train(train)
            x, lengths = _pad([fronts[i] for i in idx])
            mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
            return model.forward_front(x, mask), lengths
        return forward

    head_lr = lr if head_lr is None else head_lr
    history = _fit(model, run(tr), ids, epochs, head_lr, batch_size, seed, weight_decay=0.01,
                   lr_scales={"encoder.": lr / head_lr})
    result = _evaluate(run(list(test_fronts)), len(test_fronts), test_texts, vocab, 4 * batch_size)
    result.update({"n_train": len(keep), "n_dropped_short": dropped, "train_loss": history[-1],
                   "train_loss_first": history[0], "freeze_encoder": freeze_encoder,
                   "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad)})
    return result


# --------------------------------------------------------------------------- classical floor


def floor_frames(wave: torch.Tensor, kind: str, sample_rate: int = 16000, hop: int = 320) -> torch.Tensor:
    """Classical frame features ``[N, F]`` at the encoder's frame rate (hop 320 = 20 ms at 16 kHz,
    25 ms window): ``mfcc`` (13 coefficients + deltas + delta-deltas, 39) or ``logmel`` (40 log-mel bands)."""
    import torchaudio.functional as AF
    import torchaudio.transforms as T

    if kind == "mfcc":
        mfcc = T.MFCC(sample_rate, n_mfcc=13, melkwargs={"n_fft": 400, "win_length": 400, "hop_length": hop,
                                                        "n_mels": 40, "center": False})(wave)
        feats = torch.cat([mfcc, AF.compute_deltas(mfcc), AF.compute_deltas(AF.compute_deltas(mfcc))], 0)
    elif kind == "logmel":
        mel = T.MelSpectrogram(sample_rate, n_fft=400, win_length=400, hop_length=hop, n_mels=40, center=False)(wave)
        feats = torch.log(mel + 1e-6)
    else:
        raise ValueError(f"floor feature kind must be 'mfcc' or 'logmel', got {kind!r}")
    return feats.T.contiguous()
