"""Train the bundled GLIPv2 demo model on top of the GLIP demo model: <= 60 minutes more on 2 CPU cores.

    python experiments/demo_model_v2.py            # or: make demo-model-v2 (needs glip/assets/demo_model)

One model, all weights shared (GLIPv2): the GLIP demo model (``glip/assets/demo_model``, ``make demo-model``)
goes on training with GLIPv2's losses, then learns grounded VQA and captioning while its grounding loss stays
on, then gets the second-stage mask head. Seeded. Stages (each written to ``--work`` so that a failed later
stage does not lose an earlier one; ``--from-stage`` restarts there):

A. pre-training losses: L_ground + L_inter + L_mlm (``glip.losses.criterion.Criterion``) on the demo model's
   detection + grounding mixture (``glip synth --split train --seed 0 --masks``, 1:0.25), a small learning
   rate so the detector does not move far (``glip.engine.train.fit``);
C. grounded VL understanding (``glip.v2.vl_train.train_vl``): detection-as-grounding on the colour-shape
   names + grounded VQA (answer cross-entropy + the question entity's boxes) + grounded captioning (causal
   next-token cross-entropy + every captioned object's box) on the same images each step
   (``glip.data.synthetic.vl.SyntheticVL``, 192 px like the demo model);
E. the VQA and captioning heads go on alone on the frozen GLIP of stage C (``--steps-e``, batch 8): they
   read the grounding C trained, and the GLIP weights (stage B's inputs) do not change;
B. the second stage (``glip.v2.segmentation.train_segmentation``): the language-guided mask head (reading
   the tower features and the network input) on the instance masks of every object (``detection_all.json``)
   with everything else frozen (last, so the features it reads no longer change);
then the package: ``glip/assets/demo_model_v2/`` (GLIP fp16 without the frozen MiniLM, which reloads from its
package; ``mask_head.*``, ``vqa_head.*``, ``caption_head.*``). The targets are measured by
``python experiments/v2_targets.py`` on world seeds never used here.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from latency import matmul_peak  # noqa: E402  (the benchmarks' machine-speed probe)

STAGES = ("A", "C", "D", "E", "B", "package")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work", default=str(REPO / "outputs" / "demo_model_v2"))
    parser.add_argument("--base", default=str(REPO / "glip" / "assets" / "demo_model"), help="the GLIP model")
    parser.add_argument("--out", default=str(REPO / "glip" / "assets" / "demo_model_v2"))
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps-a", type=int, default=400, help="stage A steps (L_ground + L_inter + L_mlm)")
    parser.add_argument("--lr-a", type=float, default=5e-5)
    parser.add_argument("--inter-weight", type=float, default=0.5)
    parser.add_argument("--mlm-weight", type=float, default=0.1)
    parser.add_argument("--steps-c", type=int, default=900, help="stage C steps (detection + VQA + captions)")
    parser.add_argument("--lr-c", type=float, default=3e-5, help="stage C learning rate of the shared GLIP")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="stage C learning rate of the new heads")
    parser.add_argument("--vl-size", type=int, default=192, help="side of the VL scenes (the demo's input)")
    parser.add_argument(
        "--steps-d",
        type=int,
        default=0,
        help="stage D steps: stage C again with a --gamma-lr on the fusion layer scales (0: skip; tried with "
        "400 and 3e-3: no better VQA / captions, see docs/vl-understanding.md)",
    )
    parser.add_argument(
        "--gamma-lr",
        type=float,
        default=3e-3,
        help="stage D learning rate of the fusion layers' text_gamma / vision_gamma (image -> text information)",
    )
    parser.add_argument(
        "--steps-e",
        type=int,
        default=1300,
        help="stage E steps: the VQA and captioning heads alone on the frozen GLIP of the last VL stage (0: skip)",
    )
    parser.add_argument("--batch-size-e", type=int, default=8)
    parser.add_argument(
        "--images-e",
        type=int,
        default=12000,
        help="stage E scenes (rendered on the fly, the first --train-images of them are stage C's): about one "
        "question per scene over the stage, so the heads do not learn the training questions by heart",
    )
    parser.add_argument("--steps-b", type=int, default=600, help="stage B steps (the mask head)")
    parser.add_argument("--lr-b", type=float, default=1e-3)
    parser.add_argument("--from-stage", choices=STAGES, default="A")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    from glip.data.synthetic.writers import generate

    work = Path(args.work)
    timings: dict[str, float] = {}
    # how fast this machine is today: its fp32 matmul rate beside the stage times (the same 2 cores have run
    # the same stage 1.7x slower on another day: docs/reproduction.md section 4.1)
    from glip.runtime import flush_denormals

    flush_denormals()  # before the probe creates torch's thread pool (the workers inherit the setting)
    peaks = [matmul_peak(torch.get_num_threads())]
    started = tick = time.perf_counter()
    train_dir = work / "synth_train"
    if not (train_dir / "detection.json").exists():
        generate(
            train_dir, num_images=args.train_images, seed=args.seed, split="train", masks=True, overwrite=True
        )
    timings["generate_s"] = time.perf_counter() - tick
    start = STAGES.index(args.from_stage)
    for earlier in reversed(STAGES[:start]):  # a restarted run keeps the timings of the stages it skips
        saved = work / f"timings_{earlier}.json"
        if saved.exists():
            kept = {"generate_s", *(f"stage_{stage}_s" for stage in STAGES[:start])}
            timings.update({k: v for k, v in json.loads(saved.read_text()).items() if k in kept})
            break
    stages = (
        ("A", stage_a),
        ("C", stage_c),
        ("D", stage_d),
        ("E", stage_e),
        ("B", stage_b),
        ("package", package),
    )
    for stage, run in stages:
        if STAGES.index(stage) < start:
            continue
        tick = time.perf_counter()
        run(args, work, train_dir)
        timings[f"stage_{stage}_s"] = time.perf_counter() - tick
        logging.info("stage %s done in %.0f s", stage, timings[f"stage_{stage}_s"])
        (work / f"timings_{stage}.json").write_text(json.dumps(timings, indent=2))
    report = {
        "command": "python experiments/demo_model_v2.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if k not in ("work", "base", "out", "from_stage")
        ),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        # one process from the first stage to the package when from_stage is "A" and generation ran here;
        # a restarted run's "seconds" mixes its own stages with the saved timings of the ones it skipped
        "from_stage": args.from_stage,
        "this_run_wall_s": round(time.perf_counter() - started, 1),
        "matmul_peak_start_end": [*peaks, matmul_peak(torch.get_num_threads())],
        "threads": torch.get_num_threads(),
    }
    for stage in ("A", "C", "D", "E", "B"):
        summary = work / f"stage_{stage}" / "summary.json"
        if summary.exists():
            report[f"stage_{stage}"] = json.loads(summary.read_text())
    out = REPO / "experiments" / "results" / "demo_model_v2_train.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def _mixture(model, train_dir: Path, seed: int, masks: bool = False):
    from glip.data.build import build_dataset
    from glip.data.coco import CocoGroundingDataset
    from glip.data.mixed import MixedDataset
    from glip.data.transforms import TrainTransform

    transform = TrainTransform.from_config(model.config.input, seed=seed)
    images = train_dir / "images"
    if masks:  # every object's mask (the rare names too: stage C's detection task already names all 42)
        return CocoGroundingDataset(
            train_dir / "detection_all.json", images, transform, seed=seed, masks=True
        )
    detection = build_dataset(train_dir / "detection.json", images, transform, seed=seed)
    grounding = build_dataset(train_dir / "grounding.json", images, transform, seed=seed)
    return MixedDataset([(detection, 1.0), (grounding, 0.25)], seed=seed)


def stage_a(args, work: Path, train_dir: Path) -> None:
    """L_ground + L_inter + L_mlm from the GLIP demo model."""
    from glip.engine.train import TrainConfig, fit
    from glip.losses.criterion import Criterion, CriterionConfig
    from glip.weights.loading import load_model, save_model

    torch.manual_seed(args.seed)
    model = load_model(args.base)
    dataset = _mixture(model, train_dir, args.seed)
    criterion = Criterion(
        CriterionConfig(inter_loss_weight=args.inter_weight, mlm_loss_weight=args.mlm_weight)
    )
    out = work / "stage_A"
    if out.exists():
        shutil.rmtree(out)
    history = fit(
        model,
        dataset,
        TrainConfig(
            out_dir=str(out / "run"),
            max_steps=args.steps_a,
            batch_size=args.batch_size,
            lr=args.lr_a,
            freeze=("text",),
            schedule="cosine",
            warmup_steps=min(50, args.steps_a // 10),
            seed=args.seed,
            ckpt_every=0,
            log_every=25,
            lr_factors=(("head.text_proj", 20.0), ("head.log_scale", 20.0)),
        ),
        criterion=criterion,
    )
    save_model(model, out / "model", skip_pretrained_text=True)
    (out / "summary.json").write_text(json.dumps({"fit": _jsonable(history)}, indent=2))


def _jsonable(value):
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _vl_models(glip, seed: int):
    from glip.data.synthetic.vl import ANSWERS
    from glip.models.captioning import GLIPForCaptioning
    from glip.v2.vqa import GLIPForVQA

    torch.manual_seed(seed + 1)
    return GLIPForVQA(glip, ANSWERS), GLIPForCaptioning(glip)


def _vl_data(glip, args, num_images: int | None = None):
    from glip.data.synthetic.vl import SyntheticVL

    detection = SyntheticVL(
        "detection",
        num_images or args.train_images,
        seed=args.seed,
        split="train",
        size=args.vl_size,
        input_config=glip.config.input,
        vocabulary="colour_shape",
    )
    # one scene cache for the three tasks (each scene drawn once; the items are those of separate datasets)
    return {
        "detection": detection,
        "vqa": detection.for_task("vqa"),
        "caption": detection.for_task("caption"),
    }


def _vl_stage(args, work: Path, source: str, out_name: str, steps: int, gamma_lr, seed: int) -> None:
    """Joint detection + grounded VQA + grounded captioning from ``work/source`` (its model, and its heads when
    it is a VL stage) into ``work/out_name``; backbone and text encoder frozen."""
    from glip.v2.vl_train import VLTrainConfig, train_vl
    from glip.weights.loading import load_model, save_model

    glip = load_model(work / source / "model")
    for module in (glip.text_encoder, glip.backbone):
        for p in module.parameters():
            p.requires_grad_(False)
    vqa, captioner = _vl_models(glip, args.seed)
    if (work / source / "vqa_head.pt").exists():  # go on from an earlier VL stage's heads
        _load_heads(work / source, vqa, captioner)
    history = train_vl(
        glip,
        _vl_data(glip, args),
        VLTrainConfig(
            steps=steps,
            batch_size=args.batch_size,
            lr=args.lr_c,
            text_lr=0.0,
            head_lr=args.head_lr,
            gamma_lr=gamma_lr,
            warmup_steps=50,
            seed=seed,
            log_every=25,
        ),
        vqa=vqa,
        captioner=captioner,
    )
    out = work / out_name
    if out.exists():
        shutil.rmtree(out)
    save_model(glip, out / "model", skip_pretrained_text=True)
    _save_heads(out, vqa, captioner, history)


def _save_heads(out: Path, vqa, captioner, history) -> None:
    """A VL stage's result beside its model: both heads' state dicts and the logged history."""
    torch.save(vqa.head.state_dict(), out / "vqa_head.pt")
    torch.save(captioner.head.state_dict(), out / "caption_head.pt")
    (out / "summary.json").write_text(json.dumps({"history": history}, indent=2))


def _load_heads(directory: Path, vqa, captioner) -> None:
    """The heads :func:`_save_heads` wrote (tensors only: ``weights_only=True``)."""
    vqa.head.load_state_dict(torch.load(directory / "vqa_head.pt", weights_only=True))
    captioner.head.load_state_dict(torch.load(directory / "caption_head.pt", weights_only=True))


def stage_c(args, work: Path, train_dir: Path) -> None:
    """Grounded VQA + grounded captioning trained jointly with detection-as-grounding."""
    _vl_stage(args, work, "stage_A", "stage_C", args.steps_c, None, args.seed)


def _last_vl_stage(args, work: Path) -> Path:
    return work / ("stage_D" if args.steps_d > 0 else "stage_C")


def stage_d(args, work: Path, train_dir: Path) -> None:
    """Stage C again from its result, the fusion layers' layer scales (how much image information enters the
    text: ~0.01 after the GLIP demo model) at ``--gamma-lr``; the heads go on from stage C."""
    if args.steps_d > 0:
        _vl_stage(args, work, "stage_C", "stage_D", args.steps_d, args.gamma_lr, args.seed + 1)


def stage_e(args, work: Path, train_dir: Path) -> None:
    """The VQA and captioning heads go on alone (GLIP frozen, no grounding losses: nothing they could move)
    from the last VL stage; the GLIP weights, and so stage B's inputs, do not change."""
    if args.steps_e <= 0:
        return
    from glip.v2.vl_train import VLTrainConfig, train_vl
    from glip.weights.loading import load_model

    source = _last_vl_stage(args, work)
    glip = load_model(source / "model")
    for p in glip.parameters():
        p.requires_grad_(False)
    vqa, captioner = _vl_models(glip, args.seed)
    _load_heads(source, vqa, captioner)
    history = train_vl(
        glip,
        _vl_data(glip, args, args.images_e),
        VLTrainConfig(
            steps=args.steps_e,
            batch_size=args.batch_size_e,
            head_lr=args.head_lr,
            detection_weight=0.0,
            ground_weight=0.0,
            warmup_steps=20,
            seed=args.seed + 2,
            log_every=25,
        ),
        vqa=vqa,
        captioner=captioner,
    )
    out = work / "stage_E"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    _save_heads(out, vqa, captioner, history)


