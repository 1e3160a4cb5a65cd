"""GLIP's network modules. Importing any of them turns on :func:`glip.runtime.flush_denormals` (opt-out:
``GLIP_FLUSH_DENORMAL=0``), early enough for torch's CPU thread pool to inherit it."""

from glip.runtime import flush_denormals

flush_denormals()
