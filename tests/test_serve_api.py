"""The explorer's server (``genlab serve``): every endpoint on each kind of run, one-line 4xx answers to malformed
requests (never a 500), the NDJSON stream of pixel-by-pixel drawing, "newest wins" for decode requests, the text
endpoints, nothing written to the run folders, and the real server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import genlab
from genlab.errors import GenlabError
from genlab.serve import DEFAULT_HOST, is_loopback
from genlab.serve.app import SUPERSEDED, create_app, stream_drawing

from helpers import TINY_POEMS

ORDER = ("vae", "cvae", "pixelcnn", "dim", "gan", "bigan", "text")
ID = {name: str(i) for i, name in enumerate(ORDER)}


def _listing(folders: dict[str, Path]) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for f in folders.values() for p in sorted(f.rglob("*"))}


@pytest.fixture(scope="module")
def served(served_runs: dict[str, Path]) -> Any:
    before = _listing(served_runs)
    threads = torch.get_num_threads()
    app = create_app([served_runs[n] for n in ORDER], threads=1)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, app
    finally:
        torch.set_num_threads(threads)  # the app sets the process's threads; later tests get theirs back
    assert _listing(served_runs) == before, "the server wrote into a run folder"


@pytest.fixture
def client(served: Any) -> TestClient:
    return served[0]


def _png(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def _post(client: TestClient, name: str, route: str, body: Any) -> dict[str, Any]:
    return _ok(client.post(f"/api/runs/{ID[name]}/{route}", json=body))


def _stream(client: TestClient, name: str, route: str, body: Any) -> list[dict[str, Any]]:
    r = client.post(f"/api/runs/{ID[name]}/{route}", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson"), r.text
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


# --- runs ---

def test_health_page_and_run_infos(client: TestClient) -> None:
    assert _ok(client.get("/api/health")) == {"ok": True}
    page = client.get("/")
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert client.get("/favicon.ico").status_code in (200, 204)
    runs = _ok(client.get("/api/runs"))["runs"]
    assert [r["id"] for r in runs] == [ID[n] for n in ORDER]
    info = {n: r for n, r in zip(ORDER, runs)}
    assert info["vae"]["modes"] == ["latent", "encoder"] and info["vae"]["latent_dim"] == 4
    kls = [d["kl"] for d in info["vae"]["dims"]]
    assert sorted(d["index"] for d in info["vae"]["dims"]) == [0, 1, 2, 3] and kls == sorted(kls, reverse=True)
    assert "conditional" in info["cvae"]["modes"] and info["cvae"]["num_classes"] == 10
    assert info["pixelcnn"]["modes"] == ["autoregressive"] and info["pixelcnn"]["temperature"] == 1.0
    assert info["dim"]["modes"] == ["encoder"] and info["dim"]["latent_dim"] is None
    assert info["gan"]["modes"] == ["noise"] and [d["kl"] for d in info["gan"]["dims"]] == [None] * 6
    assert {"latent", "noise", "encoder"} <= set(info["bigan"]["modes"])
    assert info["text"]["kind"] == "text" and info["text"]["image_shape"] is None
    assert info["text"]["max_text_length"] == 10  # five characters twice; the punctuation is put back
    for r in runs:
        assert r == _ok(client.get(f"/api/runs/{r['id']}"))
        assert r["kind"] == "text" or (r["image_shape"] == [1, 8, 8] and r["test_count"] == 300)


def test_test_images(client: TestClient) -> None:
    got = _ok(client.get(f"/api/runs/{ID['vae']}/test-images?offset=290&count=16"))
    assert got["total"] == 300 and [im["index"] for im in got["images"]] == list(range(290, 300))
    assert _png(got["images"][0]["image"]).shape == (8, 8) and isinstance(got["images"][0]["label"], int)


# --- codes ---

@pytest.mark.parametrize("name", ["vae", "cvae", "gan", "bigan"])
def test_decode_random_and_batch(client: TestClient, name: str) -> None:
    info = _ok(client.get(f"/api/runs/{ID[name]}"))
    size, label = info["latent_dim"], (0 if info["num_classes"] else None)  # random draws decode under class 0
    a = _post(client, name, "decode", {"z": [0.0] * size, "label": label})["image"]
    b = _post(client, name, "decode", {"z": [2.0] + [-1.0] * (size - 1), "label": label})["image"]
    assert _png(a).shape == (8, 8) and not np.array_equal(_png(a), _png(b)), "decode does not follow z"
    drawn = _post(client, name, "random", {"seed": 1})
    assert len(drawn["z"]) == size and drawn == _post(client, name, "random", {"seed": 1})
    batch = _post(client, name, "decode-batch", {"zs": [[0.0] * size, drawn["z"]], "label": label})["images"]
    assert batch == [a, drawn["image"]]


@pytest.mark.parametrize("name", ["vae", "cvae", "bigan"])
def test_encode_and_interpolate(client: TestClient, name: str) -> None:
    got = _post(client, name, "encode", {"index": 5, "label": None})
    assert len(got["z"]) == _ok(client.get(f"/api/runs/{ID[name]}"))["latent_dim"]
    assert _png(got["image"]).shape == _png(got["reconstruction"]).shape == (8, 8)
    first = _post(client, name, "decode", {"z": got["z"], "label": None if name != "cvae" else
                                           _ok(client.get(f"/api/runs/{ID[name]}/test-images?offset=5&count=1"))
                                           ["images"][0]["label"]})["image"]
    assert first == got["reconstruction"]
    for mode in ("linear", "spherical"):
        frames = _post(client, name, "interpolate", {"a": 5, "b": 9, "steps": 7, "mode": mode, "label": None})
        assert len(frames["frames"]) == 7 and frames["frames"][0] == got["reconstruction"]


def test_transfer_under_every_class(client: TestClient) -> None:
    by_index = _post(client, "cvae", "transfer", {"index": 0})["images"]
    assert [im["label"] for im in by_index] == list(range(10)) and all(im["name"] for im in by_index)
    by_code = _post(client, "cvae", "transfer", {"z": [0.5, -0.5]})["images"]
    assert len({im["image"] for im in by_code}) > 1


@pytest.mark.parametrize("name", ["vae", "dim", "bigan"])
def test_neighbours(client: TestClient, name: str) -> None:
    got = _post(client, name, "neighbours", {"index": 3, "k": 5})
    assert len(got["neighbours"]) == 5 and _png(got["query"]).shape == (8, 8)
    assert all(0 <= n["index"] < 1497 and isinstance(n["label"], int) for n in got["neighbours"])


# --- drawing ---

def test_one_pass_sample_is_json(client: TestClient) -> None:
    assert len(_post(client, "vae", "sample", {"n": 3, "seed": 0})["images"]) == 3
    assert len(_post(client, "cvae", "sample", {"n": 2, "seed": 0, "label": 4})["images"]) == 2
    assert len(_post(client, "gan", "sample", {"n": 2, "seed": 0})["images"]) == 2


def test_pixel_sample_streams_progress_then_the_result(client: TestClient) -> None:
    lines = _stream(client, "pixelcnn", "sample", {"n": 2, "seed": 3, "temperature": 0.5})
    progress = [m for m in lines if m["type"] == "progress"]
    assert [m["done"] for m in progress] == sorted({m["done"] for m in progress}) and len(progress) == 8
    assert progress[-1]["done"] == progress[-1]["total"] == 64
    assert lines[-1]["type"] == "result" and len(lines[-1]["images"]) == 2
    assert set(np.unique(_png(lines[-1]["images"][0]))) <= {0, 255}


def _test_image(client: TestClient, index: int) -> np.ndarray:
    got = _ok(client.get(f"/api/runs/{ID['pixelcnn']}/test-images?offset={index}&count=1"))
    return _png(got["images"][0]["image"])


def test_completion_keeps_the_given_pixels(client: TestClient) -> None:
    original = _test_image(client, 7)
    lines = _stream(client, "pixelcnn", "complete", {"index": 7, "hide": 0.5, "seed": 1})
    assert [m["done"] for m in lines if m["type"] == "progress"] == [8, 16, 24, 32]
    done = _png(lines[-1]["images"][0])
    assert np.array_equal(done[:4], original[:4])
    mask = [[0] * 8 for _ in range(8)]
    for r, c in ((2, 3), (2, 4), (5, 1), (6, 6)):
        mask[r][c] = 1
    lines = _stream(client, "pixelcnn", "complete", {"index": 7, "mask": mask, "seed": 2, "temperature": 1.0})
    assert lines[-1]["type"] == "result"
    drawn = _png(lines[-1]["images"][0])
    kept = np.array(mask) == 0
    assert np.array_equal(drawn[kept], original[kept])


def test_a_closed_stream_stops_the_drawing(served: Any) -> None:
    """The page's Cancel aborts the fetch; the server closes the stream and the model stops at its next row."""
    state = served[1].state.runs[ID["pixelcnn"]]
    rows: list[int] = []

    def draw(callback: Any) -> torch.Tensor:
        for r in range(1, 200):
            time.sleep(0.005)
            if callback(r, 200) is False:
                break
            rows.append(r)
        return torch.zeros(1, 1, 8, 8)

    async def first_then_close() -> None:
        stream = stream_drawing(state, draw)
        first = json.loads(await stream.__anext__())
        assert first == {"type": "progress", "done": 1, "total": 200}
        await stream.aclose()
        await asyncio.sleep(0.2)

    asyncio.run(first_then_close())
    assert len(rows) < 50, "the drawing went on after the stream was closed"
    assert state.run(lambda: "free") == "free"  # and the run's lock was given back


