"""CLI commands that inspect a running node through its HTTP API.

(Over 300 lines on purpose: one function per inspect command, each small; the tables
they print are node/tools/tables.py.)

They never open the store: a running node holds its LevelDB lock, and the API is the
one place that knows what the node has. Output is a readable table, or the API's JSON
verbatim with `--json`. Every error says what to do next; the exit status is 1 for
errors and 2 for requests the node rejected as malformed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from node.apispec import ARCH_HEADER, DEFAULT_API_HOST, DEFAULT_API_PORT, MODEL_HASH_HEADER
from node.home import Home, HomeError
from node.tools.names import Names, names_near
from node.tools.tables import (
    format_block,
    format_blocks,
    format_participants,
    format_peers,
    format_round,
    format_status,
)

DEFAULT_API = f"http://{DEFAULT_API_HOST}:{DEFAULT_API_PORT}"
FORMATS = ("state-dict", "onnx")


class ClientError(Exception):
    """A failure to report to the user: the message says what to do; `code` is the exit."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def api_url_from_home(home: str | Path) -> str:
    """The API address in `<home>/config.toml`, read as the node reads it (`NodeConfig`)."""
    node_home = Home(Path(home))
    path = node_home.config_file
    try:
        config = node_home.load_config()
    except FileNotFoundError:
        raise ClientError(
            f"no config.toml in node home {home}; pass the right --home, or --api URL"
        ) from None
    except (OSError, ValueError) as exc:  # ValueError: not UTF-8
        raise ClientError(f"cannot read {path}: {exc}; fix it, or pass --api URL") from None
    except HomeError as exc:
        raise ClientError(f"{exc}; fix it, or pass --api URL") from None
    host, port = config.api_host, config.api_port
    if port == 0:  # the node binds any free port: nothing to find here
        raise ClientError(f"{path}: [api] port 0 is not an address to reach; pass --api URL")
    if host in ("0.0.0.0", "::", ""):  # a wildcard bind is reachable on loopback
        host = DEFAULT_API_HOST
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def resolve_api(api: str | None, home: str | None) -> str:
    """--api wins; else the home's config; else the default local address."""
    if api:
        url = api if "://" in api else f"http://{api}"
        return url.rstrip("/")
    if home:
        return api_url_from_home(home)
    return DEFAULT_API


@dataclass
class ApiClient:
    """A thin synchronous client that turns transport and HTTP failures into ClientErrors."""

    base_url: str
    timeout: float = 10.0
    home: str | None = None

    def _get(
        self, path: str, params: dict[str, int] | None = None, content: bytes | None = None
    ) -> httpx.Response:
        """GET, or POST when there is `content` (the one write: POST /membership)."""
        url = self.base_url + path
        try:
            if content is None:
                resp = httpx.get(url, params=params, timeout=self.timeout)
            else:
                resp = httpx.post(url, content=content, timeout=self.timeout)
        except httpx.ConnectError:
            start = f"zkpot node start --home {self.home or 'DIR'}"
            raise ClientError(
                f"no node answering at {self.base_url} — is it running? start it with `{start}`"
                + ("" if self.home else ", or point --api/--home at the node you mean")
            ) from None
        except httpx.TimeoutException:
            raise ClientError(
                f"the node at {self.base_url} did not answer within {self.timeout:g} s; "
                "it may be overloaded: retry, or raise --timeout"
            ) from None
        except httpx.InvalidURL as exc:
            raise ClientError(f"invalid --api URL {self.base_url!r}: {exc}", code=2) from None
        except httpx.HTTPError as exc:
            raise ClientError(f"request to {url} failed: {exc}") from None
        if resp.status_code != 200:
            raise ClientError(self._error_message(resp), code=2 if resp.status_code == 400 else 1)
        return resp

    def _error_message(self, resp: httpx.Response) -> str:
        try:
            message = resp.json()["error"]
        except (ValueError, KeyError, TypeError):
            return (
                f"{self.base_url} answered HTTP {resp.status_code} without a zkpot error; "
                "is --api pointing at a zkpot node?"
            )
        if resp.status_code >= 500:
            return f"the node failed to answer: {message}"
        return str(message)

    def get_json(self, path: str, params: dict[str, int] | None = None) -> Any:
        resp = self._get(path, params)
        try:
            return resp.json()
        except ValueError:
            raise ClientError(
                f"{self.base_url} did not answer with JSON; is --api pointing at a zkpot node?"
            ) from None

    def post(self, path: str, content: bytes) -> Any:
        try:
            return self._get(path, content=content).json()
        except ValueError:
            raise ClientError(f"{self.base_url} did not answer with JSON") from None

    def get_bytes(self, path: str) -> tuple[bytes, httpx.Headers]:
        resp = self._get(path)
        return resp.content, resp.headers


