"""Exporting GLIP for serving: ONNX (:mod:`glip.export.onnx`)."""