def test_a_class_mean_cvae_moves_one_offset_between_classes(served_runs: dict[str, Path]) -> None:
    """The class-mean CVAE decodes z alone (its class is where z lies): the explorer's code is the offset from the
    class's prior mean, so a class button changes the image and an encoded image decodes to its reconstruction."""
    threads = torch.get_num_threads()
    try:
        with TestClient(create_app([served_runs["cvae-mean"]], threads=1), raise_server_exceptions=False) as c:
            post = lambda route, body: _ok(c.post(f"/api/runs/0/{route}", json=body))  # noqa: E731
            under = [_png(post("decode", {"z": [0.3, -0.2], "label": k})["image"]) for k in (0, 1)]
            assert np.abs(under[0].astype(int) - under[1].astype(int)).mean() > 1.0
            encoded = post("encode", {"index": 4, "label": None})
            label = _ok(c.get("/api/runs/0/test-images?offset=4&count=1"))["images"][0]["label"]
            again = post("decode", {"z": encoded["z"], "label": label})["image"]
            assert np.abs(_png(again).astype(int) - _png(encoded["reconstruction"]).astype(int)).max() <= 1
            grid = [_png(i["image"]) for i in post("transfer", {"z": encoded["z"]})["images"]]
            assert len(grid) == 10 and len({g.tobytes() for g in grid}) > 1
    finally:
        torch.set_num_threads(threads)


