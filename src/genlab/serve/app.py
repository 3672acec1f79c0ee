"""The explorer's web app: trained runs loaded once, their abilities offered as JSON endpoints, the page served
from ``static/`` (the contract of routes and shapes is in the package docstring, ``genlab.serve``).

Each run is a ``RunState``: the model, its dataset, what is worth computing once (the latent dimensions ordered by
KL, an encoder's features of the training images for nearest neighbours) and one lock, because a model is not
safe to call from two threads at once and the server answers requests on a thread pool. The app asks for
abilities (``genlab.models.abilities``), never for family names. Nothing is written anywhere: the run folders are
only read.
"""
from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from genlab.data.spec import Dataset
from genlab.errors import GenlabError
from genlab.metrics.latent import ACTIVE_THRESHOLD, active_units, encode_split, kl_per_dim
from genlab.metrics.probe import encoded_features, nearest_neighbours
from genlab.models.abilities import (
    ClassPriorModel,
    ConditionalModel,
    Encoder,
    ImageCompletion,
    LatentModel,
    NoiseGenerator,
    Sampler,
    StyleTransfer,
    TemperatureSampler,
    TextInterpolation,
    TextModel,
    abilities_of,
    evaluating,
)
from genlab.models.base import GenerativeModel
from genlab.pipelines.runs import as_model, load_run_data, run_config
from genlab.serve import schemas
from genlab.viz.figures import slerp

log = logging.getLogger("genlab.serve")

STATIC = Path(__file__).resolve().parent / "static"
KL_IMAGES = 2000  # test images encoded to order the latent dimensions by KL
NEIGHBOUR_IMAGES = 20_000  # training images an encoder's neighbours are searched among
MAX_BODY = 8 * 2**20  # bytes of a request body; larger ones are refused before they are read
SUPERSEDED = {"superseded": True}


