"""The node's HTTP JSON API: Starlette routes over a `NodeView`, served by Hypercorn on trio.

Read-only by design, with one exception: `POST /membership` takes a signed JoinRequest
or Membership change and treats it exactly as if it had come by gossip (checked, then
relayed), so it can do nothing a peer cannot. Exposing the API is about privacy and
load, not safety; it still binds 127.0.0.1 unless the operator configures otherwise.
Errors are JSON `{"error": "..."}` whose message says what to do: 400 for malformed
input, 404 for things this node does not have. (A little over 300 lines: one route
table, each route a few lines over the view.)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import anyio.to_thread
import hypercorn.trio
import trio
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consensus import schedule
from consensus.crypto import sha256
from consensus.encoding import peek_tag
from consensus.errors import ConsensusError, InvalidError
from consensus.types import JoinRequest, Membership
from node.accuracy import AccuracyBoard
from node.apispec import ARCH_HEADER, DEFAULT_API_HOST, DEFAULT_API_PORT, MODEL_HASH_HEADER
from node.explorer import explorer_routes
from node.view import MODEL_PARTS, NodeView, parse_block_ref

ENDPOINTS = (
    "/status",
    "/blocks/head",
    "/blocks/{height-or-hash}",
    "/blocks?from=&to=",
    "/rounds/{r}",
    "/peers",
    "/models/{height}?part=model|aggregate|velocity",
    "/metrics",
    "/participants",
    "/ (the explorer page)",
    "/curve",
    "POST /membership",
)

if TYPE_CHECKING:
    # libp2p's trio-typing stubs shadow trio's own annotations; TaskStatus lives there.
    from trio_typing import TaskStatus

log = logging.getLogger("zkpot.api")
T = TypeVar("T")


class ApiError(Exception):
    """Raised by a handler to answer with a JSON error and the given status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _uint(value: str, what: str) -> int:
    value = value.strip()
    if not (value.isascii() and value.isdecimal()) or len(value) > 19:
        raise ApiError(400, f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


class MembershipDesk(Protocol):
    """The participant set's side of the API (node.engine.Engine provides it)."""

    def participants(self) -> dict[str, Any]: ...

    async def submit(self, item: JoinRequest | Membership) -> str: ...


MAX_SUBMIT_BYTES = 1024


def create_app(
    view: NodeView, desk: MembershipDesk | None = None, board: AccuracyBoard | None = None
) -> Starlette:
    """The API application; `view` is the only thing it reads, `desk` the only thing it
    hands signed messages to."""

    def need_desk() -> MembershipDesk:
        if desk is None:
            raise ApiError(404, "this node does not track the participant set")
        return desk

    async def participants(request: Request) -> Response:
        return JSONResponse(need_desk().participants())

    async def submit(request: Request) -> Response:
        body = await request.body()
        if not 0 < len(body) <= MAX_SUBMIT_BYTES:
            raise ApiError(400, f"send one encoded message of 1..{MAX_SUBMIT_BYTES} bytes")
        item: JoinRequest | Membership
        try:
            item = (JoinRequest if peek_tag(body) == JoinRequest.TAG else Membership).decode(body)
        except ConsensusError as exc:
            raise ApiError(400, f"not a JoinRequest or Membership message: {exc}") from None
        try:
            result = await need_desk().submit(item)
        except InvalidError as exc:
            raise ApiError(400, str(exc)) from None
        return JSONResponse({"result": result, "hash": item.hash().hex()})

    async def in_thread(fn: Callable[..., T], *args: Any) -> T:
        # Store-only reads (block decoding, model blobs) stay off the event loop.
        return await anyio.to_thread.run_sync(functools.partial(fn, *args))

    async def status(request: Request) -> Response:
        return JSONResponse(view.status())

    async def head(request: Request) -> Response:
        return JSONResponse(await in_thread(view.head))

    async def block(request: Request) -> Response:
        ref: str = request.path_params["ref"]
        try:
            parsed = parse_block_ref(ref)
            found = await in_thread(view.block, ref)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        if found is None:
            if isinstance(parsed, int):
                head_h = await in_thread(view.head_height)
                raise ApiError(404, f"block {parsed} not found (head is at height {head_h})")
            raise ApiError(404, f"block {parsed.hex()} not found on this node")
        return JSONResponse(found)

    async def blocks(request: Request) -> Response:
        q = request.query_params
        from_h = _uint(q["from"], "'from'") if q.get("from") else None
        to_h = _uint(q["to"], "'to'") if q.get("to") else None
        try:
            return JSONResponse(await in_thread(view.blocks, from_h, to_h))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    async def round_(request: Request) -> Response:
        rnd = _uint(request.path_params["r"], "the round")
        total = view.genesis.eval_plan.num_batches
        if not schedule.round_exists(view.genesis, rnd):
            raise ApiError(404, f"round {rnd} does not exist: this chain has rounds 0..{total - 1}")
        found = view.round(rnd)
        if found is None:
            now = view.current_round()
            if now is None or rnd > now:
                when = "the chain has not started" if now is None else f"current round is {now}"
                raise ApiError(404, f"round {rnd} has not started yet ({when})")
            raise ApiError(
                404,
                f"round {rnd}: no canonical block, and this node has no record of it (it keeps "
                f"the last {view.roundlog.keep} rounds it took part in)",
            )
        block = found.get("block")
        if board is not None and block is not None and found.get("accuracy_ppm") is None:
            h = bytes.fromhex(block["model_hash"])
            blob = await in_thread(view.store.get_blob, h)
            acc = None if blob is None else await board.of(h, blob)
            if acc is not None:
                found["accuracy_ppm"], found["accuracy"] = round(acc * 1_000_000), acc
            else:  # still being measured: a later read has it (node.accuracy)
                found["accuracy_pending"] = board.measuring(h)
        return JSONResponse(found)

    async def peers(request: Request) -> Response:
        return JSONResponse(view.peers())

    async def model(request: Request) -> Response:
        height = _uint(request.path_params["height"], "the height")
        part = request.query_params.get("part", "model")
        if part not in MODEL_PARTS:
            raise ApiError(400, f"part must be one of {', '.join(MODEL_PARTS)}, not {part!r}")
        found = await in_thread(view.model, height, part)
        if found is None:
            head_h = await in_thread(view.head_height)
            if height > head_h:
                raise ApiError(404, f"block {height} not found (head is at height {head_h})")
            what = "the initial model" if height == 0 else f"the {part} of block {height}"
            if part != "model":
                what += " (none: no aggregate, no server step, or a zero velocity)"
            raise ApiError(404, f"{what} is not stored on this node")
        arch, blob = found
        return Response(
            blob,
            media_type="application/octet-stream",
            headers={ARCH_HEADER: arch, MODEL_HASH_HEADER: sha256(blob).hex()},
        )

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(view.registry), media_type=CONTENT_TYPE_LATEST)

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return _error(
                404, f"no such endpoint {request.url.path}; endpoints: {', '.join(ENDPOINTS)}"
            )
        if exc.status_code == 405:
            return _error(
                405,
                f"{request.method} is not allowed here; the API is read-only (GET) but for "
                "POST /membership",
            )
        return _error(exc.status_code, str(exc.detail))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("API request %s failed", request.url.path, exc_info=exc)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}; see the node's log")

    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: on_api_error,
        HTTPException: on_http_error,
        Exception: on_crash,
    }
    routes = [
        Route("/status", status),
        Route("/blocks/head", head),
        Route("/blocks/{ref}", block),
        Route("/blocks", blocks),
        Route("/rounds/{r}", round_),
        Route("/peers", peers),
        Route("/models/{height}", model),
        Route("/metrics", metrics),
        Route("/participants", participants),
        Route("/membership", submit, methods=["POST"]),
        *explorer_routes(view, board),
    ]
    return Starlette(routes=routes, exception_handlers=handlers)


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def _port_of(bind: str) -> int:
    return int(bind.rsplit(":", 1)[1])