# --- newest wins ---

def test_an_overtaken_decode_is_superseded(served: Any) -> None:
    client, app = served
    state = app.state.runs[ID["vae"]]
    release, busy = threading.Event(), threading.Event()
    holder = threading.Thread(target=state.run, args=(lambda: (busy.set(), release.wait()),))
    holder.start()
    assert busy.wait(5)  # the run is busy
    answers: dict[str, Any] = {}
    old = state.take_ticket()
    waiter = threading.Thread(target=lambda: answers.update(old=state.run_latest(old, lambda: "computed")))
    waiter.start()
    time.sleep(0.05)
    new = state.take_ticket()  # a newer request arrives: the waiting one answers at once
    waiter.join(2)
    assert answers == {"old": SUPERSEDED} and not waiter.is_alive()
    release.set()
    holder.join()
    assert state.run_latest(new, lambda: "computed") == "computed"
    # through HTTP: requests in a row are never superseded
    for _ in range(3):
        assert "image" in _post(client, "vae", "decode", {"z": [0.1] * 4, "label": None})


# --- text ---

def test_text_sample_and_interpolation(client: TestClient) -> None:
    lines = _post(client, "text", "text/sample", {"n": 5, "seed": 0, "temperature": 0.5})["lines"]
    assert len(lines) == 5 and all(isinstance(s, str) and s for s in lines)
    first, last = TINY_POEMS[0], TINY_POEMS[1]
    got = _post(client, "text", "text/interpolate", {"first": first, "last": last, "steps": 6})
    assert len(got["lines"]) == 6 and got["lines"][0] == first and got["lines"][-1] == last
    assert got["unknown"] == {"first": [], "last": []}
    odd = _post(client, "text", "text/interpolate", {"first": "白日依山盡，黃河入海龍。", "last": last, "steps": 2})
    assert odd["unknown"]["first"] == ["龍"]


# --- refusals ---