class Refusal(Exception):
    """A request the app answers with ``status`` and the one line ``message`` (``{"error": message}``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _bad(message: str) -> Refusal:
    """A well-formed value that is out of range for this run (a test index, a label, a code's length)."""
    return Refusal(422, message)


def _cannot(message: str) -> Refusal:
    """A request this model cannot do."""
    return Refusal(400, message)


# --- images ---

def png_url(image: torch.Tensor) -> str:
    """One (C, H, W) image in [0, 1] -> a PNG data URL at the model's resolution (grey for one channel)."""
    a = image.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    pil = Image.fromarray(a[0] if a.shape[0] == 1 else np.ascontiguousarray(a.transpose(1, 2, 0)))
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_urls(images: torch.Tensor) -> list[str]:
    return [png_url(im) for im in images]


# --- one run ---

@dataclass
class RunState:
    """A loaded run and what the endpoints share about it. ``using()`` serialises model calls; decode requests
    take a ticket first, and one overtaken by a newer ticket while it waits is answered as superseded without
    computing (``run_latest``)."""

    id: str
    path: Path
    model: GenerativeModel
    data: Dataset
    family: str
    dataset_name: str
    dims: list[dict[str, Any]] = field(default_factory=list)
    train_features: torch.Tensor | None = None
    train_count: int = 0
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _busy: bool = False
    _ticket: int = 0

    # --- what it can do ---

    @property
    def is_text(self) -> bool:
        return isinstance(self.model, TextModel)

    @property
    def image_latent(self) -> bool:
        return not self.is_text and isinstance(self.model, LatentModel)

    @property
    def noise(self) -> bool:
        return not self.is_text and isinstance(self.model, NoiseGenerator)

    @property
    def decodes(self) -> bool:
        """Codes -> images: a latent model's decoder or a GAN's generator."""
        return self.image_latent or self.noise

    @property
    def encodes(self) -> bool:
        """Test image -> code -> image: an encoder whose codes something decodes (a VAE, BiGAN-QP)."""
        return self.decodes and isinstance(self.model, Encoder)

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes) if isinstance(self.model, ConditionalModel) else 0

    @property
    def code_size(self) -> int | None:
        if self.noise:
            return int(self.model.noise_dim)
        if self.image_latent:
            return int(self.model.latent_dim)
        return None

    def modes(self) -> list[str]:
        m = self.model
        wanted = [("latent", self.image_latent), ("conditional", self.num_classes > 0 and not self.is_text),
                  ("encoder", not self.is_text and isinstance(m, Encoder)), ("noise", self.noise),
                  ("autoregressive", isinstance(m, ImageCompletion)), ("text", self.is_text)]
        return [name for name, has in wanted if has]

    def info(self) -> dict[str, Any]:
        spec = self.model.spec
        temperature = None
        if isinstance(self.model, TemperatureSampler):
            temperature = float(self.model.default_temperature)
        return {"id": self.id, "name": self.path.name, "family": self.family, "dataset": self.dataset_name,
                "kind": "text" if self.is_text else "image", "abilities": abilities_of(self.model),
                "modes": self.modes(), "latent_dim": self.code_size, "dims": self.dims,
                "num_classes": self.num_classes, "class_names": list(spec.class_names)[:self.num_classes],
                "image_shape": None if self.is_text else list(spec.shape), "test_count": self.test_count,
                "max_text_length": int(spec.shape[0]) if self.is_text else None, "temperature": temperature}

    @property
    def test_count(self) -> int:
        return len(self.data.split("test")[0])

    # --- the lock and the tickets ---

    def take_ticket(self) -> int:
        """A number for a decode request; taking one supersedes every decode request still waiting."""
        with self._cond:
            self._ticket += 1
            self._cond.notify_all()
            return self._ticket

    def run_latest(self, ticket: int, work: Callable[[], Any]) -> Any:
        """``work()`` under the run's lock, unless a newer ticket was taken before the lock was free: then
        ``SUPERSEDED`` at once (a newer ticket wakes the waiters)."""
        with self._cond:
            while self._busy and ticket == self._ticket:
                self._cond.wait()
            if ticket != self._ticket:
                return SUPERSEDED
            self._busy = True
        try:
            return work()
        finally:
            self._release()

    def run(self, work: Callable[[], Any]) -> Any:
        """``work()`` under the run's lock."""
        with self._cond:
            while self._busy:
                self._cond.wait()
            self._busy = True
        try:
            return work()
        finally:
            self._release()

    def _release(self) -> None:
        with self._cond:
            self._busy = False
            self._cond.notify_all()

    # --- checks of values against this run ---

    def test_index(self, index: int) -> int:
        if not 0 <= index < self.test_count:
            raise _bad(f"index {index} is out of range: run {self.id} has {self.test_count} test examples "
                       f"(0..{self.test_count - 1})")
        return index

    def label(self, label: int | None, default: int | None = None) -> torch.Tensor | None:
        """The condition tensor (1,) of a conditional model (``label``, else ``default``, else class 0), None for
        an unconditional one, which refuses a label."""
        k = self.num_classes
        if k == 0:
            if label is not None:
                raise _bad(f"run {self.id} is not conditional: it takes no label (give null)")
            return None
        if label is not None and not 0 <= label < k:
            raise _bad(f"label {label} is out of range: run {self.id} has {k} classes (0..{k - 1})")
        chosen = label if label is not None else (default if default is not None else 0)
        return torch.tensor([chosen], dtype=torch.long, device=self.model.device)

    def code(self, z: Sequence[float]) -> torch.Tensor:
        size = self.code_size
        if size is None:
            raise _cannot(self.cannot("decode a code", "a latent model or a GAN"))
        if len(z) != size:
            raise _bad(f"z has {len(z)} values; run {self.id} takes codes of {size}")
        return torch.tensor([list(z)], dtype=torch.float32, device=self.model.device)

    def cannot(self, what: str, needs: str) -> str:
        return (f"run {self.id} ({self.family}) cannot {what}: that needs {needs}; it offers "
                f"{', '.join(self.modes()) or 'nothing to explore'}")

    def temperature(self, t: float | None) -> float:
        if isinstance(self.model, TemperatureSampler):
            return float(self.model.default_temperature) if t is None else float(t)
        if t is not None:
            raise _bad(f"run {self.id} ({self.family}) draws in one pass and takes no temperature (give null)")
        return 1.0

    # --- model calls (under the lock) ---

    def test_example(self, index: int) -> tuple[torch.Tensor, int | None]:
        x, y = self.data.split("test")
        return x[index:index + 1], (None if y is None else int(y[index]))

    def _class_means(self, cond: torch.Tensor | None) -> torch.Tensor | None:
        """(B, L) prior means of the classes ``cond`` for a model whose classes are prior means (the class-mean
        CVAE decodes z alone, the class living in where z is); None for any other model. The explorer's code is
        then the offset from the class's mean, so a class button moves the same offset to another class."""
        if cond is None or not isinstance(self.model, ClassPriorModel):
            return None
        return self.model.class_prior_means()[cond]

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        with evaluating(self.model), torch.no_grad():
            if self.noise:
                return self.model.generate(z)
            if cond is not None and len(cond) != len(z):
                cond = cond.expand(len(z))
            means = self._class_means(cond)
            return self.model.decode(z if means is None else z + means, cond)

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The posterior mean of ``x`` (an offset from its class's mean for a class-mean model), refused in one
        line when the encoder gives a non-finite code, and clipped to the +-10 a request may carry back."""
        with evaluating(self.model), torch.no_grad():
            mu = self.model.encode(x.to(self.model.device), cond)[0]
            means = self._class_means(cond)
            mu = mu if means is None else mu - means
        if not torch.isfinite(mu).all():
            raise _cannot(f"run {self.id}'s encoder gives a non-finite code for this image (a diverged model?)")
        return mu.clamp(-10.0, 10.0)


def load_run(run_id: str, path: str | Path) -> RunState:
    """Load a run folder and precompute what its endpoints share; reads only."""
    model = as_model(path)
    data = load_run_data(path, progress=False)
    cfg = run_config(path)
    state = RunState(run_id, Path(path), model, data, model.family or cfg.model, data.spec.name)
    if state.noise:
        state.dims = [{"index": i, "kl": None, "active": True} for i in range(int(model.noise_dim))]
    elif state.image_latent:
        post = encode_split(model, data, "test", limit=KL_IMAGES)
        kl = kl_per_dim(post)
        _, variance = active_units(post)  # the report's rule and threshold (Burda et al. 2016)
        order = sorted(range(len(kl)), key=lambda d: -float(kl[d]))
        state.dims = [{"index": d, "kl": round(float(kl[d]), 6) if math.isfinite(float(kl[d])) else None,
                       "active": bool(variance[d] > ACTIVE_THRESHOLD)} for d in order]
    if not state.is_text and isinstance(model, Encoder):
        x, y = data.split("train")
        x = x[:NEIGHBOUR_IMAGES]
        cond = y[:NEIGHBOUR_IMAGES] if isinstance(model, ConditionalModel) and y is not None else None
        state.train_features = encoded_features(model, x, cond=cond)
        state.train_count = len(x)
    return state


# --- streaming a pixel-by-pixel drawing ---

_END = object()


async def stream_drawing(state: RunState, draw: Callable[[Callable[[int, int], bool]], torch.Tensor]) \
        -> AsyncIterator[bytes]:
    """NDJSON lines of a drawing that runs on a worker thread: progress after each row, then the result or an
    error. ``draw(callback)`` calls the model with ``callback(done, total)``, which answers False once the stream
    is closed (the client went away), so the drawing stops within a row."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def put(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def callback(done: int, total: int) -> bool:
        if stop.is_set():
            return False
        put({"type": "progress", "done": int(done), "total": int(total)})
        return True

    def work() -> None:
        try:
            images = state.run(lambda: None if stop.is_set() else draw(callback))
            if images is not None and not stop.is_set():
                put({"type": "result", "images": png_urls(images)})
        except (GenlabError, Refusal) as e:
            put({"type": "error", "error": str(e).splitlines()[0] if str(e) else type(e).__name__})
        except Exception as e:  # noqa: BLE001  (answered as a line, logged with its traceback)
            log.exception("drawing failed")
            put({"type": "error", "error": f"internal error: {type(e).__name__}"})
        finally:
            put(_END)

    worker = loop.run_in_executor(None, work)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                break
            yield (json.dumps(item) + "\n").encode("utf-8")
    finally:
        stop.set()  # a closed stream (the client aborted) stops the drawing at its next row
        if not worker.done():
            worker.add_done_callback(lambda f: f.exception())


def _ndjson(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="application/x-ndjson",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _takes(method: Callable[..., Any], name: str) -> bool:
    """Whether ``method`` accepts the keyword ``name`` (a family's drawing may predate the progress callback)."""
    import inspect

    try:
        return name in inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False


# --- the body-size limit ---

class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 before the app reads it (by its
    Content-Length, or while it arrives when there is none)."""

    def __init__(self, app: Any, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await self._refuse(send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunks.append(message)
            size += len(message.get("body", b""))
            if size > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body"):
                break
        await self.app(scope, _replay(chunks, receive), send)

    async def _refuse(self, send: Callable[..., Any]) -> None:
        body = json.dumps({"error": f"request body too large (at most {self.limit // 2**20} MiB)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict[str, Any]], then: Callable[..., Any] | None = None) -> Callable[..., Any]:
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive


# --- the app ---

def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def _validation_line(err: RequestValidationError) -> str:
    """The first schema error, as "field: what is wrong"."""
    errors = err.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
    message = str(first.get("msg", "invalid value"))
    if first.get("type") == "json_invalid":
        return "the body is not valid JSON (NaN and Infinity are not allowed)"
    if first.get("type") == "missing" and not where:
        return "the request needs a JSON body"
    return _one_line(f"{where}: {message}" if where else message)


def create_app(runs: Sequence[str | Path], *, threads: int | None = None) -> FastAPI:
    """The explorer app for ``runs`` (run folders), numbered "0", "1", ... in the order given. Each is loaded
    once here; ``threads`` sets torch's threads (default: the first run's ``train.threads``, else torch's)."""
    if not runs:
        raise GenlabError("genlab serve needs at least one run folder")
    if threads is None:
        threads = next((t for t in (run_config(r).train.threads for r in runs) if t), None)
    if threads is not None:
        if threads < 1:
            raise GenlabError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    states = {str(i): load_run(str(i), r) for i, r in enumerate(runs)}

    app = FastAPI(title="genlab explorer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.runs = states
    app.add_middleware(BodyLimit)

    @app.exception_handler(Refusal)
    async def _refusal(request: Request, exc: Refusal) -> JSONResponse:
        return JSONResponse({"error": _one_line(exc.message)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_line(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "not found" if exc.status_code == 404 else str(exc.detail)
        return JSONResponse({"error": _one_line(message)}, status_code=exc.status_code)

    @app.exception_handler(GenlabError)
    async def _genlab(request: Request, exc: GenlabError) -> JSONResponse:
        return JSONResponse({"error": _one_line(str(exc))}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error answering %s", request.url.path, exc_info=exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    def run_of(run_id: str) -> RunState:
        if run_id not in states:
            raise Refusal(404, f"no run {run_id!r}; the runs are {', '.join(states)}")
        return states[run_id]

    # --- the page ---

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # --- runs ---

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/api/runs")
    def list_all() -> dict[str, Any]:
        return {"runs": [s.info() for s in states.values()]}

    @app.get("/api/runs/{run_id}")
    def one(run_id: str) -> dict[str, Any]:
        return run_of(run_id).info()

    @app.get("/api/runs/{run_id}/test-images")
    def test_images(run_id: str, offset: int = Query(0, ge=0), count: int = Query(16, ge=1, le=64)) -> dict:
        s = run_of(run_id)
        if s.is_text:
            raise _cannot(s.cannot("show test images", "an image model"))
        x, y = s.data.split("test")
        if offset > len(x):
            raise _bad(f"offset {offset} is past the {len(x)} test images")
        chunk = x[offset:offset + count]
        images = [{"index": offset + i, "image": png_url(im), "label": None if y is None else int(y[offset + i])}
                  for i, im in enumerate(chunk)]
        return {"images": images, "total": len(x)}

    # --- codes ---

    @app.post("/api/runs/{run_id}/decode")
    def decode(run_id: str, body: schemas.DecodeRequest) -> dict[str, Any]:
        s = run_of(run_id)
        z, cond = s.code(body.z), s.label(body.label)
        return s.run_latest(s.take_ticket(), lambda: {"image": png_url(s.decode(z, cond)[0])})

    @app.post("/api/runs/{run_id}/decode-batch")
    def decode_batch(run_id: str, body: schemas.DecodeBatchRequest) -> dict[str, Any]:
        s = run_of(run_id)
        z = torch.cat([s.code(v) for v in body.zs])
        cond = s.label(body.label)
        return s.run_latest(s.take_ticket(), lambda: {"images": png_urls(s.decode(z, cond))})

    @app.post("/api/runs/{run_id}/encode")
    def encode(run_id: str, body: schemas.EncodeRequest) -> dict[str, Any]:
        s = run_of(run_id)
        if not s.encodes:
            raise _cannot(s.cannot("encode an image", "an encoder and a decoder (a VAE, BiGAN-QP)"))
        x, y = s.test_example(s.test_index(body.index))
        cond = s.label(body.label, default=y)

        def work() -> dict[str, Any]:
            z = s.encode(x, cond)
            return {"z": [float(v) for v in z[0]], "image": png_url(x[0]),
                    "reconstruction": png_url(s.decode(z, cond)[0]),
                    "label": None if cond is None else int(cond[0])}

        return s.run(work)

    @app.post("/api/runs/{run_id}/random")
    def random(run_id: str, body: schemas.RandomRequest) -> dict[str, Any]:
        s = run_of(run_id)
        if not s.decodes:
            raise _cannot(s.cannot("draw a random code", "a latent model or a GAN"))
        device = s.model.device
        g = torch.Generator(device=device).manual_seed(body.seed)  # where the draw is made
        z = s.model.noise(1, g) if s.noise else torch.randn(1, s.code_size, generator=g, device=device)
        z = z.clamp(-10, 10)
        cond = s.label(None)
        return s.run(lambda: {"z": [float(v) for v in z[0]], "image": png_url(s.decode(z, cond)[0])})

    @app.post("/api/runs/{run_id}/interpolate")
    def interpolate(run_id: str, body: schemas.InterpolateRequest) -> dict[str, Any]:
        s = run_of(run_id)
        if not s.encodes:
            raise _cannot(s.cannot("interpolate between test images", "an encoder and a decoder"))
        xa, ya = s.test_example(s.test_index(body.a))
        xb, yb = s.test_example(s.test_index(body.b))
        ca, cb = s.label(body.label, default=ya), s.label(body.label, default=yb)

        def work() -> dict[str, Any]:
            za, zb = s.encode(xa, ca)[0], s.encode(xb, cb)[0]
            t = torch.linspace(0, 1, body.steps, device=za.device)
            path = slerp(za, zb, t) if body.mode == "spherical" else (1 - t)[:, None] * za + t[:, None] * zb
            path[0], path[-1] = za, zb
            return {"frames": png_urls(s.decode(path, ca))}

        return s.run(work)

    @app.post("/api/runs/{run_id}/transfer")
    def transfer(run_id: str, body: schemas.TransferRequest) -> dict[str, Any]:
        s = run_of(run_id)
        if not (isinstance(s.model, StyleTransfer) and s.image_latent and s.num_classes > 0):
            raise _cannot(s.cannot("decode one code under every class", "a conditional latent model"))
        k = s.num_classes
        labels = torch.arange(k, device=s.model.device)
        if body.z is not None:
            z = s.code(body.z)

            def work() -> torch.Tensor:
                return s.decode(z.expand(k, -1), labels)
        else:
            x, y = s.test_example(s.test_index(body.index))
            y = s.label(None, default=y)

            def work() -> torch.Tensor:
                with evaluating(s.model), torch.no_grad():
                    return s.model.transfer(x.to(s.model.device), y)[0]

        images = s.run(work)
        names = list(s.model.spec.class_names)
        return {"images": [{"label": i, "name": names[i] if i < len(names) else str(i), "image": png_url(images[i])}
                           for i in range(k)]}

    @app.post("/api/runs/{run_id}/neighbours")
    def neighbours(run_id: str, body: schemas.NeighboursRequest) -> dict[str, Any]:
        s = run_of(run_id)
        if s.train_features is None:
            raise _cannot(s.cannot("find nearest neighbours", "an image encoder"))
        x, y = s.test_example(s.test_index(body.index))
        k = min(body.k, s.train_count)
        cond = s.label(None, default=y) if s.num_classes else None

        def work() -> torch.Tensor:
            q = encoded_features(s.model, x, cond=cond)
            return nearest_neighbours(s.train_features, q, k)[0]

        found = s.run(work)
        train_x, train_y = s.data.split("train")
        return {"query": png_url(x[0]),
                "neighbours": [{"index": int(j), "image": png_url(train_x[int(j)]),
                                "label": None if train_y is None else int(train_y[int(j)])} for j in found]}

    # --- drawing ---

    @app.post("/api/runs/{run_id}/sample", response_model=None)
    def sample(run_id: str, body: schemas.SampleRequest) -> Any:
        s = run_of(run_id)
        if s.is_text or not isinstance(s.model, Sampler):
            what = "use /text/sample" if s.is_text else "a decoder or a generator"
            raise _cannot(s.cannot("draw image samples", what))
        temperature = s.temperature(body.temperature)
        one = s.label(body.label)
        cond = None if one is None else one.expand(body.n)
        g = torch.Generator(device=s.model.device).manual_seed(body.seed)
        m = s.model
        if isinstance(m, ImageCompletion):
            def draw(callback: Callable[[int, int], bool]) -> torch.Tensor:
                extra = {"callback": callback} if _takes(m.sample, "callback") else {}
                with evaluating(m):
                    return m.sample(body.n, cond=cond, generator=g, temperature=temperature, **extra)

            return _ndjson(stream_drawing(s, draw))

        def work() -> dict[str, Any]:
            with evaluating(m), torch.no_grad():
                return {"images": png_urls(m.sample(body.n, cond=cond, generator=g))}

        return s.run(work)

    @app.post("/api/runs/{run_id}/complete", response_model=None)
    def complete(run_id: str, body: schemas.CompleteRequest) -> Any:
        s = run_of(run_id)
        m = s.model
        if not isinstance(m, ImageCompletion):
            raise _cannot(s.cannot("complete an image", "an autoregressive image model"))
        x, y = s.test_example(s.test_index(body.index))
        temperature = s.temperature(body.temperature)
        cond = s.label(body.label, default=y)
        extra: dict[str, Any] = {}
        if body.mask is not None:
            _, h, w = m.spec.shape
            if len(body.mask) != h or any(len(row) != w for row in body.mask):
                raise _bad(f"mask must be {h} rows of {w} values (0 keep, 1 hide) for run {s.id}")
            if not any(any(row) for row in body.mask):
                raise _bad("mask hides no pixel: mark at least one pixel 1 (hidden)")
            if not _takes(m.complete, "mask"):
                raise _cannot(s.cannot("complete a drawn mask", "a model that takes one"))
            extra["mask"] = torch.tensor(body.mask, dtype=torch.bool)
        hide = body.hide if body.hide is not None else 0.5
        g = torch.Generator(device=m.device).manual_seed(body.seed)

        def draw(callback: Callable[[int, int], bool]) -> torch.Tensor:
            more = {"callback": callback} if _takes(m.complete, "callback") else {}
            with evaluating(m):
                out = m.complete(x, hide=hide, n=1, cond=cond, generator=g, temperature=temperature, **extra, **more)
            return out[0]

        return _ndjson(stream_drawing(s, draw))

    # --- text ---

    def text_run(run_id: str, what: str, needs: type) -> RunState:
        s = run_of(run_id)
        if not isinstance(s.model, needs):
            raise _cannot(s.cannot(what, "a text model" if needs is TextModel else "a text model with a latent space"))
        return s

    @app.post("/api/runs/{run_id}/text/sample")
    def text_sample(run_id: str, body: schemas.TextSampleRequest) -> dict[str, Any]:
        s = text_run(run_id, "write lines", TextModel)
        temperature = s.temperature(body.temperature)
        g = torch.Generator(device=s.model.device).manual_seed(body.seed)

        def work() -> list[str]:
            with evaluating(s.model), torch.no_grad():
                return s.model.sample_text(body.n, generator=g, temperature=temperature)

        return {"lines": s.run(work)}

    @app.post("/api/runs/{run_id}/text/interpolate")
    def text_interpolate(run_id: str, body: schemas.TextInterpolateRequest) -> dict[str, Any]:
        s = text_run(run_id, "interpolate between lines", TextInterpolation)
        first, last = body.first.strip(), body.last.strip()

        def work() -> list[str]:
            with evaluating(s.model), torch.no_grad():
                return s.model.interpolate_text(first, last, body.steps)

        lines = s.run(work)
        return {"lines": lines, "unknown": {"first": s.model.unknown_characters(first),
                                            "last": s.model.unknown_characters(last)}}

    return app