# ---------------------------------------------------------------------- commands


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(resolve_api(args.api, args.home), timeout=args.timeout, home=args.home)


def _emit(args: argparse.Namespace, data: Any, fmt: Callable[[Any], str]) -> None:
    print(json.dumps(data) if args.json else fmt(data))


def _emit_named(
    args: argparse.Namespace, data: Any, fmt: Callable[[Any, Names | None], str]
) -> None:
    """As `_emit`, naming keys and peer ids after the testnet homes beside --home."""
    print(json.dumps(data) if args.json else fmt(data, names_near(args.home)))


def _cmd_status(args: argparse.Namespace) -> None:
    _emit(args, _client(args).get_json("/status"), format_status)


def _cmd_head(args: argparse.Namespace) -> None:
    _emit_named(args, _client(args).get_json("/blocks/head"), format_block)


def _cmd_block(args: argparse.Namespace) -> None:
    ref = args.ref.strip()
    if not ref or "/" in ref or "?" in ref:
        raise ClientError(f"malformed block reference {args.ref!r}: give a height or a hash", 2)
    _emit_named(args, _client(args).get_json(f"/blocks/{ref}"), format_block)


def _cmd_blocks(args: argparse.Namespace) -> None:
    client = _client(args)
    params: dict[str, int] = {}
    if args.from_h is not None:
        params["from"] = args.from_h
    if args.to_h is not None:
        params["to"] = args.to_h
    page = client.get_json("/blocks", params)
    blocks = list(page["blocks"])
    while page.get("next_from") is not None:  # the API caps a page; fetch the rest
        page = client.get_json("/blocks", {**params, "from": page["next_from"]})
        blocks += page["blocks"]
    whole = {**page, "from": params.get("from", page["from"]), "blocks": blocks}
    _emit_named(args, whole, format_blocks)


def _cmd_round(args: argparse.Namespace) -> None:
    _emit_named(args, _client(args).get_json(f"/rounds/{args.round}"), format_round)


def _cmd_participants(args: argparse.Namespace) -> None:
    _emit_named(args, _client(args).get_json("/participants"), format_participants)


def _cmd_peers(args: argparse.Namespace) -> None:
    _emit_named(args, _client(args).get_json("/peers"), format_peers)


def _export_format(args: argparse.Namespace) -> str:
    if args.format:
        fmt: str = args.format
        return fmt
    return "onnx" if Path(args.out).suffix.lower() == ".onnx" else "state-dict"


def _cmd_model_export(args: argparse.Namespace) -> None:
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ClientError(f"cannot write {out}: directory {out.parent} does not exist", 2)
    fmt = _export_format(args)
    blob, headers = _client(args).get_bytes(f"/models/{args.height}")
    arch = headers.get(ARCH_HEADER)
    if not arch:
        raise ClientError("the node did not say the model's architecture; is it a zkpot node?")
    digest = hashlib.sha256(blob).hexdigest()
    claimed = headers.get(MODEL_HASH_HEADER)
    if claimed is not None and claimed != digest:
        raise ClientError(
            f"the model arrived damaged (sha256 {digest}, the node says {claimed}); retry"
        )
    export_model(arch, blob, out, fmt)
    result = {
        "height": args.height,
        "architecture": arch,
        "model_hash": digest,
        "format": fmt,
        "out": str(out),
    }
    if args.json:
        print(json.dumps(result))
    else:
        how = (
            f"load it with model.load_state_dict(torch.load({str(out)!r}))"
            if fmt == "state-dict"
            else "ONNX"
        )
        print(f"wrote the global model at height {args.height} ({arch}, sha256 {digest})")
        print(f"to {out} as {fmt} ({how})")