MALFORMED: list[tuple[str, str, Any, int]] = [
    ("vae", "decode", {"z": "0,0,0,0"}, 422),  # wrong type
    ("vae", "decode", {"z": [0, 0, 0]}, 422),  # wrong length
    ("vae", "decode", {"z": [0.0] * 4, "label": 1}, 422),  # a label for an unconditional model
    ("vae", "decode", {"z": [11.0, 0, 0, 0]}, 422),  # |v| > 10
    ("vae", "decode", {"z": [0.0] * 4, "extra": 1}, 422),  # an unknown field
    ("vae", "decode", {}, 422),  # a missing field
    ("vae", "decode", [0.0, 0.0], 422),  # not an object
    ("vae", "decode-batch", {"zs": []}, 422),
    ("vae", "decode-batch", {"zs": [[0.0] * 4] * 65}, 422),
    ("cvae", "decode", {"z": [0.0, 0.0], "label": 10}, 422),  # label out of range
    ("cvae", "decode", {"z": [0.0, 0.0], "label": -1}, 422),
    ("cvae", "decode", {"z": [0.0, 0.0], "label": "3"}, 422),
    ("vae", "encode", {"index": -1}, 422),  # negative index
    ("vae", "encode", {"index": 300}, 422),  # out of range
    ("vae", "encode", {"index": 1.5}, 422),
    ("vae", "random", {"seed": -4}, 422),
    ("vae", "interpolate", {"a": 0, "b": 1, "steps": 1}, 422),  # steps out of range
    ("vae", "interpolate", {"a": 0, "b": 1, "steps": 65}, 422),
    ("vae", "interpolate", {"a": 0, "b": 1, "steps": 4, "mode": "cubic"}, 422),
    ("vae", "neighbours", {"index": 0, "k": 0}, 422),
    ("vae", "neighbours", {"index": 0, "k": 33}, 422),
    ("cvae", "transfer", {"index": 0, "z": [0.0, 0.0]}, 422),  # both sources
    ("cvae", "transfer", {}, 422),
    ("pixelcnn", "sample", {"n": 17, "seed": 0}, 422),
    ("pixelcnn", "sample", {"n": 1, "seed": 0, "temperature": 6}, 422),
    ("pixelcnn", "complete", {"index": 0, "mask": [[0] * 8] * 7}, 422),  # wrong mask shape
    ("pixelcnn", "complete", {"index": 0, "mask": [[0] * 7] * 8}, 422),
    ("pixelcnn", "complete", {"index": 0, "mask": [[0] * 8] * 8}, 422),  # hides nothing
    ("pixelcnn", "complete", {"index": 0, "mask": [[2] * 8] * 8}, 422),
    ("pixelcnn", "complete", {"index": 0, "hide": 0.5, "mask": [[1] * 8] * 8}, 422),  # both
    ("pixelcnn", "complete", {"index": 0, "hide": 1.0}, 422),
    ("pixelcnn", "complete", {"index": 300, "hide": 0.5}, 422),
    ("text", "text/interpolate", {"first": "", "last": "x", "steps": 4}, 422),  # empty text
    ("text", "text/interpolate", {"first": "   ", "last": "x", "steps": 4}, 422),
    ("text", "text/interpolate", {"first": "x" * 65, "last": "x", "steps": 4}, 422),  # too long
    ("text", "text/interpolate", {"first": "白日", "last": "x", "steps": 33}, 422),
    ("text", "text/sample", {"n": 0}, 422),
    ("vae", "sample", {"n": 1, "seed": 0, "temperature": 0.5}, 422),  # no temperature in one pass
    ("text", "text/sample", {"n": 1, "seed": 0, "temperature": 1e-300}, 422),  # logits / T would overflow
    ("pixelcnn", "sample", {"n": 1, "seed": 0, "temperature": 0.001}, 422),
    # well formed but impossible for the model: 400, saying what it can do
    ("dim", "decode", {"z": [0.0] * 8}, 400),
    ("dim", "sample", {"n": 1, "seed": 0}, 400),
    ("gan", "encode", {"index": 0}, 400),
    ("vae", "complete", {"index": 0, "hide": 0.5}, 400),
    ("vae", "transfer", {"index": 0}, 400),
    ("pixelcnn", "decode", {"z": [0.0]}, 400),
    ("gan", "neighbours", {"index": 0, "k": 1}, 400),
    ("vae", "text/sample", {"n": 1}, 400),
    ("text", "decode", {"z": [0.0] * 8}, 400),
    ("text", "sample", {"n": 1}, 400),
    ("text", "text/interpolate", {"first": "白日依山盡，黃河入海流。白日", "last": "x", "steps": 2}, 400),
]


