"""``glip serve``: an HTTP server around one :class:`~glip.predictor.GLIPPredictor`.

* :mod:`glip.serve.batcher`: a bounded queue + one worker that batches concurrent requests.
* :mod:`glip.serve.app`: the FastAPI app (``create_app``): endpoints, request checks, the web page.
* :mod:`glip.serve.server`: running the app with uvicorn, in the foreground or in a background thread.
* the ``glip serve`` command itself is :mod:`glip.cli.serve`.

Needs the ``serve`` extra: ``pip install '.[serve]' (in the glip checkout)``.
"""

from glip.serve.app import ServeLimits, create_app
from glip.serve.batcher import Batcher, BatcherStats, DetectRequest, QueueFullError

__all__ = ["Batcher", "BatcherStats", "DetectRequest", "QueueFullError", "ServeLimits", "create_app"]
