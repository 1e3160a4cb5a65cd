"""The models the ONNX tests export, and the background export that ``make test`` starts at collection.

``python tests/export/onnx_models.py NAME OUT`` builds the export ``NAME`` of :data:`EXPORTS`, saves its
weights (``weights.pt``) and exports it into ``OUT`` with one thread. tests/export/conftest.py runs it for
:data:`BACKGROUND` in a separate process as soon as the suite is collected, and moves the tests that use it to
the end of the run: the export is mostly single-threaded Python (~5 min on 2 cores), so it overlaps the rest
of the suite instead of adding to it.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from glip.config import get_preset
from glip.models.glip import build_model

#: the export ``make test`` runs (in the background); GLIP_SLOW_TESTS=1 adds the others, exported in the test
BACKGROUND = "tiny_random_small"


def tiny_model(small: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    config = get_preset("tiny_random")
    # small: one block per Swin stage but the third (its second block has the shifted windows), one head block
    if small:
        config = dataclasses.replace(
            config,
            name="tiny_random_small",
            backbone=dataclasses.replace(config.backbone, depths=(1, 1, 2, 1)),
            head=dataclasses.replace(config.head, num_blocks=1),
        )
    # random weights score every phrase ~0.01: no candidate threshold, no top-k cuts and no NMS (near-ties at a
    # cut could swap which of two candidates survives; thousands of overlapping boxes put some pairs at the NMS
    # IoU, where float rounding decides: 1 of 10824 detections differed), so that every anchor x phrase
    # detection is compared; NMS itself is the same torchvision call on both paths (with the trained model's
    # detections under GLIP_SLOW_TESTS=1)
    post = dataclasses.replace(
        config.postprocess,
        pre_nms_thresh=0.0,
        pre_nms_top_n=10**9,
        detections_per_img=0,  # no cut
        nms_thresh=1.0,
    )
    config = dataclasses.replace(config, postprocess=post)
    model = build_model(config).eval()
    with torch.no_grad():  # spread the grounding scores so that they are not all tied near the prior
        for name, param in model.head.named_parameters():
            if name.endswith("text_bias"):
                param.normal_(0.0, 1.0)
            elif name.endswith("bias0"):
                param.zero_()
    return model


def demo_model() -> torch.nn.Module:
    """The ``tiny`` preset with its trained weights (the bundled demo model), config unchanged."""
    from glip.weights.loading import load_model

    return load_model("demo").eval()


EXPORTS = {
    "tiny_random_small": (lambda: tiny_model(small=True), {"image_size": (256, 320), "num_tokens": 12}),
    "tiny_random": (tiny_model, {"image_size": (256, 320), "num_tokens": 12}),
    "tiny": (demo_model, {"image_size": (320, 320), "num_tokens": 16}),
}
#: each export takes minutes on 2 CPU cores (docs/deploy.md): `make test` exports the small random architecture
#: once; GLIP_SLOW_TESTS=1 adds the full tiny_random preset and the trained demo model
SLOW = os.environ.get("GLIP_SLOW_TESTS") == "1"


@dataclass
class BackgroundExport:
    """The running export: its process, output folder and log."""

    process: subprocess.Popen
    directory: Path
    log: Path

    def wait(self) -> Path:
        """The finished export's folder; fails the test with the job's log when the export failed."""
        code = self.process.wait()
        if code != 0 or not (self.directory / "done").exists():
            tail = self.log.read_text(errors="replace")[-4000:]
            pytest.fail(f"the background ONNX export failed (exit code {code}):\n{tail}", pytrace=False)
        return self.directory


#: where conftest.py keeps the running export (defined here, in a module imported once, not in the conftest)
BACKGROUND_EXPORT = pytest.StashKey[BackgroundExport]()


def export(name: str, directory: Path) -> torch.nn.Module:
    """Build export ``name``, write its weights (``weights.pt``) and its ONNX export into ``directory``."""
    from glip.export.onnx import to_onnx

    build, options = EXPORTS[name]
    model = build()
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / "weights.pt")
    to_onnx(model, directory, **options)
    return model


if __name__ == "__main__":
    torch.set_num_threads(1)  # the suite goes on beside it on the other core
    export(sys.argv[1], Path(sys.argv[2]))
    (Path(sys.argv[2]) / "done").write_text("ok\n")