def _heads_dir(args, work: Path) -> Path:
    """Where the final VQA / captioning heads are: stage E's when it ran, else the last VL stage's."""
    return work / "stage_E" if args.steps_e > 0 else _last_vl_stage(args, work)


def stage_b(args, work: Path, train_dir: Path) -> None:
    """The second stage: the mask head on the instance masks of every object (``detection_all.json``: with
    the network input as an input, a head that never saw an orange object learnt orange as background),
    everything else frozen."""
    from glip.models.mask_head import MaskHead, MaskHeadConfig
    from glip.v2.segmentation import SegmentationTrainConfig, train_segmentation
    from glip.weights.loading import load_model

    model = load_model(_last_vl_stage(args, work) / "model").eval()
    dataset = _mixture(model, train_dir, args.seed, masks=True)
    torch.manual_seed(args.seed)
    mask_head = MaskHead(MaskHeadConfig.for_model(model.config))
    out = work / "stage_B"
    if out.exists():
        shutil.rmtree(out)
    summary = train_segmentation(
        model,
        mask_head,
        dataset,
        SegmentationTrainConfig(
            out_dir=str(out),
            max_steps=args.steps_b,
            batch_size=args.batch_size,
            lr=args.lr_b,
            warmup_steps=50,
            seed=args.seed,
            log_every=50,
            progress=False,
        ),
    )
    (out / "summary.json").write_text(json.dumps({"history": summary["history"]}, indent=2))


def package(args, work: Path, train_dir: Path) -> None:
    """glip/assets/demo_model_v2: the GLIP (fp16) + the mask, VQA and captioning heads."""
    from glip.models.mask_head import load_mask_head, save_mask_head
    from glip.v2.heads import save_vl_heads
    from glip.weights.loading import load_model, save_model

    glip = load_model(_last_vl_stage(args, work) / "model")
    vqa, captioner = _vl_models(glip, args.seed)
    _load_heads(_heads_dir(args, work), vqa, captioner)
    mask_head = load_mask_head(work / "stage_B")
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    save_model(glip, out, skip_pretrained_text=True, half=True)
    save_mask_head(mask_head, out, half=True)
    save_vl_heads(out, vqa=vqa, captioner=captioner, half=True)
    total = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    logging.info("wrote %s (%.1f MB)", out, total)


if __name__ == "__main__":
    main()
