"""Report text tower for ECG-language pretraining (MELP, Pan et al. 2025, Sec. 3.1 "cardiology
language model"): a WordPiece tokenizer trained on the report corpus and a small BERT encoder built
from a ``transformers.BertConfig`` (no download), optionally further pretrained with masked language
modelling on the reports (Devlin et al. 2019, MLM: 15 % of tokens, 80/10/10 replacement); or any
local HF-format encoder folder (``pretrained_path``, loaded with ``local_files_only=True``).

Tokenizer: the text engineer's ``sslab.datasets.text_tokenizer`` (BERT normaliser with lowercasing
but ``strip_accents=False``: German umlauts and Swedish/Danish letters survive; WordPiece splits the
long German compounds of PTB-XL, e.g. ``sinusrhythmus`` -> ``sinus ##rhythmus``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch import nn

from sslab.core.registry import ENCODERS


def report_tokenizer(texts: Sequence[str], vocab_size: int = 2000, cache_dir: Optional[Union[str, Path]] = None,
                     path: Optional[Union[str, Path]] = None):  # -> PreTrainedTokenizerFast
    """Tokenizer for reports: load ``path`` (a ``tokenizer.json`` or an HF folder) if given, else train a
    WordPiece vocabulary on ``texts`` (cached by corpus fingerprint in ``cache_dir``)."""
    if path:
        p = Path(path)
        if p.is_dir():
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        from sslab.datasets.text_tokenizer import load_tokenizer

        return load_tokenizer(p)
    from sslab.datasets.text_tokenizer import cached_tokenizer

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("report_tokenizer: no non-empty reports to train a tokenizer on")
    return cached_tokenizer(texts, vocab_size=vocab_size, cache_dir=cache_dir)


@ENCODERS.register("report_bert")
class ReportTextEncoder(nn.Module):
    """BERT encoder over report tokens: ``forward({"input_ids", "attention_mask"}) -> [B, L, dim]``;
    ``pool`` takes the ``[CLS]`` token. ``pretrained_path`` loads a local HF-format encoder instead."""

    def __init__(self, vocab_size: int = 2000, dim: int = 256, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, max_len: int = 128, dropout: float = 0.1, pad_id: int = 0,
                 pretrained_path: str = "") -> None:
        super().__init__()
        from transformers import AutoModel, BertConfig, BertModel

        if pretrained_path:
            p = Path(pretrained_path)
            if not p.is_dir():
                raise FileNotFoundError(f"report_bert: pretrained_path {p} is not a local HF model folder")
            self.bert = AutoModel.from_pretrained(str(p), local_files_only=True)
        else:
            if dim % heads:
                raise ValueError(f"report_bert: dim {dim} not divisible by heads {heads}")
            config = BertConfig(vocab_size=vocab_size, hidden_size=dim, num_hidden_layers=depth,
                                num_attention_heads=heads, intermediate_size=int(dim * mlp_ratio),
                                max_position_embeddings=max_len, hidden_dropout_prob=dropout,
                                attention_probs_dropout_prob=dropout, pad_token_id=pad_id)
            self.bert = BertModel(config, add_pooling_layer=False)
        self.dim = int(self.bert.config.hidden_size)
        self.max_len = int(self.bert.config.max_position_embeddings)

    def forward(self, inputs: Any, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if isinstance(inputs, torch.Tensor):
            ids, att = inputs, mask
        else:
            ids, att = inputs["input_ids"], inputs.get("attention_mask", mask)
        if ids.shape[1] > self.max_len:
            raise ValueError(f"report_bert: {ids.shape[1]} tokens exceed max_len {self.max_len}")
        return self.bert(input_ids=ids, attention_mask=att).last_hidden_state

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """The ``[CLS]`` (first) token -> ``[B, dim]``."""
        return tokens[:, 0]


class _MLMHead(nn.Module):
    """BERT's transform + decoder, tied to the input embeddings."""

    def __init__(self, encoder: ReportTextEncoder) -> None:
        super().__init__()
        emb = encoder.bert.get_input_embeddings()
        self.transform = nn.Sequential(nn.Linear(encoder.dim, encoder.dim), nn.GELU(), nn.LayerNorm(encoder.dim))
        self.emb = emb
        self.bias = nn.Parameter(torch.zeros(emb.num_embeddings))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.transform(h) @ self.emb.weight.t() + self.bias


def mlm_pretrain(encoder: ReportTextEncoder, tokenizer, texts: Iterable[str], steps: int = 200,
                 batch_size: int = 32, lr: float = 5e-4, mask_prob: float = 0.15, seed: int = 0,
                 progress: Optional[bool] = None, device: Union[str, torch.device] = "cpu") -> List[float]:
    """Further-pretrain ``encoder`` with MLM on ``texts`` (Devlin et al. 2019, Sec. 3.1); returns the
    loss curve. Uses transformers' ``DataCollatorForLanguageModeling`` (80/10/10 replacement)."""
    from tqdm.auto import tqdm

    from sslab.core.progress import show_progress
    from transformers import DataCollatorForLanguageModeling

    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("mlm_pretrain: no non-empty texts")
    enc = tokenizer(texts, truncation=True, max_length=encoder.max_len)
    examples = [{"input_ids": ids} for ids in enc["input_ids"]]
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mask_prob, return_tensors="pt")
    head = _MLMHead(encoder).to(device)
    encoder.to(device).train()
    params = list(encoder.parameters()) + [p for n, p in head.named_parameters() if not n.startswith("emb.")]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    losses: List[float] = []
    for _ in tqdm(range(steps), desc="report MLM", disable=not show_progress(progress)):
        idx = torch.randint(len(examples), (min(batch_size, len(examples)),), generator=gen).tolist()
        batch = collator([examples[i] for i in idx])
        batch = {k: v.to(device) for k, v in batch.items()}
        h = encoder({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})
        logits = head(h)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def text_spec(vocab_size: int, pad_id: int, **kwargs: Any) -> Dict[str, Any]:
    """Keyword arguments of :class:`ReportTextEncoder` from an objective's ``text:`` section."""
    known = {"dim", "depth", "heads", "mlp_ratio", "max_len", "dropout", "pretrained_path"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise ValueError(f"objective.text: unknown key(s) {unknown}; valid: {sorted(known)}")
    return {"vocab_size": vocab_size, "pad_id": pad_id, **kwargs}
