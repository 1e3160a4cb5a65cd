"""Released GLIP checkpoints as data: name -> where the official file lives and which preset it needs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WeightsInfo:
    """An official release. ``metrics``: the README's numbers (COCO zero-shot / fine-tuned AP, ...)."""

    repo_id: str
    filename: str
    preset: str
    description: str
    metrics: tuple[tuple[str, float], ...] = ()

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.filename}"


HF_REPO = "GLIPModel/GLIP"

RELEASED: dict[str, WeightsInfo] = {
    "glip_t_a": WeightsInfo(
        HF_REPO,
        "glip_a_tiny_o365.pth",
        "glip_t_a",
        "GLIP-T (A): Swin-T, Objects365, no deep fusion",
        (("coco_zero_shot_ap", 42.9), ("coco_finetuned_ap", 52.9)),
    ),
    "glip_t_b": WeightsInfo(
        HF_REPO,
        "glip_tiny_model_o365.pth",
        "glip_t_b",
        "GLIP-T (B): Swin-T, Objects365",
        (("coco_zero_shot_ap", 44.9), ("coco_finetuned_ap", 53.8)),
    ),
    "glip_t_c": WeightsInfo(
        HF_REPO,
        "glip_tiny_model_o365_goldg.pth",
        "glip_t_c",
        "GLIP-T (C): Swin-T, Objects365 + GoldG",
        (("coco_zero_shot_ap", 46.7), ("coco_finetuned_ap", 55.1), ("odinw13_zero_shot_ap", 44.4)),
    ),
    "glip_t": WeightsInfo(
        HF_REPO,
        "glip_tiny_model_o365_goldg_cc_sbu.pth",
        "glip_t",
        "GLIP-T: Swin-T, Objects365 + GoldG + CC3M + SBU",
        (("coco_zero_shot_ap", 46.6), ("coco_finetuned_ap", 55.2), ("odinw13_zero_shot_ap", 42.7)),
    ),
    "glip_l": WeightsInfo(
        HF_REPO,
        "glip_large_model.pth",
        "glip_l",
        "GLIP-L: Swin-L, FourODs + GoldG + CC3M+12M + SBU",
        (("coco_zero_shot_ap", 51.4), ("coco_finetuned_ap", 61.7), ("odinw13_zero_shot_ap", 51.2)),
    ),
}


def available_models() -> list[str]:
    """Names accepted by :func:`glip.load_model` besides paths."""
    return sorted(RELEASED)
