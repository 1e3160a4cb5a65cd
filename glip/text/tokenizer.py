"""The bert-base-uncased WordPiece tokenizer, built offline, and caption tokenization as GLIP does it.

Official GLIP loads ``AutoTokenizer.from_pretrained("bert-base-uncased")`` (the fast WordPiece tokenizer:
BERT normaliser with lower-casing *and* accent stripping, BERT pre-tokeniser, ``[CLS] ... [SEP]`` template).
We rebuild exactly that tokenizer from the vocabulary bundled in ``glip/assets`` so nothing is downloaded.

At every forward pass the official model re-tokenizes the raw captions with
``max_length=256, padding="max_length", truncation=True`` (see :func:`tokenize_captions`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

VOCAB_PATH: Path = Path(__file__).resolve().parents[1] / "assets" / "bert-base-uncased-vocab.txt"
#: Size of the bert-base-uncased vocabulary and the ids of its special tokens.
VOCAB_SIZE: int = 30522
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
#: bert-base-uncased's ``model_max_length`` (tokenizer_config.json); GLIP's own limit is ``MAX_QUERY_LEN``.
BERT_MODEL_MAX_LENGTH: int = 512
#: ``MODEL.LANGUAGE_BACKBONE.MAX_QUERY_LEN`` in both GLIP-T and GLIP-L.
MAX_QUERY_LEN: int = 256


class PromptError(ValueError):
    """A caption, class list or span that GLIP cannot ground (empty, punctuation only, too long, ...)."""


def _load_vocab(path: Path) -> dict[str, int]:
    """One token per line; the line number is the id (as ``transformers``' ``load_vocab``)."""
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            vocab[line.rstrip("\n")] = index
    return vocab


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> PreTrainedTokenizerFast:
    """The bert-base-uncased fast tokenizer, built from the bundled vocabulary (never downloads).

    Equivalent to ``AutoTokenizer.from_pretrained("bert-base-uncased")``: BertNormalizer(clean_text,
    handle_chinese_chars, strip_accents=None -> follows lowercase=True, i.e. accents are stripped:
    "crème brûlée" -> "creme brulee"), BertPreTokenizer, WordPiece("##", unk "[UNK]", 100 chars per word),
    ``[CLS] $A [SEP]`` post-processing, ``model_max_length`` 512. Cached: every call returns the same object.
    """
    vocab = _load_vocab(VOCAB_PATH)
    specials = {"[PAD]": PAD_ID, "[UNK]": UNK_ID, "[CLS]": CLS_ID, "[SEP]": SEP_ID, "[MASK]": MASK_ID}
    if len(vocab) != VOCAB_SIZE or any(vocab.get(tok) != idx for tok, idx in specials.items()):
        raise RuntimeError(f"{VOCAB_PATH} is not the bert-base-uncased vocabulary ({len(vocab)} entries)")

    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
        model_max_length=BERT_MODEL_MAX_LENGTH,
        padding_side="right",
        truncation_side="right",
        do_lower_case=True,
    )
    # the special tokens must keep their vocabulary ids (not be appended as new tokens)
    got = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id]
    if got != [PAD_ID, UNK_ID, CLS_ID, SEP_ID] or len(tokenizer) != VOCAB_SIZE:
        raise RuntimeError(
            f"tokenizer special-token ids {got} / size {len(tokenizer)} differ from bert-base-uncased"
        )
    return tokenizer


def check_caption(caption: str, index: int | None = None) -> None:
    """Raise :class:`PromptError` for a caption that cannot be grounded: not a string, empty (or only
    whitespace) or without a single letter or digit (only punctuation/symbols)."""
    where = "caption" if index is None else f"caption {index}"
    if not isinstance(caption, str):
        raise PromptError(f"{where} must be a str, got {type(caption).__name__}")
    if not caption.strip():
        raise PromptError(f"{where} is empty: give at least one phrase or class name")
    if not any(ch.isalnum() for ch in caption):
        raise PromptError(f"{where} {caption!r} has only punctuation: give at least one phrase or class name")


