"""GLIPv2 masked language modelling L_mlm: BERT's masking recipe and the loss of the MLM head.

Masking (BERT, Devlin et al. 2019), per token independently: each *real, non-special* token (attention mask 1,
not [CLS] / [SEP] / [PAD] / [UNK] / [MASK]) is chosen with probability 0.15; a chosen token becomes [MASK] with
probability 0.8, a random non-special vocabulary token with probability 0.1, and stays unchanged otherwise.
Labels hold the original id at chosen positions and -100 (ignored) everywhere else.

The head (a two-layer MLP on the fused text, decoder tied to the word embeddings) is the model's "mlm"
head: :class:`glip.models.pretrain_heads.MLMHead`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F

__all__ = ["IGNORE_INDEX", "bert_special_ids", "mask_tokens", "mlm_loss"]

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
