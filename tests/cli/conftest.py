"""Shared by the ``glip`` command tests: one intra-op thread, and the self-training corpus fixtures."""

from __future__ import annotations

from tests.helpers import make_image, one_thread  # noqa: F401  (fixture)
from tests.selftrain.conftest import corpus, random_teacher_dir  # noqa: F401  (fixtures)
