"""The README as a new user meets it: its Python snippets run as written, and every install hint names the
extras as they install from a clone (``pip install '.[tiny]'``; glip is not on the package index).

One substitution, because nothing here downloads: released weights (``from_pretrained("glip_t")``) become the
bundled demo model. The images the snippets name (``street.jpg``, ``dog.jpg``) are the bundled examples saved
as JPEG in a temporary folder, the working directory of the run. A snippet that needs the Hugging Face Hub
(``push_to_hub``) is skipped here; the Hub code is tested against a local stand-in in tests/weights/test_hub.py.
``.ci/readme_snippets.sh`` runs this file against a fresh clone installed with plain pip.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = Path(__import__("os").environ.get("GLIP_README", ROOT / "README.md"))
RELEASED = re.compile(r'from_pretrained\("(glip_t|glip_l|glip_t_[abc])"\)')


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_has_python_snippets():
    assert len(python_blocks(README.read_text())) >= 1


@pytest.mark.parametrize("index", range(len(python_blocks(README.read_text()))))
def test_readme_python_snippet_runs(index, tmp_path, monkeypatch):
    import torch

    from glip.weights.demo import DEMO_EXAMPLES_DIR, demo_model_available

    block = python_blocks(README.read_text())[index]
    if "push_to_hub" in block:
        pytest.skip("needs the Hugging Face Hub (tests/weights/test_hub.py covers it with a local stand-in)")
    if not demo_model_available():
        pytest.skip("the bundled demo model needs the tiny extra")
    if "caption=" in block:
        pytest.importorskip("spacy")
    examples = sorted(DEMO_EXAMPLES_DIR.glob("*.png"))
    from PIL import Image

    for name, source in zip(("street.jpg", "dog.jpg"), examples):
        with Image.open(source) as image:
            image.convert("RGB").save(tmp_path / name, quality=95)
    shutil.copy(examples[0], tmp_path / "example.png")
    monkeypatch.chdir(tmp_path)
    code = RELEASED.sub('from_pretrained("demo")', block)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(threads)
    if "result.save(" in code:
        assert (tmp_path / "street_boxes.jpg").exists() and (tmp_path / "street.json").exists()


EXTRA_OF_PACKAGE = re.compile(r"pip install ['\"]?glip\[")


@pytest.mark.parametrize("folder", ["glip", "benchmarks", "docs", "experiments", "README.md", "Makefile"])
def test_install_hints_name_extras_as_they_install_from_a_clone(folder):
    """``pip install 'glip[tiny]'`` cannot work (not on the package index): every hint says ``'.[tiny]'``."""
    path = ROOT / folder
    if not path.exists():
        pytest.skip(f"{folder} is not in this checkout")
    files = (
        [path]
        if path.is_file()
        else [p for p in path.rglob("*") if p.suffix in (".py", ".md", ".txt", ".sh")]
    )
    found = [
        f"{file.relative_to(ROOT)}:{number}"
        for file in files
        for number, line in enumerate(file.read_text(errors="replace").splitlines(), 1)
        if EXTRA_OF_PACKAGE.search(line)
    ]
    assert not found, f"install hints naming the package index's glip[...]: {found}"