@pytest.mark.parametrize("name,route,body,status", MALFORMED)
def test_malformed_requests_are_one_line_4xx(client: TestClient, name: str, route: str, body: Any,
                                             status: int) -> None:
    r = client.post(f"/api/runs/{ID[name]}/{route}", json=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert isinstance(error, str) and error and "\n" not in error and "Traceback" not in error


def test_raw_bodies_unknown_runs_and_routes(client: TestClient) -> None:
    def check(r: Any, status: int) -> str:
        assert r.status_code == status, r.text
        return r.json()["error"]

    headers = {"content-type": "application/json"}
    for raw in ('{"z": [NaN, 0, 0, 0]}', '{"z": [Infinity, 0, 0, 0]}', '{"z": [0, 0', "not json", ""):
        check(client.post(f"/api/runs/{ID['vae']}/decode", content=raw, headers=headers), 422)
    start = time.perf_counter()
    check(client.post(f"/api/runs/{ID['vae']}/decode", json={"z": [0.5] * 10**6}), 422)  # huge arrays
    check(client.post(f"/api/runs/{ID['vae']}/decode-batch", json={"zs": [[0.5] * 5000] * 60}), 422)
    assert time.perf_counter() - start < 10
    check(client.post(f"/api/runs/{ID['vae']}/decode", content=b"[" + b"0," * 5_000_000 + b"0]",
                      headers=headers), 413)
    assert "no run '9'" in check(client.post("/api/runs/9/decode", json={"z": [0.0] * 4}), 404)
    check(client.get("/api/runs/x"), 404)
    check(client.get("/api/nothing"), 404)
    check(client.get(f"/api/runs/{ID['vae']}/test-images?offset=-1"), 422)
    check(client.get(f"/api/runs/{ID['vae']}/test-images?count=65"), 422)
    check(client.get(f"/api/runs/{ID['vae']}/test-images?offset=301"), 422)
    check(client.get(f"/api/runs/{ID['text']}/test-images"), 400)
    check(client.get(f"/api/runs/{ID['vae']}/decode"), 405)


# --- the real server ---

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_real_server_answers_on_loopback(served_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    import inspect

    assert inspect.signature(genlab.serve).parameters["host"].default == DEFAULT_HOST == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    port = _free_port()
    thread = threading.Thread(target=genlab.serve, args=([served_runs["vae"]],), kwargs={"port": port, "threads": 1},
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/api/health"
    for _ in range(200):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                assert json.loads(r.read()) == {"ok": True}
                break
        except OSError:
            time.sleep(0.05)
    else:
        pytest.fail("the server did not answer on 127.0.0.1")
    assert f"http://127.0.0.1:{port}/" in capsys.readouterr().out
    own = _non_loopback_address()
    if own is not None:  # the same port on this machine's network address: nobody listens there
        with socket.socket() as probe:
            probe.settimeout(2)
            assert probe.connect_ex((own, port)) != 0, f"the server answers on {own}, not only on 127.0.0.1"
    with pytest.raises(GenlabError, match=f"port {port} on 127.0.0.1 is in use"):
        genlab.serve([served_runs["vae"]], port=port)


def _non_loopback_address() -> str | None:
    """This machine's address on its network (the one a route out would use), or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP: picks a route, sends nothing
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(address) or address == "0.0.0.0" else address


def test_a_client_that_goes_away_stops_the_drawing(served_runs: dict[str, Path]) -> None:
    """Through a real server: the page's Cancel aborts the fetch, and the model hears it at its next row."""
    import http.client

    import uvicorn

    app = create_app([served_runs["pixelcnn"]], threads=1)
    model = app.state.runs["0"].model
    rows: list[int] = []

    def slow_sample(n: int, *, callback: Any = None, **kwargs: Any) -> torch.Tensor:
        for r in range(1, 400):
            time.sleep(0.01)
            if callback(r, 400) is False:
                break
            rows.append(r)
        return torch.zeros(n, 1, 8, 8)

    model.sample = slow_sample  # an instance attribute: the model keeps its abilities
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the test server did not start")
            time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("POST", "/api/runs/0/sample", json.dumps({"n": 1, "seed": 0}),
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        assert json.loads(response.readline())["type"] == "progress"
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        time.sleep(1.0)
        stopped_at = len(rows)
        time.sleep(0.5)
        assert len(rows) == stopped_at < 300, "the drawing went on after the client left"
    finally:
        server.should_exit = True
        thread.join(10)


def test_cli_serve_warns_off_loopback_and_stops_cleanly_on_ctrl_c(served_runs: dict[str, Path]) -> None:
    import signal
    import subprocess
    import sys

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "genlab", "serve", str(served_runs["vae"]), "--port", str(port),
                             "--host", "0.0.0.0", "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"genlab serve did not come up: {proc.poll()=}")
                time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0 and f"http://127.0.0.1:{port}/" in out
    assert err.count("\n") == 1 and "warning" in err and "0.0.0.0" in err and "Traceback" not in err