def export_model(arch: str, blob: bytes, out: Path, fmt: str) -> None:
    """Decode the chain's model bytes (strictly) and write them as a state dict or ONNX."""
    import torch  # slow to import: only the export command pays for it

    from prover.models import ModelError, get_arch, model_from_bytes

    try:
        model = model_from_bytes(arch, blob)
    except ModelError as exc:
        raise ClientError(f"the node's model is not a valid {arch} model: {exc}") from None
    model.eval()
    try:
        if fmt == "state-dict":
            torch.save(model.state_dict(), out)
        else:
            dummy = torch.zeros(1, *get_arch(arch).input_shape)
            with warnings.catch_warnings():
                # dynamo=False (as the circuit build uses) is the legacy exporter; it warns.
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.onnx.export(
                    model,
                    (dummy,),
                    str(out),
                    input_names=["x"],
                    output_names=["logits"],
                    dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                    dynamo=False,
                    opset_version=17,
                )
    except OSError as exc:
        raise ClientError(f"cannot write {out}: {exc.strerror or exc}") from None


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--api", metavar="URL", help=f"the node's API (default {DEFAULT_API})")
    parser.add_argument("--home", metavar="DIR", help="read the API address from DIR/config.toml")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    return parser


def _wrap(fn: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            fn(args)
        except ClientError as exc:
            print(f"zkpot: {exc.message}", file=sys.stderr)
            return exc.code
        return 0

    return run


def _height(text: str) -> int:
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"a height is a non-negative integer, not {text!r}")
    return int(text)


def _round(text: str) -> int:
    if not text.isdecimal():
        raise argparse.ArgumentTypeError(f"a round is a non-negative integer, not {text!r}")
    return int(text)


def add_client_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register status, chain, peers and model under the top-level `zkpot` parser."""
    p = _common(sub.add_parser("status", help="a running node's chain and round status"))
    p.set_defaults(func=_wrap(_cmd_status))

    chain = sub.add_parser("chain", help="blocks and rounds of a running node").add_subparsers(
        dest="sub", required=True
    )
    p = _common(chain.add_parser("head", help="the head block"))
    p.set_defaults(func=_wrap(_cmd_head))
    p = _common(chain.add_parser("block", help="a block by canonical height or by hash"))
    p.add_argument("ref", metavar="HEIGHT|HASH")
    p.set_defaults(func=_wrap(_cmd_block))
    p = _common(chain.add_parser("blocks", help="canonical blocks (default: the last 100)"))
    p.add_argument("--from", dest="from_h", type=_height, metavar="H", help="first height")
    p.add_argument("--to", dest="to_h", type=_height, metavar="H", help="last height")
    p.set_defaults(func=_wrap(_cmd_blocks))
    p = _common(chain.add_parser("round", help="commits, reveal, proofs and winner of a round"))
    p.add_argument("round", type=_round, metavar="R")
    p.set_defaults(func=_wrap(_cmd_round))

    p = _common(chain.add_parser("participants", help="the participant set, with pending changes"))
    p.set_defaults(func=_wrap(_cmd_participants))

    p = _common(sub.add_parser("peers", help="a running node's connected peers"))
    p.set_defaults(func=_wrap(_cmd_peers))

    model = sub.add_parser("model", help="the global model").add_subparsers(
        dest="sub", required=True
    )
    p = _common(model.add_parser("export", help="save the global model at a height"))
    p.add_argument("--height", type=_height, required=True, metavar="H")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="state-dict (torch.save) or onnx; default: onnx if FILE ends in .onnx",
    )
    p.set_defaults(func=_wrap(_cmd_model_export))
