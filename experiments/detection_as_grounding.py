"""Miniature claim 1: detection as grounding: a grounding head gives the same detection AP as a class-weight
classifier.

    python experiments/detection_as_grounding.py                 # 2 arms x 1 seed
    python experiments/detection_as_grounding.py --seeds 0 1 2

Both arms are the ``tiny`` preset with *late fusion* (``deep_fusion=False``; the paper compares the classic
ATSS detector with GLIP-T(A), which has no deep fusion), trained the same number of steps on the same detection
data (the synthetic ``train`` world's seen names, every prompt the full class list in category order) and
evaluated by ``glip.eval.evaluate_coco`` on a held-out ``test`` world (seen names only):

* ``grounding``: the official score S_ground = O P^T against the prompt's token features;
* ``class weights``: S_cls = O W^T + b with a learned weight per class (``ClassWeightScores``, this file), the
  class logit written to every token of the class's name so that training (token focal loss) and inference
  (mean over a name's tokens) run through the same code; the text encoder is still run but not used.

GLIP's claim (paper Table 1 / section 3.1, GLIP-T(A) vs ATSS): reformulating detection as grounding costs
nothing in detection AP. Writes ``experiments/results/detection_as_grounding.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from arms import REPO, SCORE_PARAMS, detection_ap, mean_spread, subset, train_arm, world, write_report
from torch import nn

SEPARATOR_TOKEN = "."


class ClassWeightScores(nn.Module):
    """S_cls = O W^T + b per class, spread over the prompt's tokens (separators / specials: a fixed -50).

    The prompt must be the class names in category order joined by separators (what the dataset with
    ``shuffle_classes=False`` and the evaluator write): the k-th name segment of the input ids is class k.
    """

    def __init__(self, model: nn.Module, num_classes: int) -> None:
        super().__init__()
        from glip.text.tokenizer import get_tokenizer

        tokenizer = get_tokenizer()
        self.special = {tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}
        self.dot = tokenizer.convert_tokens_to_ids(SEPARATOR_TOKEN)
        channels = model.head.bbox_pred.in_channels
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.randn(num_classes, channels) * 0.01)
        prior = -math.log((1 - 0.01) / 0.01)
        self.bias = nn.Parameter(torch.full((num_classes,), prior))
        self.token_class: torch.Tensor | None = None
        # the text encoder sees every prompt (training forward and the predictor's cached text alike)
        model.text_encoder.register_forward_pre_hook(self._read_ids, with_kwargs=True)
        model.head.token_scores = self.token_scores  # instance attribute: replaces the grounding score

    def _read_ids(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        rows = []
        for ids in input_ids.tolist():
            classes, current, inside = [], 0, False
            for token in ids:
                if token in self.special:
                    classes.append(-1)
                    current += int(inside)
                    inside = False
                elif token == self.dot:
                    classes.append(-1)
                    current += int(inside)
                    inside = False
                else:
                    classes.append(current)
                    inside = True
            if current != self.num_classes:
                raise ValueError(f"prompt has {current} class names, the classifier {self.num_classes}")
            rows.append(classes)
        if any(row != rows[0] for row in rows):
            raise ValueError("every prompt of a batch must be the same class list")
        self.token_class = torch.tensor(rows[:1], device=input_ids.device)  # (1, T)

    def token_scores(self, features: list[torch.Tensor], text: torch.Tensor) -> list[torch.Tensor]:
        batch = text.shape[0]
        index = self.token_class.clamp(min=0).expand(batch, -1)  # (B, T)
        outside = (self.token_class < 0).expand(batch, -1)
        logits = []
        for feature in features:
            queries = feature.flatten(2).transpose(1, 2)  # (B, HW, C)
            per_class = queries @ self.weight.t() + self.bias  # (B, HW, K)
            per_token = per_class.gather(2, index[:, None, :].expand(-1, per_class.shape[1], -1))
            logits.append(per_token.masked_fill(outside[:, None, :], -50.0))
        return logits


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--size", type=int, default=192, help="image shorter side (the demo model's)")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--work", default=str(REPO / "outputs" / "detection_as_grounding"))
    parser.add_argument(
        "--out", default=str(REPO / "experiments" / "results" / "detection_as_grounding.json")
    )
    args = parser.parse_args()

    started = time.perf_counter()
    work = Path(args.work)
    train, test = world("train", args.train_images, 0), world("test", args.test_images, 7)
    names = [c["name"] for c in json.loads((train / "detection.json").read_text())["categories"]]
    test_seen = subset(test / "detection.json", None, work / "data" / "test_seen.json", categories=set(names))

    results: dict[str, list[dict]] = {"grounding": [], "class weights": []}
    for seed in args.seeds:
        for arm in results:

            def attach(model: nn.Module, arm: str = arm) -> None:
                if arm == "class weights":  # a submodule, so it is trained (and saved) with the model
                    model.add_module("class_weights", ClassWeightScores(model, len(names)))

            model, summary = train_arm(
                f"{arm.replace(' ', '_')}_seed{seed}",
                [(train / "detection.json", train / "images", 1.0)],
                work=work,
                steps=args.steps,
                size=args.size,
                seed=seed,
                head={"deep_fusion": False},
                before_fit=attach,
                # every prompt: all classes in category order (the class-weight arm reads classes from it)
                prompt_options={"num_negatives": -1, "shuffle_classes": False},
                score_params=(*SCORE_PARAMS, "class_weights") if arm == "class weights" else SCORE_PARAMS,
            )
            row = {"seed": seed, **summary, "test": detection_ap(model, test_seen, test / "images")}
            results[arm].append(row)
            print(json.dumps({"arm": arm, **row}), flush=True)
    summary = {
        arm: {key: mean_spread([r["test"][key] for r in rows]) for key in ("AP", "AP50")}
        for arm, rows in results.items()
    }
    write_report(args.out, "detection_as_grounding.py", args, started, summary=summary, runs=results)


if __name__ == "__main__":
    main()
