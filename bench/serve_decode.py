"""The explorer's decode request (``genlab serve``): how long the server takes to turn a slider move into an image,
for the 784-400-20 MLP VAE, against the issue's target of 30 ms.

A run of that VAE is made in a temporary folder (one optimizer step on the embedded mnist-5k digits, 28x28: the
weights hardly matter to the cost; ``--data mnist`` uses MNIST where ``GENLAB_DATA`` has it), served by a real
uvicorn on 127.0.0.1 in this process, and sent ``--requests`` decode requests of random codes over one keep-alive
HTTP connection, one after the other. The server time of each request is taken around the app (from the request's
arrival at the app to the last byte of its answer, JSON parsing, validation, the decoder, the PNG and the JSON
included); the round trip is the client's, on the same machine. The peer, timed in the same run on the same
codes: the work itself in plain Python, without the server (``model.decode`` of one code and the same PNG data URL),
so the ratio is what serving adds.

    .venv/bin/python -m bench.serve_decode --requests 1000 --threads 1
"""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from bench import README, RESULTS_DIR
from bench.machine import machine_info
from bench.results import command_line, publish

BENCHMARK = "serve_decode"
TARGET_MS = 30.0


class ServerTimer:
    """ASGI middleware that records the seconds from a request's arrival at the app to the end of its answer."""

    def __init__(self, app: Any):
        self.app, self.seconds = app, []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                self.seconds.append(time.perf_counter() - start)

        await self.app(scope, receive, timed_send)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def make_run(folder: Path, data: str, threads: int) -> Path:
    import genlab

    run = folder / "vae-784-400-20"
    genlab.train("vae", data, out=run, arch="mlp", hidden=(400,), latent_dim=20, max_steps=1, epochs=1,
                 eval_every=0, batch_size=128, threads=threads, progress=False)
    return run


def bare_decode_seconds(run: Path, count: int) -> list[float]:
    """Seconds of the peer: the loaded model's ``decode`` of one random code and its PNG data URL, in plain Python
    (after 20 not timed), with the codes the server was sent."""
    import genlab
    from genlab.serve.app import png_url

    model = genlab.load(run)
    g = torch.Generator().manual_seed(0)
    out = []
    with torch.no_grad():
        for i in range(20 + count):
            z = torch.randn(20, generator=g).clamp(-10, 10)
            start = time.perf_counter()
            png_url(model.decode(z[None])[0])
            if i >= 20:
                out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000, help="decode requests timed (after 20 not timed)")
    ap.add_argument("--data", default="mnist-5k", help="the run's dataset, 28x28 (mnist-5k is embedded)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    ap.add_argument("--results-dir", default=str(RESULTS_DIR))
    ap.add_argument("--readme", default=str(README), help="the README whose tables are refreshed ('' none)")
    args = ap.parse_args(argv)
    if min(args.requests, args.threads) < 1:
        ap.error("--requests and --threads must be >= 1")
    import uvicorn

    from genlab.serve.app import create_app

    torch.set_num_threads(args.threads)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="genlab-bench-serve-") as tmp:
        run = make_run(Path(tmp), args.data, args.threads)
        timer = ServerTimer(create_app([run], threads=args.threads))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(timer, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False, lifespan="off"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            g = torch.Generator().manual_seed(0)
            warmup = 20
            round_trips = []
            for i in range(warmup + args.requests):
                body = json.dumps({"z": torch.randn(20, generator=g).clamp(-10, 10).tolist(), "label": None})
                start = time.perf_counter()
                conn.request("POST", "/api/runs/0/decode", body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = json.loads(response.read())
                elapsed = time.perf_counter() - start
                if response.status != 200 or "image" not in answer:
                    raise SystemExit(f"decode request {i} failed: {response.status} {answer}")
                if i >= warmup:
                    round_trips.append(elapsed)
            conn.close()
        finally:
            server.should_exit = True
            thread.join(10)
        bare = bare_decode_seconds(run, args.requests)
    server_s = timer.seconds[-args.requests:]
    ms = {"server": {"median": 1e3 * statistics.median(server_s), "p95": 1e3 * percentile(server_s, 0.95)},
          "round trip": {"median": 1e3 * statistics.median(round_trips), "p95": 1e3 * percentile(round_trips, 0.95)},
          "decode + PNG in Python, no server (peer)": {"median": 1e3 * statistics.median(bare),
                                                       "p95": 1e3 * percentile(bare, 0.95)}}
    ratio = statistics.median(server_s) / statistics.median(bare)
    rows = [[what, f"{v['median']:.2f}", f"{v['p95']:.2f}"] for what, v in ms.items()]
    for what, v in ms.items():
        print(f"{what}: median {v['median']:.2f} ms, p95 {v['p95']:.2f} ms", flush=True)
    result = {
        "title": f"A decode request of the explorer (`genlab serve`): MLP VAE 784-400-20, {args.requests} requests",
        "command": command_line(f"bench.{BENCHMARK}", sys.argv[1:] if argv is None else argv),
        "requests": args.requests, "data": args.data, "ms": ms, "target_ms": TARGET_MS,
        "server_over_bare_median": ratio,
        "meets_target": ms["server"]["p95"] < TARGET_MS, "threads": torch.get_num_threads(), "machine": machine,
        "table": {"columns": ["time per decode request", "median, ms", "p95, ms"], "rows": rows},
        "notes": [f"one keep-alive HTTP/1.1 connection to uvicorn on 127.0.0.1 in the same process, requests one "
                  f"after the other (after 20 not timed); server time: the app's, from the request's arrival to "
                  f"its last byte; the target is {TARGET_MS:g} ms on the server.",
                  f"server time / the same work in plain Python (median): {ratio:.2f}x"],
    }
    publish(BENCHMARK, result, args.results_dir, args.readme)
    return result


if __name__ == "__main__":
    main()
