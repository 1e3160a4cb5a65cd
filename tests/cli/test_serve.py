"""glip.cli.serve: the `glip serve` arguments and the runner's early exits."""

from __future__ import annotations

import argparse

from glip.cli.serve import add_serve_arguments, run_serve
from glip.serve.server import bind_socket


def parse(*argv: str) -> argparse.Namespace:
    return add_serve_arguments(argparse.ArgumentParser(prog="glip serve")).parse_args(list(argv))


def test_defaults_and_options():
    args = parse()
    assert (args.model, args.host, args.port, args.device) == ("demo", "127.0.0.1", 8000, "auto")
    assert (args.max_batch, args.max_wait_ms, args.max_queue, args.max_upload_mb) == (8, 10.0, 64, 20.0)
    args = parse("--model", "glip_t", "--port", "9000", "--max-batch", "16", "--classes", "cat,dog")
    assert (args.model, args.port, args.max_batch, args.classes) == ("glip_t", 9000, 16, "cat,dog")


def test_a_port_in_use_exits_2_before_loading_the_model(capsys):
    taken = bind_socket("127.0.0.1", 0)
    try:
        port = taken.getsockname()[1]
        # a model that does not exist: the port is checked first, so this never gets to load it
        assert run_serve(parse("--model", "/nonexistent/model", "--port", str(port))) == 2
    finally:
        taken.close()
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().out


def test_runtime_onnxruntime_takes_an_export_folder(tmp_path):
    import pytest

    from glip.export.onnx import ExportError
    from glip.serve.app import load_served_predictor

    assert parse().runtime == "pytorch"
    assert parse("--model", "out/", "--runtime", "onnxruntime").runtime == "onnxruntime"
    with pytest.raises(ExportError):  # not an export (or onnxruntime missing): one clear ValueError
        load_served_predictor(str(tmp_path), None, "auto", "fp32", runtime="onnxruntime")
    with pytest.raises(ValueError, match="CPU in fp32"):
        load_served_predictor(str(tmp_path), None, "cpu", "fp16", runtime="onnxruntime")
