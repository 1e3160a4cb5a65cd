"""Frozen backbone stages: kept in eval mode (fixed batch-norm statistics, no dropout) with no gradients."""

from __future__ import annotations

from typing import Self

from torch import nn


class FrozenStages(nn.Module):
    """Base of the backbones with a ``frozen_stages`` option; a subclass says which modules are frozen.

    Freezing happens when the subclass calls :meth:`_freeze_stages` (end of ``__init__``), again on every
    ``train()`` (official swint.py override) and in :func:`glip.engine.tuning.apply_tuning`.
    """

    def _frozen_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> Self:
        """Switch mode but keep the frozen stages in eval."""
        super().train(mode)
        self._freeze_stages()
        return self