def count_tokens(caption: str) -> int:
    """Number of tokens of ``caption`` without truncation, including [CLS] and [SEP]."""
    return len(get_tokenizer()(caption, add_special_tokens=True, truncation=False)["input_ids"])


@dataclass
class TokenizedCaptions:
    """Captions tokenized as the model consumes them.

    input_ids:          (B, L) int64, [CLS] ... [SEP] [PAD]*; L = max_length (pad_to_max) or the longest.
    attention_mask:     (B, L) int64, 1 for real tokens incl. [CLS]/[SEP], 0 for padding.
    special_tokens_mask:(B, L) int64, 1 for [CLS]/[SEP]/[PAD].
    num_tokens:         per caption, the token count *before* truncation (incl. [CLS]/[SEP]).
    truncated:          per caption, whether tokens were cut to fit ``max_length``.
    encodings:          per caption, the ``tokenizers.Encoding`` (offsets, ``char_to_token``) of the
                        returned (possibly truncated) sequence.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    special_tokens_mask: torch.Tensor
    num_tokens: list[int]
    truncated: list[bool]
    encodings: list[Any] = field(repr=False)

    def as_dict(self) -> dict[str, torch.Tensor]:
        """``{"input_ids", "attention_mask"}`` (what a BERT forward takes)."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def tokenize_captions(
    captions: Sequence[str] | str,
    max_length: int = MAX_QUERY_LEN,
    pad_to_max: bool = True,
    truncation: bool = False,
) -> TokenizedCaptions:
    """Tokenize captions for the language backbone.

    With ``truncation=True`` this is exactly the official model-side call
    ``batch_encode_plus(captions, max_length=max_length, padding="max_length" if pad_to_max else "longest",
    truncation=True)``: over-long captions are silently cut to ``max_length`` tokens (ending in [SEP]).
    With ``truncation=False`` (default) a caption longer than ``max_length`` tokens raises
    :class:`PromptError` naming its token count instead. Empty and punctuation-only captions always raise.

    Args:
        captions: one caption or a list of B captions.
        max_length: sequence length L when ``pad_to_max`` (official 256), and the truncation limit.
        pad_to_max: pad to ``max_length`` (official ``PAD_MAX=True``) or to the longest caption.
        truncation: cut over-long captions (official behaviour) instead of raising.

    Returns:
        :class:`TokenizedCaptions` with (B, L) int64 tensors.
    """
    if isinstance(captions, str):
        captions = [captions]
    captions = list(captions)
    if not captions:
        raise PromptError("no captions given")
    if max_length < 2:
        raise PromptError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
    for i, caption in enumerate(captions):
        check_caption(caption, i if len(captions) > 1 else None)

    tokenizer = get_tokenizer()
    full_lengths = [len(ids) for ids in tokenizer(captions, truncation=False)["input_ids"]]
    too_long = [(i, n) for i, n in enumerate(full_lengths) if n > max_length]
    if too_long and not truncation:
        i, n = too_long[0]
        where = "caption" if len(captions) == 1 else f"caption {i}"
        raise PromptError(
            f"{where} has {n} tokens (incl. [CLS]/[SEP]), more than max_length={max_length}; shorten it, "
            "split the class list into chunks, or pass truncation=True to cut it as official GLIP does"
        )
    for i, n in too_long:
        logger.warning("caption %d has %d tokens; truncated to %d as official GLIP does", i, n, max_length)

    encoded = tokenizer(
        captions,
        max_length=max_length,
        padding="max_length" if pad_to_max else "longest",
        truncation=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
    )
    return TokenizedCaptions(
        input_ids=encoded["input_ids"].long(),
        attention_mask=encoded["attention_mask"].long(),
        special_tokens_mask=encoded["special_tokens_mask"].long(),
        num_tokens=full_lengths,
        truncated=[n > max_length for n in full_lengths],
        encodings=list(encoded.encodings),
    )