async def serve_api(
    app: Starlette,
    host: str = DEFAULT_API_HOST,
    port: int = DEFAULT_API_PORT,
    *,
    shutdown: trio.Event | None = None,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` until `shutdown` is set or the enclosing scope is cancelled.

    `task_status.started(port)` reports the bound port, so port 0 picks a free one.
    A port already in use raises OSError with a message naming the config knob.
    """
    config = Config()
    config.bind = [_bind(host, port)]
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    trigger: Callable[[], Awaitable[Any]] = (
        shutdown.wait if shutdown is not None else trio.sleep_forever
    )
    serve = functools.partial(
        hypercorn.trio.serve,
        cast(ASGIFramework, app),
        config,
        shutdown_trigger=trigger,
        mode="asgi",
    )
    listening = False
    try:
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(serve)
            listening = True
            bound = _port_of(binds[0])
            log.info("API listening on http://%s", _bind(host, bound))
            task_status.started(bound)
    except BaseExceptionGroup as group:
        failed = _sole_error(group)
        if listening or not isinstance(failed, OSError):
            raise
        # Bind failures arrive wrapped in two nurseries' groups; the operator needs one line.
        raise OSError(
            failed.errno,
            f"cannot serve the API on {_bind(host, port)}: {failed.strerror}; choose another "
            "port in the [api] table of config.toml",
        ) from failed


def _sole_error(exc: BaseException) -> BaseException:
    """The one leaf exception of nested single-member groups (or the group itself)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
