"""WordPiece tokenizer training with HF ``tokenizers``, wrapped as a ``PreTrainedTokenizerFast`` so
that transformers' collators (``DataCollatorForLanguageModeling``) work with it.

The special-token set is fixed so that one tokenizer serves every text objective: BERT tokens,
UL2 mode tokens ``[R] [S] [X]`` (Tay et al. 2023, UL2 Sec. 3.1.2) and span sentinels
``[X0]..[X{n-1}]``, MeCo's metadata separator ``[META]`` and conditional-training control tokens
``[GOOD] [BAD]`` (Korbak et al. 2023).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Union

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
MODE_TOKENS = ("[R]", "[S]", "[X]")
META, GOOD, BAD = "[META]", "[GOOD]", "[BAD]"
NUM_SENTINELS = 48
# fixed ids (special tokens come first in the vocabulary, in this order; checked on train/load)
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
MODE_IDS = {"R": 5, "S": 6, "X": 7}
META_ID, GOOD_ID, BAD_ID = 8, 9, 10
SENTINEL_BASE = 11
NUM_SPECIAL = SENTINEL_BASE + NUM_SENTINELS


def sentinel(i: int) -> str:
    return f"[X{i}]"


def special_tokens(num_sentinels: int = NUM_SENTINELS) -> List[str]:
    return [PAD, UNK, CLS, SEP, MASK, *MODE_TOKENS, META, GOOD, BAD] + [sentinel(i) for i in range(num_sentinels)]


def _wrap(tok):  # type: ignore[no-untyped-def]
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens()
    wrong = [(t, tok.token_to_id(t), i) for i, t in enumerate(specials) if tok.token_to_id(t) != i]
    if wrong:
        raise ValueError(f"tokenizer special tokens are not at the fixed sslab ids (token, id, expected): {wrong[:5]}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, pad_token=PAD, cls_token=CLS,
                                   sep_token=SEP, mask_token=MASK, model_max_length=1_000_000)
    fast.add_special_tokens({"additional_special_tokens": specials[5:]})
    return fast


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2,
                    lowercase: bool = True):  # -> PreTrainedTokenizerFast
    """Train a BERT-style WordPiece tokenizer (Wu et al. 2016) on ``texts``.

    Not bit-reproducible: HF ``tokenizers`` breaks frequency ties in hash order, so two trainings
    on one corpus can differ in a few rare merges. A run therefore saves its ``tokenizer.json`` and
    everything after (probes, averaging) reuses that file. Umlauts are kept (``strip_accents=False``): PTB-XL reports
    are German. The vocabulary may come out smaller than ``vocab_size`` on a small corpus.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = special_tokens()
    if vocab_size <= len(specials) + 30:
        raise ValueError(f"vocab_size={vocab_size} is too small: {len(specials)} special tokens plus an alphabet")
    tok = Tokenizer(models.WordPiece(unk_token=UNK))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=False, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=specials, show_progress=False)
    texts = list(texts)
    if not texts:
        raise ValueError("cannot train a tokenizer on an empty corpus")
    tok.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tok.token_to_id(CLS), tok.token_to_id(SEP)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", pair=f"{CLS} $A {SEP} $B {SEP}", special_tokens=[(CLS, cls_id), (SEP, sep_id)])
    return _wrap(tok)


def save_tokenizer(tokenizer, path: Union[str, Path]) -> Path:  # type: ignore[no-untyped-def]
    """Write the tokenizer as one ``tokenizer.json`` file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tokenizer.backend_tokenizer.save(str(tmp))
    tmp.replace(path)
    return path


def load_tokenizer(path: Union[str, Path]):  # type: ignore[no-untyped-def]
    """Load a ``tokenizer.json`` written by :func:`save_tokenizer`."""
    from tokenizers import Tokenizer

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file not found")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:
        raise ValueError(f"{path}: not a valid tokenizers JSON file ({err})") from err
    missing = [t for t in special_tokens() if tok.token_to_id(t) is None]
    if missing:
        raise ValueError(f"{path}: tokenizer lacks sslab special tokens {missing[:5]}")
    return _wrap(tok)


def corpus_fingerprint(texts: Sequence[str], vocab_size: int, lowercase: bool) -> str:
    h = hashlib.sha256(f"{vocab_size}|{lowercase}|{len(texts)}".encode())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def cached_tokenizer(texts: Sequence[str], vocab_size: int, cache_dir: Optional[Union[str, Path]] = None,
                     lowercase: bool = True):  # type: ignore[no-untyped-def]
    """Train the tokenizer for exactly this corpus and settings, or reuse the one cached in
    ``cache_dir`` under the corpus fingerprint (which also makes reruns use identical ids)."""
    if cache_dir is None:
        return train_tokenizer(texts, vocab_size=vocab_size, lowercase=lowercase)
    path = Path(cache_dir) / f"tokenizer-{corpus_fingerprint(texts, vocab_size, lowercase)}.json"
    if path.is_file():
        return load_tokenizer(path)
    tok = train_tokenizer(texts, vocab_size=vocab_size, lowercase=lowercase)
    save_tokenizer(tok, path)
    return tok
