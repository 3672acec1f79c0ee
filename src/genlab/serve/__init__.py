"""``genlab serve``: a local web explorer for trained runs of any family.

``create_app`` (``app.py``) loads the runs and answers JSON endpoints under ``/api/runs/{id}/...`` (request bodies
in ``schemas.py``); ``static/`` holds the page, its script and style, served locally (no CDN). ``serve`` runs the
app with uvicorn, on 127.0.0.1 unless told otherwise. The explorer asks models for abilities, never for family
names, and writes nothing into run folders.

The routes (runs are numbered "0", "1", ... in the order given; images travel as PNG data URLs at the model's
resolution; every body is a schema of ``schemas.py``; errors are ``{"error": "<one line>"}`` with a 4xx status):

    GET  /  /static/*                    the page, its script and style
    GET  /api/health  /api/runs  /api/runs/{id}   what each run offers: modes, latent dims by KL, classes, shape
    GET  /api/runs/{id}/test-images      a page of test images (offset, count <= 64)
    POST /api/runs/{id}/decode           {z, label} -> image       (latent models; GANs: the generator of z)
    POST /api/runs/{id}/decode-batch     {zs, label} -> images     (overtaken decodes answer {"superseded": true})
    POST /api/runs/{id}/encode           {index, label} -> z, image, reconstruction, label
    POST /api/runs/{id}/random           {seed} -> z, image        (a draw of the prior)
    POST /api/runs/{id}/interpolate      {a, b, steps, mode} -> frames (linear or spherical)
    POST /api/runs/{id}/transfer         {z} or {index} -> one image per class
    POST /api/runs/{id}/neighbours       {index, k} -> the nearest training images in the encoder's features
    POST /api/runs/{id}/sample           {n, seed, temperature, label} -> images; streamed NDJSON progress lines
                                         then the result for models that draw pixel by pixel
    POST /api/runs/{id}/complete         {index, hide | mask, temperature, seed, label} -> streamed, as sample
    POST /api/runs/{id}/text/sample      {n, seed, temperature} -> lines
    POST /api/runs/{id}/text/interpolate {first, last, steps} -> lines, and each line's unknown characters
"""
from __future__ import annotations

import errno
import ipaddress
import socket
import sys
import threading
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from genlab.errors import GenlabError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

__all__ = ["serve", "create_app", "DEFAULT_HOST", "DEFAULT_PORT", "is_loopback"]


def create_app(runs: Sequence[str | Path], *, threads: int | None = None):  # type: ignore[no-untyped-def]
    """The explorer's FastAPI app for ``runs`` (``genlab.serve.app.create_app``); imported on use, so that
    ``import genlab`` does not import the web stack."""
    from genlab.serve.app import create_app as build

    return build(runs, threads=threads)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port that is taken (or a host this machine does not have) before the runs load."""
    if not 0 <= port <= 65535:
        raise GenlabError(f"port must be 0..65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise GenlabError(f"port {port} on {host} is in use; choose another with --port") from None
            raise GenlabError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve(runs: str | Path | Sequence[str | Path], *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          threads: int | None = None, open_browser: bool = False) -> None:
    """Serve the explorer for ``runs`` at http://HOST:PORT/ until interrupted (Ctrl-C returns normally).

    Binds 127.0.0.1 unless ``host`` says otherwise; any other address lets other machines in, which is said on
    stderr. A port in use is a one-line ``GenlabError``, said before the runs are loaded."""
    import uvicorn

    runs = [Path(runs)] if isinstance(runs, (str, Path)) else [Path(r) for r in runs]
    if not runs:
        raise GenlabError("genlab serve needs at least one run folder")
    if not is_loopback(host):
        print(f"genlab: warning: serving on {host}, which other machines may reach; the explorer has no "
              "authentication (use the default 127.0.0.1 to keep it local)", file=sys.stderr)
    _check_port(host, port)
    app = create_app(runs, threads=threads)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "[::]") else host
    url = f"http://{shown if ':' not in shown else f'[{shown}]'}:{port}/"
    # Ctrl-C gives open requests a second, then cancels them: a cancelled drawing stream stops its drawing at the
    # next row, so the server exits promptly even while a model draws pixel by pixel
    config = uvicorn.Config(app, host=host.strip("[]"), port=port, log_level="warning", access_log=False,
                            lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    print(f"genlab explorer: {url} ({len(runs)} run{'s' if len(runs) != 1 else ''}; Ctrl-C stops it)", flush=True)
    if open_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if getattr(server, "started", True) is False:
        raise GenlabError(f"cannot listen on {host}:{port} (is the port in use?)")
