"""Pinned bytes of the synthetic world: a fixed seed writes exactly these files, forever.

The hashes were taken from the generator as it was before it was split into ``glip.data.synthetic.*``
modules; any change to them changes every synthetic data set, experiment and the demo model's data.
Annotation / text files are pinned by their bytes, images by their pixels (PNG bytes also depend on zlib).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glip.data.synthetic.scene import make_scene
from glip.data.synthetic.vl import SyntheticVL, canonical_caption, scene_questions
from glip.data.synthetic.writers import generate

#: (split, num_images, seed, size, random_aspect, masks) -> {file: sha256}
WORLDS = {
    ("train", 3, 7, 96, True, True): {
        "README.txt": "b21e6f69c09328056d94630d5561ddd4c70f1ed3a144e475a6235201f77ccbfd",
        "captions.jsonl": "57d53732f2699138a3d78960eed0edb47a8f1c7cf76ba15831e07c23986c5fe6",
        "captions_gt.json": "dc86484d9e059a82e729a341c7d8c0417f15c1b621641ab6d948576c92567bfb",
        "detection.json": "872149f27832eb1efa078293c4836052388fdae220e10cec0a2266254533c06a",
        "detection.odvg.jsonl": "9ab2d4f42f510c07a0c3fb31b7462b2c52e04b13fb6c132e1d429f23b3fd9b74",
        "detection_all.json": "39289fb4ac746d23497348c954d23073af4eba6e47af4c25e54392ec0c89d91e",
        "grounding.json": "e403332ec0615131cb6455949967e1cd373a35ed98063d78e60faef49c0c5b93",
        "grounding.odvg.jsonl": "20a2b2b64cb3de8033e41cca3e57e3a32465a682dec58f69efbc047c36014701",
        "images/train_000000.png": "44f43a6008606313d2969743a1df725a0c9b32c0da24e74f8651623a22f22929",
        "images/train_000001.png": "d7165f7650d2f585a278ee3659fa8f5ec12dcd8020c47697411012b58f332a3b",
        "images/train_000002.png": "bcef9d728c186bef0cbc11642c16b6078c1b850d62c7d5fd8f27613b9d29e156",
        "label_map.json": "d563e27d96014ef0cd902d384cf440f5b69751e666d914e209df52d4c8d66716",
        "vocab.json": "118720b5414fe797a31b7beb07100bc08f47023a5b8e4a36ee8c60d98cc84453",
    },
    ("synonyms", 2, 4, 80, False, False): {
        "README.txt": "80b1a33b343f34cf87bbb4c6d7fc66d31cda1aa362a1329a3b30328eb325a391",
        "captions.jsonl": "ae62096ebcaf0f896ebb3bf630dcd65b75b59731e07e42e44dc45c35c91e0138",
        "captions_gt.json": "942922ba181872f45822102a5b06053036e872846bf4e1887b39abddc5b211ae",
        "detection.json": "acb5422f960b969dffba7611b2690ef50cf0191ac085aa2114ae71766b8a83b4",
        "detection.odvg.jsonl": "82e8043205175267c68e4f2f5c5249be2117af7df03176a6f52ba9885ee7f7fe",
        "detection_seen_names.json": "339cc452bbf6054a1fb59c3df88a8e81df22b9dc51dd36d43c4cbad83bad8e27",
        "grounding.json": "1939a9cd889657bd7941cc9aa8b61c9ceb048f66fea6a8a3ab2253b1fe32fdff",
        "grounding.odvg.jsonl": "772b1ee8da209b6ba9803248183560517fe9163ffd23b45abb8ebb3a79ac1509",
        "images/synonyms_000000.png": "ce44e6ecbcc2cb0a2616e94207c3e7a98f04a7c9a87ab7b5408e8048b1ccd4cd",
        "images/synonyms_000001.png": "b5351d75212d7c3bf44ed5a3c9f05665b63b3042acfc0aafef4d287d5591d3a3",
        "label_map.json": "43f0771b47cc8cd7ede917c7de2e4f4c3bffa4add81d492fcea933e243c4b340",
        "vocab.json": "118c3224b9b3fca9b9d789f3709afe1864bde3c5bfdb80027095d8e11be0e7c5",
    },
    ("task_A", 2, 1, 72, True, False): {
        "README.txt": "96198797aacca3c93ab1f4deeaf7beedcb44735d9e31016f9537017ac55affca",
        "captions.jsonl": "602c9773b3c982b6e5d4a9e29abe4c44c61e9e2e40711cf2698ca5fdd674fa67",
        "captions_gt.json": "7440a71113d3208cc7e7494584c2511d256f4ff06298495504749098f593f2cf",
        "detection.json": "1067d882becdc89339b8104e274d0ca30df8dd3f343ac6e4ce6b3fecdc6b1bf9",
        "detection.odvg.jsonl": "5a5f73b44721a57b7ac5759b4db07327edb10c891e3a695bb489dd007682d0e2",
        "grounding.json": "e3983c94558676926546c83eb4fb61d296ca61ec635e8ee0deaa1059143410a1",
        "grounding.odvg.jsonl": "cd8f02e8f5f733868934f254d28fed34044b989f162ca7ed84cba7fe154c9670",
        "images/task_A_000000.png": "a17b77b30e763e9d4952318e51629977d13285c1ac7afe0b7ba0411ee3949c85",
        "images/task_A_000001.png": "62b4f18e7500d032f63b69673dd5dc27d1a31bca0a4f03e8b9351a32c03bc47d",
        "label_map.json": "bbf25c347eb9aa114a216a525b26cd7c3bccebb89846fb10ff1f0063dd9cf457",
        "vocab.json": "5d0bd82968e90a8da2d7d43150197ffb51e47e1b7a73281cd73c2facde656a1d",
    },
    ("task_B", 2, 5, 64, False, False): {
        "README.txt": "34961e83c6a456fda8fd1cae763aa6a9413d2f3355e79a3553ec70b41e96e759",
        "captions.jsonl": "b8e9b28a60744189cd771340f265135ff4c7524214f4f2cbf7e171124fa75cef",
        "captions_gt.json": "bdb444516b6df260b0f9b816d8e6fe732aa5088078b90dee9b263ce5a6189b1a",
        "detection.json": "2252bafc0ed741ae5caaf0ff5db90474afda861719accbc70b32cb7f0f953240",
        "detection.odvg.jsonl": "ebea435152fdc0688d159dab42493659e7c7a58be2159bcbc20a637a15bc429e",
        "grounding.json": "598d08ee2d818c71ac5221140b646ccea41940f7a02b30d10ecf62150b8dd788",
        "grounding.odvg.jsonl": "6ff57108ee4e34a47f29265b0f15474c690dea381e6f059e1df9bb8dadd4b4c2",
        "images/task_B_000000.png": "cbc2ada0c49dd4f6684542c87a4e029e7e996383bcbbf1cf295816a64a7b9469",
        "images/task_B_000001.png": "a39828385ddf21a3be7b7b111b9be89dcddac09e00170db47bf6d75baf49ecb3",
        "label_map.json": "0b5af636879b185bc8299040a3f156279f9d79ca048c523a32d2f374f82c3ea2",
        "vocab.json": "40158650fbefd89c67791b791af3941e29873a931a7b385b7b74acfdda1ca223",
    },
}
QUESTIONS = "3c3e5263ae52505e63c933e89c556c44f947ced626bd25a83c3ff14eba012a3b"


def _digest(path: Path) -> str:
    if path.suffix == ".png":
        pixels = np.asarray(Image.open(path).convert("RGB"))
        return hashlib.sha256(repr(pixels.shape).encode() + pixels.tobytes()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _world(
    root: Path, split: str, num: int, seed: int, size: int, aspect: bool, masks: bool
) -> dict[str, str]:
    generate(root, num, seed=seed, size=size, split=split, random_aspect=aspect, masks=masks)
    return {str(p.relative_to(root)): _digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("key", list(WORLDS), ids=lambda key: key[0])
def test_world_bytes_are_pinned(key, tmp_path: Path) -> None:
    if key[5]:
        pytest.importorskip("pycocotools")
    assert _world(tmp_path / key[0], *key) == WORLDS[key]


def test_questions_and_captions_are_pinned() -> None:
    lines = []
    for index in range(4):
        scene = make_scene(2, "test", index, 96)
        lines.append(repr(canonical_caption(scene)))
        lines.extend(repr(q) for q in scene_questions(scene))
    vqa = SyntheticVL("vqa", 3, seed=2, split="test", size=96, questions_per_image=2)
    lines.extend(repr(vqa.question(item)) for item in range(len(vqa)))
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == QUESTIONS


#: sha256 of the samples every loader reads from the train world above (all four formats)
SAMPLES = "94d984ea066bc27699f3f831fd6bdcdb71e2e5a9f4ef6c698630e8257d06dc75"


def _sample_digest(sample) -> bytes:
    target = sample.target
    parts = [sample.caption, sample.image_id, repr(tuple(sample.image.shape))]
    parts += [
        repr(target.boxes.tolist()),
        repr(target.labels.tolist()),
        repr(target.token_map.nonzero().tolist()),
    ]
    masks = getattr(target, "masks", None)
    if masks is not None:
        parts.append(hashlib.sha256(masks.numpy().tobytes()).hexdigest())
    return ("|".join(parts)).encode() + sample.image.numpy().tobytes()


def test_loaded_samples_are_pinned(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    from glip.data.build import build_dataset
    from glip.data.transforms import TrainTransform

    root = tmp_path / "train"
    generate(root, 3, seed=7, size=96, split="train", random_aspect=True, masks=True)
    digest = hashlib.sha256()
    for name in (
        "detection.json",
        "detection.odvg.jsonl",
        "grounding.json",
        "grounding.odvg.jsonl",
        "captions.jsonl",
    ):
        transform = TrainTransform(min_sizes=(64, 80), max_size=120, flip_prob=0.5)
        dataset = build_dataset(root / name, root / "images", transform, seed=3)
        for epoch in range(2):
            dataset.set_epoch(epoch)
            for index in range(len(dataset)):
                digest.update(_sample_digest(dataset[index]))
    assert digest.hexdigest() == SAMPLES, digest.hexdigest()
