"""The ONNX export that ``make test`` needs runs in a background process from the end of collection, and the
tests that use it run last: the export is mostly single-threaded Python (~5 min on 2 cores, docs/deploy.md),
so it overlaps the rest of the suite on the other core instead of adding to it (tests/export/onnx_models.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

JOB = Path(__file__).with_name("onnx_models.py")


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: start the export only when its tests will run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.export.onnx_models import BACKGROUND, BACKGROUND_EXPORT, BackgroundExport

    uses = [item for item in items if "exported" in getattr(item, "fixturenames", ())]
    if not uses:
        return
    items[:] = [item for item in items if item not in uses] + uses  # last: the export has time to finish
    if config.option.collectonly:
        return
    directory = Path(tempfile.mkdtemp(prefix="glip-onnx-"))
    log = directory / "export.log"
    with log.open("wb") as stream:
        process = subprocess.Popen(
            [sys.executable, str(JOB), BACKGROUND, str(directory / "export")],
            stdout=stream,
            stderr=subprocess.STDOUT,
        )
    config.stash[BACKGROUND_EXPORT] = BackgroundExport(process, directory / "export", log)


def pytest_unconfigure(config: pytest.Config) -> None:
    from tests.export.onnx_models import BACKGROUND_EXPORT

    job = config.stash.get(BACKGROUND_EXPORT, None)
    if job is None:
        return
    if job.process.poll() is None:  # the run ended early (-x, Ctrl-C): stop the export
        job.process.kill()
        job.process.wait()
    shutil.rmtree(job.directory.parent, ignore_errors=True)
