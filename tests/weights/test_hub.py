"""glip.weights.hub against a local stand-in for the Hub's HTTP endpoints (nothing reaches the internet)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

import pytest
import torch

from glip.config import get_preset
from glip.models.glip import build_model
from glip.weights import hub, publish
from glip.weights.loading import load_model

hub_constants = pytest.importorskip("huggingface_hub.constants")


class FakeHub:
    """Repos in memory: {repo_id: {path: bytes}}, one commit sha per repo; records every request line."""

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.requests: list[str] = []
        self.commit_payloads: list[list[dict]] = []


def _handler(state: FakeHub):  # type: ignore[no-untyped-def]
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

        def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data: object, code: int = 200) -> None:
            self._send(code, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _resolve(self) -> None:
            path = unquote(urlparse(self.path).path).lstrip("/")
            parts = path.split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                return self._send(404)
            repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
            files = state.repos.get(repo)
            if files is None:
                return self._send(404, b"", {"X-Error-Code": "RepoNotFound"})
            if filename not in files:
                return self._send(
                    404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": state.commits[repo]}
                )
            data = files[filename]
            etag = hashlib.sha1(data).hexdigest()
            self._send(200, data, {"ETag": f'"{etag}"', "X-Repo-Commit": state.commits[repo]})

        def do_HEAD(self) -> None:  # noqa: N802
            state.requests.append(f"HEAD {self.path}")
            self._resolve()

        def do_GET(self) -> None:  # noqa: N802
            state.requests.append(f"GET {self.path}")
            path = unquote(urlparse(self.path).path)
            if path.startswith("/api/models/") and "/revision/" in path:
                repo = path[len("/api/models/") :].split("/revision/")[0]
                if repo not in state.repos:
                    return self._json({"error": "Repository not found"}, 404)
                siblings = [{"rfilename": name} for name in sorted(state.repos[repo])]
                return self._json(
                    {"id": repo, "modelId": repo, "sha": state.commits[repo], "siblings": siblings}
                )
            self._resolve()

        def do_POST(self) -> None:  # noqa: N802
            state.requests.append(f"POST {self.path}")
            path = unquote(urlparse(self.path).path)
            body = self._body()
            port = self.server.server_address[1]
            if path == "/api/repos/create":
                data = json.loads(body)
                repo = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
                state.repos.setdefault(repo, {})
                state.commits.setdefault(repo, "0" * 40)
                return self._json({"url": f"http://127.0.0.1:{port}/{repo}", "name": repo})
            if path == "/api/validate-yaml":  # upload_folder checks a README's metadata block
                return self._json({"warnings": []})
            if path.startswith("/api/models/") and "/preupload/" in path:
                files = json.loads(body)["files"]
                return self._json(
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                    }
                )
            if path.startswith("/api/models/") and "/commit/" in path:
                repo = path[len("/api/models/") :].split("/commit/")[0]
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                state.commit_payloads.append(lines)
                for line in lines:
                    if line["key"] == "file":
                        value = line["value"]
                        assert value["encoding"] == "base64"
                        state.repos[repo][value["path"]] = base64.b64decode(value["content"])
                sha = hashlib.sha1(json.dumps(sorted(state.repos[repo])).encode() + body).hexdigest()
                state.commits[repo] = sha
                return self._json(
                    {"commitUrl": f"http://127.0.0.1:{port}/{repo}/commit/{sha}", "commitOid": sha}
                )
            self._json({"error": f"unexpected {path}"}, 404)

    return Handler


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    state = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield state
    server.shutdown()
    server.server_close()


def _model():  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return build_model(get_preset("tiny_random")).eval()


def test_push_then_load_gives_identical_tensors(fake_hub) -> None:  # type: ignore[no-untyped-def]
    model = _model()
    url = publish.push_to_hub(model, "someone/tiny", metrics={"AP": 0.123}, training_data="synthetic shapes")
    assert "someone/tiny/commit/" in url
    assert {"config.json", "model.safetensors", "README.md"} <= set(fake_hub.repos["someone/tiny"])
    card = fake_hub.repos["someone/tiny"]["README.md"].decode()
    assert "tiny_random" in card and "synthetic shapes" in card and "0.123" in card
    assert any(r.startswith("POST /api/models/someone/tiny/commit/") for r in fake_hub.requests)

    loaded = load_model("someone/tiny")
    own, got = model.state_dict(), loaded.state_dict()
    assert set(own) == set(got)
    for key, value in own.items():
        assert torch.equal(value, got[key]), key
    assert loaded.config == model.config
    assert any("/someone/tiny/resolve/" in r for r in fake_hub.requests)

    # offline: the cached snapshot is used, no request goes out
    count = len(fake_hub.requests)
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        again = hub.download("someone/tiny")
    finally:
        del os.environ["HF_HUB_OFFLINE"]
    assert (again / "model.safetensors").is_file()
    assert len(fake_hub.requests) == count


def test_missing_repo_is_one_clear_error(fake_hub) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(hub.HubError, match="nobody/nothing"):
        load_model("nobody/nothing")


def _mask_head(model):  # type: ignore[no-untyped-def]
    from glip.models.mask_head import MaskHead, MaskHeadConfig

    torch.manual_seed(1)
    return MaskHead(
        MaskHeadConfig.for_model(model.config, num_convs=1, conv_channels=16, embed_dim=16)
    ).eval()


def _assert_same_tensors(a: torch.nn.Module, b: torch.nn.Module) -> None:
    own, got = a.state_dict(), b.state_dict()
    assert set(own) == set(got)
    for key, value in own.items():
        assert torch.equal(value, got[key]), key


def test_save_pretrained_writes_card_and_mask_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from glip.predictor import GLIPPredictor

    model = _model()
    out = publish.save_pretrained(model, tmp_path / "m", metrics={"R@1": 0.5})
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    text = (out / "README.md").read_text()
    assert "parameters" in text and "R@1" in text and "instance masks" not in text
    assert load_model(out).config == model.config

    # a predictor with a mask head: both saved, both loaded back by from_pretrained(directory)
    head = _mask_head(model)
    out = publish.save_pretrained(GLIPPredictor(model, device="cpu", mask_head=head), tmp_path / "seg")
    assert {"mask_head.json", "mask_head.safetensors"} <= {p.name for p in out.iterdir()}
    assert "instance masks" in (out / "README.md").read_text()
    loaded = GLIPPredictor.from_pretrained(str(out), device="cpu")
    assert loaded.mask_head is not None
    _assert_same_tensors(head, loaded.mask_head)
    _assert_same_tensors(model, loaded.model)


def test_predictor_and_glip_load_model_from_the_hub_with_a_mask_head(fake_hub) -> None:  # type: ignore[no-untyped-def]
    """push_to_hub(predictor) uploads the mask head beside the model; GLIPPredictor.from_pretrained("user/repo")
    and glip.load_model("user/repo") download through hf_hub_download and load identical tensors."""
    import glip
    from glip.predictor import GLIPPredictor

    model = _model()
    head = _mask_head(model)
    publish.push_to_hub(
        GLIPPredictor(model, device="cpu", mask_head=head), "someone/seg", training_data="COCO 2017 train"
    )
    files = set(fake_hub.repos["someone/seg"])
    assert files == {
        "config.json",
        "model.safetensors",
        "mask_head.json",
        "mask_head.safetensors",
        "README.md",
    }

    predictor = GLIPPredictor.from_pretrained("someone/seg", device="cpu")
    assert predictor.mask_head is not None
    _assert_same_tensors(head, predictor.mask_head)
    _assert_same_tensors(model, predictor.model)
    assert any("/someone/seg/resolve/" in r and "mask_head.safetensors" in r for r in fake_hub.requests)
    _assert_same_tensors(model, glip.load_model("someone/seg"))

    # a repository without a mask head: the predictor has none (the optional files 404)
    publish.push_to_hub(model, "someone/boxes")
    assert GLIPPredictor.from_pretrained("someone/boxes", device="cpu").mask_head is None


def test_local_model_path_downloads_only_repo_ids(fake_hub, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert hub.local_model_path("glip_t") == "glip_t"  # a released name: load_model downloads it itself
    assert hub.local_model_path("demo") == "demo"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user" / "repo").mkdir(parents=True)
    assert hub.local_model_path("user/repo") == "user/repo"  # an existing folder wins over a repo id
    assert fake_hub.requests == []
    with pytest.raises(hub.HubError, match="nobody/nothing"):
        hub.local_model_path("nobody/nothing")


def test_repo_id_validation() -> None:
    assert hub.is_repo_id("user/repo")
    assert not hub.is_repo_id("a/b/c") and not hub.is_repo_id("../x") and not hub.is_repo_id("noslash")
    with pytest.raises(hub.HubError, match="user/repo"):
        hub.download("not a repo")
