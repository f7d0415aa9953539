"""Join benchmark: how fast a new node syncs and fully re-verifies a chain.

Builds a chain once per size with real ezkl proofs on the e2e tests' tiny circuit
(digits-mlp-tiny, eval batch 4): every round's batch has the same content, so one real
proof per participant, made once, is valid in every round; each block still carries
its own commits, bindings, reveal (with its Merkle proof) and signatures, and no check
is answered from another block's (a batch's hash includes its round; each block's
model blob is the winner's model with one float weight moved by less than a
quantisation step, so its hash, hence its commitment and evaluation checks, are its
own while its quantised weights — what C and k depend on — are the winner's). The
chain is stored in a serving node's LevelDB store; a fresh node then catches up through
the node's own code: `node.syncer.Syncer` pulls the blocks over a real libp2p
connection on loopback from a host serving that store (transfer costs little
there: this measures validation) and `node.importer` validates each like a gossiped
one (cheap rules, every proof verified in a pool of real worker processes, the
winner's model committed and re-evaluated) and applies it.

Prints blocks/s and proofs/s per chain length and proofs per block, and writes
bench/results/join.json.

    .venv/bin/python bench/join.py [--blocks 100 1000] [--proofs 1 2 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import trio

from consensus import rules
from consensus.crypto import SigningKey, sha256
from consensus.merkle import merkle_proof, merkle_root
from consensus.rules import sign
from consensus.types import (
    Block,
    CommitTx,
    EvalBatch,
    EvalPlan,
    Genesis,
    ProofTx,
    Reveal,
    Task,
    Timing,
)
from node.chain import Chain
from node.engine import Engine
from node.roundlog import RoundLog
from p2p import HostConfig, P2PHost
from p2p.syncclient import SyncClient
from p2p.syncserver import SyncServer
from prover import circuit, jobs
from prover.client import Warmup
from prover.data import load_dataset
from prover.models import build_model, model_from_bytes, model_to_bytes
from prover.quant import quantise_params
from prover.worker import worker_pool
from storage import ChainStore

RESULTS = Path(__file__).resolve().parent / "results"
ARCH, BATCH, LOGROWS = "digits-mlp-tiny", 4, 13


@dataclass
class Material:
    """What every chain of the benchmark is made of: the circuit, one batch, and each
    participant's model with its real commitment, k and proof on that batch."""

    artifacts: Path
    manifest: circuit.Manifest
    initial: bytes
    x: Any
    y: Any
    keys: list[SigningKey]
    models: list[bytes]
    proved: list[tuple[bytes, int, bytes]]  # (C, k, proof)


def material(root: Path, participants: int) -> Material:
    artifacts = root / "artifacts"
    built = jobs.build_circuit(ARCH, BATCH, str(artifacts), 0, LOGROWS, None)
    manifest = circuit.Manifest.load(artifacts)
    ds = load_dataset("digits")
    x, y = ds.x[:BATCH].reshape(BATCH, -1), ds.y[:BATCH]
    batch = jobs.make_eval_batch(0, x, y, manifest.input_scale)
    keys = [SigningKey(sha256(b"bench-join" + bytes([i]))) for i in range(participants)]
    models = [model_to_bytes(build_model(ARCH, 100 + i)) for i in range(participants)]
    proved = []
    for m in models:
        c = jobs.commit(str(artifacts), ARCH, m)
        p = jobs.prove(str(artifacts), ARCH, m, batch.encode())
        proved.append((c, p.k, p.proof))
    return Material(artifacts, manifest, built.initial_model, x, y, keys, models, proved)


def genesis_for(mat: Material, blocks: int, batches: list[EvalBatch]) -> Genesis:
    m = mat.manifest
    return Genesis(
        chain_name="bench-join",
        timing=Timing(1_000_000_000_000, 60_000, 20_000, 20_000, 5_000, 2),
        finality_depth=2,
        participants=tuple(sorted(k.public for k in mat.keys)),
        publisher=SigningKey(sha256(b"bench-join-publisher")).public,
        task=Task("digits", ARCH, 1, 16, 100_000, "iid", 0, 1),
        eval_plan=EvalPlan(
            BATCH,
            blocks,
            (mat.x.shape[1],),
            m.input_scale,
            10,
            merkle_root([b.hash() for b in batches]),
        ),
        circuit=m.spec(),
        initial_model_hash=sha256(mat.initial),
    )


def variant(model: bytes, r: int, scale: int) -> bytes:
    """The same quantised model under another blob hash (see the module docstring)."""
    net = model_from_bytes(ARCH, model)
    before = quantise_params(list(net.parameters()), scale)
    with torch.no_grad():
        first = next(iter(net.parameters()))
        first.view(-1)[0] += (r + 1) * 1e-7
    after = quantise_params(list(net.parameters()), scale)
    assert all((a == b).all() for a, b in zip(before, after, strict=True)), "moved a quantum"
    return model_to_bytes(net)


