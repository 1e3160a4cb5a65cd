"""GLIPv2 masked language modelling L_mlm: BERT's masking recipe and a two-layer MLP head on the fused text.

Masking (BERT, Devlin et al. 2019), per token independently: each *real, non-special* token (attention mask 1,
not [CLS] / [SEP] / [PAD] / [UNK] / [MASK]) is chosen with probability 0.15; a chosen token becomes [MASK] with
probability 0.8, a random non-special vocabulary token with probability 0.1, and stays unchanged otherwise.
Labels hold the original id at chosen positions and -100 (ignored) everywhere else.

Head (GLIPv2: "a two-layer MLP on the text features P" after fusion):

    fused text (B, T, D) --Linear(D, D)--> GELU --LayerNorm--> (B, T, D)
                         --x word_embeddings^T + bias--> logits (B, T, V)

The decoder is tied to the text encoder's input word embeddings (V, D) as in BERT; a head built with
``tied=False`` owns its decoder instead (for text encoders whose embeddings do not have width D).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = ["IGNORE_INDEX", "MLMHead", "bert_special_ids", "mask_tokens", "mlm_loss"]

IGNORE_INDEX = -100  # label of unchosen tokens (torch cross_entropy's default ignore_index)


def bert_special_ids() -> tuple[int, tuple[int, ...]]:
    """([MASK] id, all special ids) of the bundled bert-base-uncased tokenizer."""
    from glip.text.tokenizer import get_tokenizer

    tokenizer = get_tokenizer()
    return int(tokenizer.mask_token_id), tuple(int(i) for i in tokenizer.all_special_ids)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vocab_size: int,
    mask_token_id: int,
    special_ids: Sequence[int],
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking. input_ids, attention_mask: (B, T) -> (masked input_ids (B, T), labels (B, T)).

    ``generator``: a torch generator on the ids' device (None: the global RNG).
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"mlm masking probability must be in [0, 1], got {probability}")
    if input_ids.shape != attention_mask.shape:
        raise ValueError(
            f"input_ids {tuple(input_ids.shape)} and attention_mask {tuple(attention_mask.shape)} differ"
        )
    device = input_ids.device
    special = torch.tensor(sorted(set(special_ids)), dtype=input_ids.dtype, device=device)
    candidates = (attention_mask > 0) & ~torch.isin(input_ids, special)
    chosen = (torch.rand(input_ids.shape, generator=generator, device=device) < probability) & candidates
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator, device=device)
    to_mask = chosen & (action < 0.8)
    to_random = chosen & (action >= 0.8) & (action < 0.9)
    vocabulary = torch.arange(vocab_size, dtype=input_ids.dtype, device=device)
    allowed = vocabulary[~torch.isin(vocabulary, special)]
    draws = torch.randint(len(allowed), input_ids.shape, generator=generator, device=device)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    masked = torch.where(to_random, allowed[draws], masked)
    return masked, labels


class MLMHead(nn.Module):
    """Two-layer MLP (dense + GELU + LayerNorm, then the vocabulary decoder). hidden: D; vocab_size: V."""

    def __init__(self, hidden: int, vocab_size: int, eps: float = 1e-12, tied: bool = True) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.decoder = None if tied else nn.Linear(hidden, vocab_size, bias=False)

    def forward(self, text: torch.Tensor, word_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """text: (B, T, D) fused text features; word_embeddings: (V, D), needed when tied -> logits (B, T, V)."""
        hidden = self.norm(F.gelu(self.dense(text)))
        if self.decoder is not None:
            return self.decoder(hidden) + self.bias
        if word_embeddings is None:
            raise ValueError("a tied MLM head needs the text encoder's word embeddings (V, D)")
        if word_embeddings.shape != (self.bias.shape[0], hidden.shape[-1]):
            raise ValueError(
                f"word embeddings of shape {tuple(word_embeddings.shape)} do not fit a tied MLM head of width "
                f"{hidden.shape[-1]} and vocabulary {self.bias.shape[0]}"
            )
        return hidden @ word_embeddings.t() + self.bias


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the chosen tokens. logits: (B, T, V); labels: (B, T), -100 = ignored -> scalar.

    Normalised by the number of chosen tokens averaged over DDP processes (like the grounding losses), so N
    processes with batch B train like one process with batch N x B; 0 (graph-connected) without any.
    """
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"MLM logits {tuple(logits.shape)} do not fit labels {tuple(labels.shape)}")
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    count = torch.tensor([float((labels != IGNORE_INDEX).sum())], dtype=torch.float64, device=logits.device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        count /= dist.get_world_size()
    return total / max(float(count.item()), 1.0)
