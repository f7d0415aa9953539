"""`zkpot participant request|admit|remove|leave`: changes of the participant set.

Each signs with the key in a home (the newcomer's, the leaver's, or the publisher's)
and hands the message to that home's running node (`POST /membership`), which checks
it as if it had come by gossip and relays it; a block then carries the change
(consensus.membership). Nothing here needs the node's store.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from consensus.crypto import SigningKey, short
from consensus.rules import sign
from consensus.types import ADMIT, EXIT, REMOVE, Genesis, JoinRequest, Membership
from node.home import Home, HomeError
from node.tools.client import ApiClient, ClientError, _wrap, resolve_api

NOTICE_ROUNDS = 3  # default: a change takes effect this many rounds after now


def _home(args: argparse.Namespace) -> tuple[Home, SigningKey, Genesis]:
    home = Home(Path(args.home))
    try:
        home.check_exists()
        return home, home.load_key(), home.load_genesis()
    except (HomeError, OSError) as exc:
        raise ClientError(str(exc)) from None


def _client(args: argparse.Namespace) -> ApiClient:
    return ApiClient(resolve_api(args.api, args.home), timeout=args.timeout, home=args.home)


def _key_arg(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise argparse.ArgumentTypeError(
            f"a participant key is 64 hex digits (`zkpot chain participants` lists them), not {text!r}"
        )
    return key


def _from_round(args: argparse.Namespace, client: ApiClient) -> int:
    if args.from_round is not None:
        return int(args.from_round)
    return int(client.get_json("/participants")["round"]) + NOTICE_ROUNDS


def _send(args: argparse.Namespace, client: ApiClient, item: JoinRequest | Membership) -> None:
    """Submit; with --json print the node's answer (and a change's `from_round`)."""
    answer = client.post("/membership", item.encode())
    if args.json:
        extra = {"from_round": item.from_round} if isinstance(item, Membership) else {}
        print(json.dumps({**answer, **extra}))
        return
    print(f"{item.NAME} {answer['hash'][:16]}…: {answer['result']}")


def _cmd_request(args: argparse.Namespace) -> None:
    _, key, genesis = _home(args)
    client = _client(args)
    req = sign(JoinRequest(key.public), key, genesis.hash())
    _send(args, client, req)
    if not args.json:
        print(f"your key: {key.public.hex()}  (give it to the publisher to admit)")


def _change(args: argparse.Namespace, kind: int) -> None:
    _, key, genesis = _home(args)
    client = _client(args)
    target = key.public if kind == EXIT else args.key
    if kind != EXIT and key.public != genesis.publisher:
        raise ClientError(f"{args.home} is not the publisher's home: only the publisher admits")
    request = b""
    if kind == ADMIT:
        requests = {r["key"]: r["signature"] for r in client.get_json("/participants")["requests"]}
        if target.hex() not in requests:
            raise ClientError(
                f"no join request from {short(target, 16)}… has reached this node; ask its "
                "owner to run `zkpot participant request --home THEIR_HOME`"
            )
        request = bytes.fromhex(requests[target.hex()])
    tx = Membership(kind, target, _from_round(args, client), request)
    _send(args, client, sign(tx, key, genesis.hash()))
    if not args.json:
        effect = {ADMIT: "participates", EXIT: "leaves"}.get(kind, "is removed")
        print(
            f"{short(target, 16)}… {effect} from round {tx.from_round}, once a block of an "
            f"earlier round carries the change (`zkpot chain participants` shows it then)"
        )


def add_participant_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser("participant", help="join, admit, remove or leave").add_subparsers(
        dest="sub", required=True
    )

    def common(p: argparse.ArgumentParser, home_help: str) -> argparse.ArgumentParser:
        p.add_argument("--home", required=True, metavar="DIR", help=home_help)
        p.add_argument("--api", metavar="URL", help="the node's API (default: from DIR)")
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
        p.add_argument("--timeout", type=float, default=10.0)
        return p

    def when(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--from-round",
            type=int,
            metavar="R",
            help=f"the first round it applies to (default: now + {NOTICE_ROUNDS})",
        )

    p = common(group.add_parser("request", help="ask to become a participant"), "your home")
    p.set_defaults(func=_wrap(_cmd_request))
    for name, kind, text in (
        ("admit", ADMIT, "admit a requester"),
        ("remove", REMOVE, "remove one"),
    ):
        p = common(group.add_parser(name, help=f"{text} (the publisher)"), "the publisher's home")
        p.add_argument("key", type=_key_arg, metavar="KEY")
        when(p)
        p.set_defaults(func=_wrap(functools.partial(_change, kind=kind)))
    p = common(group.add_parser("leave", help="stop being a participant"), "your home")
    when(p)
    p.set_defaults(func=_wrap(functools.partial(_change, kind=EXIT)))
