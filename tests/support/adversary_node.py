"""A misbehaving participant (and a forging publisher) for tests/test_e2e_faults.py.

Runs as its own OS process with a genesis participant's key and a real libp2p host.
Each round it commits to weights it does not have, then misbehaves in turn:
  round % 3 == 0: a proof of garbage claiming the full batch (k = B);
  round % 3 == 1: an honest participant's proof re-signed as its own (copied C);
  round % 3 == 2: a commit after the commit deadline, then a proof for it.
Every round it also gossips a reveal of the *next* round signed with the
publisher's key but carrying a batch that does not match the genesis root, and a
proof tx for a round far in the future (which must not touch the live round's state).
Prints one JSON line per action.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import httpx
import trio

from consensus import rules, secagg
from consensus.crypto import SigningKey
from consensus.rules import sign
from consensus.strategy import rule_for
from consensus.types import CommitTx, EvalBatch, ProofTx, Reveal
from node.home import Home
from p2p import HostConfig, P2PHost, TopicKind
from p2p.gossip import Verdict


def say(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


async def main(args: argparse.Namespace) -> None:
    home = Home(Path(args.home))
    me = home.load_key()
    publisher = SigningKey(Path(args.publisher_key).read_bytes())
    genesis = home.load_genesis()
    cid = genesis.hash()
    cfg = home.load_config()
    host = P2PHost(HostConfig(seed=me.seed, listen=cfg.listen, bootstrap=cfg.bootstrap), cid)
    honest: dict[int, list[ProofTx]] = {}

    async def watch(item: object, raw: bytes, forwarder: object) -> Verdict:
        if isinstance(item, ProofTx) and item.participant != me.public:
            honest.setdefault(item.round, []).append(item)
        return Verdict.ACCEPT

    host.gossip.set_validator(TopicKind.ROUND, watch)  # type: ignore[arg-type]
    c_len, p_len = genesis.circuit.commitment_bytes, genesis.circuit.proof_bytes
    async with host.run(), httpx.AsyncClient(timeout=5) as api:
        say(event="ready", peer_id=str(host.peer_id))

        last = -1
        while True:
            # Rounds end as soon as their block is known: follow the honest node's round
            # (its API may not be up yet, or busy: keep asking).
            try:
                rnd = (await api.get(f"{args.api}/status")).json()["round"]
                reply = await api.get(f"{args.api}/rounds/{rnd}") if rnd is not None else None
            except httpx.HTTPError:
                await trio.sleep(0.5)
                continue
            if rnd is None or rnd <= last or reply is None or reply.status_code != 200:
                await trio.sleep(0.2)
                continue
            last = rnd
            commit_deadline = reply.json()["commit_deadline_ms"]
            await trio.sleep(0.5)
            try:
                head = (await api.get(f"{args.api}/blocks/head")).json()["hash"]
            except httpx.HTTPError:
                continue
            parent = bytes.fromhex(head)
            fake_c = os.urandom(c_len)
            mask_key = (
                secagg.mask_public(secagg.mask_secret(os.urandom(32)))
                if rule_for(genesis).aggregates
                else b""
            )
            mode = rnd % 3
            if mode == 2:
                await trio.sleep(max(0, (commit_deadline + 1000 - time.time() * 1000) / 1000))
            commit = sign(
                CommitTx(
                    rnd,
                    parent,
                    me.public,
                    rules.commit_binding(cid, me.public, rnd, parent, fake_c),
                    # a valid mask key under an aggregating rule (v4 refuses a commit
                    # without one), so its garbage proofs still reach the checks
                    mask_key=mask_key,
                    signature=bytes(64),
                ),
                me,
                cid,
            )
            await host.gossip.publish(commit)
            say(event="commit", round=rnd, late=mode == 2)
            # A message for a far-future round: must not create or evict round state.
            far = min(rnd + 9, genesis.eval_plan.num_batches - 1)
            junk = ProofTx(far, os.urandom(32), me.public, fake_c, 1, os.urandom(p_len), bytes(64))
            await host.gossip.publish(sign(junk, me, cid))
            say(event="far_future_proof", round=far)
            # forged reveal for the next round
            if rnd + 1 < genesis.eval_plan.num_batches:
                plan = genesis.eval_plan
                n = plan.batch_size * plan.input_shape[0] * 4
                bad = EvalBatch(rnd + 1, os.urandom(n), bytes(plan.batch_size))
                depth = (plan.num_batches - 1).bit_length()
                forged = sign(
                    Reveal(
                        rnd + 1,
                        bad,
                        tuple(os.urandom(32) for _ in range(depth)),
                        (commit.hash(),),
                        bytes(64),
                    ),
                    publisher,
                    cid,
                )
                await host.gossip.publish(forged)
                say(event="forged_reveal", round=rnd + 1)
            # wait for the real reveal, then misbehave
            for _ in range(200):
                try:
                    r = await api.get(f"{args.api}/rounds/{rnd}")
                    if r.status_code == 200 and r.json()["reveal"]["revealed"]:
                        break
                except httpx.HTTPError:
                    pass
                await trio.sleep(0.2)
            await trio.sleep(2.0)
            if mode == 1 and honest.get(rnd):
                victim = honest[rnd][0]
                tx = dataclasses.replace(victim, participant=me.public, commit_id=commit.hash())
                kind = "copied_proof"
            else:
                tx = ProofTx(
                    rnd,
                    commit.hash(),
                    me.public,
                    fake_c,
                    plan_b(genesis),
                    os.urandom(p_len),
                    bytes(64),
                )
                kind = "garbage_proof"
            await host.gossip.publish(sign(tx, me, cid))
            say(event=kind, round=rnd)


def plan_b(genesis: object) -> int:
    return genesis.eval_plan.batch_size  # type: ignore[attr-defined,no-any-return]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--publisher-key", required=True)
    parser.add_argument("--api", required=True)
    trio.run(main, parser.parse_args())
