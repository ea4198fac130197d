"""Named weight files: downloads from an HTTP server on 127.0.0.1 are verified (SHA-256 or torchvision's prefix),
a wrong checksum is refused and nothing is kept, offline errors say which file to put where. No internet."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
from functools import partial

import pytest
import torch

from medclass.networks import build_classifier, hub
from medclass.networks.hub import WEIGHTS, WeightFile, cache_dir, fetch
from tests.networks.published import BasicBlock, RefResNet, randomise


@pytest.fixture()
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields ``(base url, served folder, request log)``."""
    www = tmp_path / "www"
    www.mkdir()
    log: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            log.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, log
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("MEDCLASS_CACHE", str(folder))
    monkeypatch.delenv("MEDCLASS_OFFLINE", raising=False)
    return folder


def _register(monkeypatch, entry: WeightFile) -> None:
    monkeypatch.setitem(WEIGHTS, entry.name, entry)


def _weights_file(www, name="resnet18.pth"):
    path = www / name
    torch.save(randomise(RefResNet(BasicBlock, [2, 2, 2, 2])).state_dict(), path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_registry_pins_every_downloadable_file():
    for name, e in WEIGHTS.items():
        assert e.url.startswith("https://"), name
        if e.sha256:
            assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), name
        if e.url.startswith("https://huggingface.co/"):  # pinned to a commit, not a branch
            assert re.search(r"/resolve/[0-9a-f]{40}/", e.url), name
        if e.sha256_prefix:  # torchvision: the prefix is the hash in the published file name
            assert e.url.endswith(f"-{e.sha256_prefix}.pth"), name
        assert e.layout, name
    assert {"torchvision:resnet18", "torchvision:resnet34", "torchvision:resnet50", "torchvision:densenet121",
            "torchvision:vit_b_16", "xrv:densenet121-res224-all", "medicalnet:resnet10", "medicalnet:resnet18",
            "medicalnet:resnet34", "medicalnet:resnet50"} <= set(WEIGHTS)


def test_download_verified_cached_and_used(server, cache, monkeypatch):
    base, www, log = server
    _, digest = _weights_file(www)
    entry = WeightFile("test:resnet18", f"{base}/resnet18.pth", "test/resnet18.pth", sha256=digest,
                       layout="torchvision_resnet", preprocessing=dict(hub.IMAGENET))
    _register(monkeypatch, entry)
    path = fetch("test:resnet18")
    assert path == cache / "test" / "resnet18.pth" and path.is_file() and log == ["/resnet18.pth"]
    assert fetch("test:resnet18") == path and len(log) == 1  # from the cache, verified, no second request
    model = build_classifier("resnet18", 2, 1, 2, pretrained="test:resnet18")
    assert model.pretrained["source"] == "test:resnet18" and model.pretrained["sha256"] == digest
    assert len(log) == 1


def test_wrong_checksum_is_refused_and_nothing_kept(server, cache, monkeypatch):
    base, www, _ = server
    _weights_file(www)
    entry = WeightFile("test:bad", f"{base}/resnet18.pth", "test/bad.pth", sha256="0" * 64,
                       layout="torchvision_resnet")
    _register(monkeypatch, entry)
    with pytest.raises(ValueError, match=r"has SHA-256 [0-9a-f]{64}, expected 0{64} for test:bad"):
        fetch("test:bad")
    assert not (cache / "test").exists() or not any((cache / "test").iterdir())


def test_sha256_prefix_as_torchvision_publishes(server, cache, monkeypatch):
    base, www, _ = server
    src, digest = _weights_file(www)
    good = src.rename(www / f"resnet18-{digest[:8]}.pth")
    _register(monkeypatch, WeightFile("test:tv", f"{base}/{good.name}", f"tv/{good.name}", sha256_prefix=digest[:8]))
    assert fetch("test:tv").is_file()
    wrong = "0" * 8 if not digest.startswith("0" * 8) else "f" * 8
    _register(monkeypatch, WeightFile("test:tv_bad", f"{base}/{good.name}", "tv/bad.pth", sha256_prefix=wrong))
    with pytest.raises(ValueError, match=f"does not start with {wrong}"):
        fetch("test:tv_bad")
    assert not (cache / "tv" / "bad.pth").exists()


def test_size_mismatch_and_http_errors(server, cache, monkeypatch):
    base, www, _ = server
    _, digest = _weights_file(www)
    _register(monkeypatch, WeightFile("test:size", f"{base}/resnet18.pth", "s/x.pth", sha256=digest, size=12))
    with pytest.raises(ValueError, match="expected 12"):
        fetch("test:size")
    _register(monkeypatch, WeightFile("test:404", f"{base}/nothing.pth", "s/y.pth", sha256=digest))
    with pytest.raises(FileNotFoundError, match=r"could not be downloaded .*404.*put it at " + re.escape(str(cache))):
        fetch("test:404")
    assert not list((cache / "s").glob("*"))


def test_offline_and_unpublished_checksums_say_where_to_put_the_file(server, cache, monkeypatch):
    base, www, log = server
    src, digest = _weights_file(www)
    entry = WeightFile("test:off", f"{base}/resnet18.pth", "off/resnet18.pth", sha256=digest)
    _register(monkeypatch, entry)
    monkeypatch.setenv("MEDCLASS_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=re.escape(str(cache / "off" / "resnet18.pth"))):
        fetch("test:off")
    assert log == []
    (cache / "off").mkdir(parents=True)
    (cache / "off" / "resnet18.pth").write_bytes(src.read_bytes())  # the user puts it there: used offline
    assert fetch("test:off").is_file()
    # no published checksum: never downloaded, but a file placed by hand is used (its SHA-256 logged)
    manual = WeightFile("test:manual", f"{base}/resnet18.pth", "m/resnet18.pth")
    _register(monkeypatch, manual)
    monkeypatch.delenv("MEDCLASS_OFFLINE")
    with pytest.raises(FileNotFoundError, match="no published checksum.*" + re.escape(str(cache / "m"))):
        fetch("test:manual")
    assert log == []


def test_corrupt_cached_file_is_reported(server, cache, monkeypatch):
    base, www, _ = server
    _, digest = _weights_file(www)
    _register(monkeypatch, WeightFile("test:c", f"{base}/resnet18.pth", "c/r.pth", sha256=digest))
    (cache / "c").mkdir(parents=True)
    (cache / "c" / "r.pth").write_bytes(b"partial")
    with pytest.raises(ValueError, match=r"cached file .*r\.pth has SHA-256 .*delete it"):
        fetch("test:c")


def test_cache_dir_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("MEDCLASS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "medclass"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir().parts[-2:] == (".cache", "medclass")