def build_chain(mat: Material, store_dir: Path, blocks: int, per_block: int) -> tuple[Genesis, int]:
    """Write a valid chain of `blocks` blocks with `per_block` proofs each into a store."""
    batches = [
        jobs.make_eval_batch(i, mat.x, mat.y, mat.manifest.input_scale) for i in range(blocks)
    ]
    leaves = [b.hash() for b in batches]
    genesis = genesis_for(mat, blocks, batches)
    chain_id = genesis.hash()
    publisher = SigningKey(sha256(b"bench-join-publisher"))
    store = ChainStore.open(store_dir)
    chain = Chain(store, genesis, mat.initial)
    for m in mat.models:
        store.put_blob(m)
    parent = chain_id
    who = list(range(per_block))
    for r in range(blocks):
        commits: dict[int, CommitTx] = {}
        for i in who:
            c, _, _ = mat.proved[i]
            binding = rules.commit_binding(chain_id, mat.keys[i].public, r, parent, c)
            commits[i] = sign(
                CommitTx(r, parent, mat.keys[i].public, binding), mat.keys[i], chain_id
            )
        sealed = tuple(sorted(c.hash() for c in commits.values()))
        reveal = sign(
            Reveal(r, batches[r], tuple(merkle_proof(leaves, r)), sealed), publisher, chain_id
        )
        proofs = {}
        for i in who:
            c, k, proof = mat.proved[i]
            tx = ProofTx(r, commits[i].hash(), mat.keys[i].public, c, k, proof)
            proofs[i] = sign(tx, mat.keys[i], chain_id)
        ranking = rules.rank_proofs(batches[r], proofs.values())
        best = next(i for i in who if mat.keys[i].public == ranking[0].participant)
        model = variant(mat.models[best], r, mat.manifest.param_scale)
        block = Block(
            r,
            parent,
            r + 1,
            mat.keys[best].public,
            1,
            reveal,
            tuple(sorted(commits.values(), key=lambda c: c.hash())),
            tuple(sorted(proofs.values(), key=lambda p: p.commit_id)),
            sha256(model),
        )
        block = sign(block, mat.keys[best], chain_id)
        raw = block.encode()
        trio.run(chain.apply, block, raw, (model,), max(1, ranking[0].k))
        parent = sha256(raw)
    store.close()
    return genesis, len(raw)


async def catch_up(
    mat: Material, genesis: Genesis, served: Path, fresh: Path, workers: int
) -> float:
    """Seconds for a fresh node to sync and re-verify the served chain, through the
    node's own Syncer and BlockImporter with real worker processes, over a real
    libp2p connection on loopback to a host serving the chain (p2p.syncserver)."""
    server_chain = Chain(ChainStore.open(served), genesis, mat.initial)
    chain = Chain(ChainStore.open(fresh), genesis, mat.initial)
    target = server_chain.head_height()
    server = P2PHost(HostConfig(seed=os.urandom(32)), chain.chain_id)
    SyncServer(server, server_chain.store)
    me = P2PHost(HostConfig(seed=os.urandom(32)), chain.chain_id)
    try:
        async with (
            server.run(),
            me.run(),
            worker_pool(1, "bench-prover", warmup=Warmup()) as prover,
            worker_pool(workers, "bench-verify", warmup=Warmup()) as verifier,
        ):
            await me.connect(server.addrs[0])
            engine = Engine(
                key=SigningKey(os.urandom(32)),
                chain=chain,
                net=me,
                sync=SyncClient(me),
                prover=prover,
                verifier=verifier,
                artifacts=mat.artifacts,
                roundlog=RoundLog(),
                data_file=None,
                batches=None,
                verify_timeout_s=120,
                prove_timeout_s=120,
            )
            await trio.sleep(8)  # the workers warm up (imports) before the clock starts
            start = time.perf_counter()
            while chain.head_height() < target:
                await engine.syncer.sync_once()
            took = time.perf_counter() - start
    finally:
        server_chain.store.close()
        chain.store.close()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--blocks", type=int, nargs="*", default=[100, 1000])
    ap.add_argument("--proofs", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="zkpot-bench-join-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        mat = material(root, max(args.proofs))
        print(f"circuit and {len(mat.models)} real proofs in {time.perf_counter() - t:.1f} s")
        print(
            f"{'blocks':>6} {'proofs/block':>12} {'block bytes':>11} {'seconds':>8} {'blocks/s':>9} {'proofs/s':>9}"
        )
        for n in args.blocks:
            for per in args.proofs:
                served, fresh = root / f"served-{n}-{per}", root / f"fresh-{n}-{per}"
                genesis, size = build_chain(mat, served, n, per)
                took = trio.run(catch_up, mat, genesis, served, fresh, args.workers)
                row = {
                    "blocks": n,
                    "proofs_per_block": per,
                    "block_bytes": size,
                    "seconds": round(took, 2),
                    "blocks_per_s": round(n / took, 2),
                    "proofs_per_s": round(n * per / took, 2),
                    "workers": args.workers,
                }
                rows.append(row)
                print(
                    f"{n:>6} {per:>12} {size:>11} {took:>8.1f} {n / took:>9.1f} {n * per / took:>9.1f}"
                )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "join.json"
    out.write_text(json.dumps({"circuit": f"{ARCH} B={BATCH} 2^{LOGROWS}", "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
