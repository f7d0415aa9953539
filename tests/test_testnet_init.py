"""`zkpot testnet init` refuses a round length this machine cannot meet, from a measured proof."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from node.home import Home
from node.tools.cli import main
from node.tools.netspec import PROOF_PERCENT, TestnetSpec, shortest_round_seconds
from node.tools.testnet import last_error


def test_shortest_round_holds_every_proof_and_verification() -> None:
    spec = TestnetSpec(nodes=4, participants=3)
    # 3 proofs of 4 s one after another, 12 verifications of 50 ms, 25 % headroom.
    seconds = shortest_round_seconds(spec, prove_ms=4000, verify_ms=50)
    proof_window_ms = seconds * 1000 * PROOF_PERCENT // 100
    assert proof_window_ms >= (3 * 4000 + 12 * 50) * 125 // 100
    assert (seconds - 1) * 1000 * PROOF_PERCENT // 100 < (3 * 4000 + 12 * 50) * 125 // 100
    bigger = shortest_round_seconds(TestnetSpec(nodes=9, participants=8), 4000, 50)
    assert bigger > seconds


@pytest.mark.slow  # testnet init as a process, with a measured proof
def test_init_refuses_a_round_too_short_and_names_one_that_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "net"
    args = ["testnet", "init", "--out", str(out), "--nodes", "3", "--participants", "2"]
    args += ["--task", "digits-mlp-tiny", "--eval-batch", "4", "--logrows", "13"]
    assert main([*args, "--round-seconds", "1"]) == 1
    err = capsys.readouterr().err
    assert "--round-seconds 1 is too short for 2 participants" in err
    assert "one proof took" in err
    suggested = int(err.split("use --round-seconds ")[1].split()[0])
    assert suggested > 1
    assert not (out / "node0").exists()
    # the override accepts the short one; the task's flags reach the genesis
    skew = ["--partition", "dirichlet", "--alpha", "0.1", "--local-epochs", "3"]
    skew += ["--learning-rate", "0.05", "--train-batch-size", "8"]
    b = ["--round-seconds", "1", "--allow-short-rounds", "--out", str(tmp_path / "b"), *skew]
    assert main([*args, *b]) == 0
    pk = tmp_path / "b" / "node1" / "artifacts" / "pk.key"
    assert pk.stat().st_nlink == 2  # one file, linked into both participants
    task = Home(tmp_path / "b" / "node0").load_genesis().task
    assert (task.partition, task.dirichlet_alpha_ppm) == ("dirichlet", 100_000)
    assert (task.local_epochs, task.learning_rate_ppm, task.train_batch_size) == (3, 50_000, 8)
    # each participant holds its own rows, and a data file that does not fit stops its
    # node at start with the file and the problem named
    x1 = np.load(tmp_path / "b" / "node1" / "data.npz")["x"]
    x2 = np.load(tmp_path / "b" / "node2" / "data.npz")["x"]
    assert x1.shape[1] == 64 and not (tmp_path / "b" / "node0" / "data.npz").exists()
    assert not {r.tobytes() for r in x1} & {r.tobytes() for r in x2}
    bad = tmp_path / "b" / "node1" / "data.npz"
    np.savez(bad.open("wb"), x=np.zeros((5, 63), np.float32), y=np.zeros(5, np.int64))
    run = subprocess.run(
        [sys.executable, "-m", "node.tools.cli", "node", "start", "--home", str(bad.parent)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert f"training data file {bad}: 'x' has shape (5, 63)" in run.stderr
    assert "Traceback" not in run.stderr


def test_a_dead_node_is_reported_by_the_line_that_says_why(tmp_path: Path) -> None:
    """`testnet up` prints it instead of only pointing at node.log (issue 22)."""
    log = tmp_path / "node.log"
    log.write_text(
        "2026-12-04 node1 INFO zkpot.node: starting\n"
        "zkpot: the API port 127.0.0.1:8646 is taken by another process (another node?): x\n"
    )
    assert last_error(log).startswith("zkpot: the API port 127.0.0.1:8646 is taken")
    log.write_text("Traceback (most recent call last):\n  File x\nValueError: boom\n\n")
    assert last_error(log) == "ValueError: boom"
    assert last_error(tmp_path / "none.log").startswith("(no log:")


def test_a_server_step_or_guard_it_cannot_run_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "net"
    assert main(["testnet", "init", "--out", str(out), "--guard-members", "2"]) == 1
    assert "guard_members 2 is below min_members 3" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["testnet", "init", "--out", str(out), "--momentum", "1"])
    assert "the momentum must be at least 0 and below 1" in capsys.readouterr().err


def test_every_testnet_flag_says_what_it_does() -> None:
    """Issue 22: `testnet init --help` listed bare flags, and `--rounds` meant held-out
    batches for init and final blocks for up; up's is `--blocks` now."""
    from node.tools.cli import build_parser

    parser = build_parser()
    testnet = next(
        a
        for a in parser._subparsers._group_actions[0].choices["testnet"]._actions  # type: ignore[union-attr]
        if isinstance(a, argparse._SubParsersAction)
    )
    for name in ("init", "up"):
        for action in testnet.choices[name]._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"testnet {name} {action.option_strings[0]} has no help"
    up = testnet.choices["up"].parse_args(["DIR", "--blocks", "7"])
    assert up.blocks == 7


def test_a_final_line_says_how_the_global_model_was_made() -> None:
    from node.tools.testnet import _final_line
    from support.chainfactory import make_chain

    g = make_chain().genesis
    blk = {
        "round": 3, "proposer": "ab" * 32, "score": 9, "members": ["cd" * 32, "ef" * 32],
        "proofs": [{"participant": "cd" * 32, "k": 7}, {"participant": "ef" * 32, "k": 5}],
        "aggregate_hash": "01" * 32,
    }  # fmt: skip
    line = _final_line(4, blk, g, 0.5)
    assert "momentum step from the mean of cdcdcdcd (k=7), efefefef (k=5)" in line
    assert _final_line(4, {**blk, "aggregate_hash": ""}, g, 0.5).count("momentum") == 0
    named = _final_line(4, blk, g, 0.5, {"ab" * 32: "node0", "cd" * 32: "node1"})
    assert "by node0: momentum step from the mean of node1 (k=7), efefefef (k=5)" in named


def test_mnist_tasks_grow_the_circuit_and_only_a_model_past_the_remainder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """mnist-mlp's 25,450 weights need 2^15 rows in one column; its masked vector goes in
    two parts (v7), so best-share carries it. Only a model past the 65,536 parameters a
    block's remainder holds is refused, before any work."""
    from node.tools import testnet
    from node.tools.testnet import least_logrows

    assert least_logrows("digits-mlp") <= TestnetSpec().logrows  # make testnet: as before
    assert least_logrows("mnist-mlp") == 15
    monkeypatch.setattr(testnet, "_parameters", lambda task: 70_000)
    out = tmp_path / "net"
    assert main(["testnet", "init", "--out", str(out), "--task", "mnist-mlp"]) == 1
    err = capsys.readouterr().err
    assert "--rule best-share cannot carry mnist-mlp: its 70000 parameters" in err
    assert "use --rule winner" in err and not out.exists()


@pytest.mark.slow
def test_a_testnet_on_the_built_in_mnist_needs_no_files(tmp_path: Path) -> None:
    """`--task mnist-mlp`: the built-in 5,000 MNIST images, split and partitioned as digits
    are (about 60 s on 2 cores: a 2^15-row circuit and its self-test proof)."""
    out = tmp_path / "net"
    args = ["testnet", "init", "--out", str(out), "--nodes", "3", "--participants", "2"]
    args += ["--task", "mnist-mlp", "--eval-batch", "2", "--rounds", "5"]
    args += ["--partition", "dirichlet", "--alpha", "0.5"]
    assert main([*args, "--round-seconds", "1", "--allow-short-rounds"]) == 0
    publisher = Home(out / "node0")
    genesis = publisher.load_genesis()
    assert (genesis.task.dataset, genesis.task.architecture) == ("mnist", "mnist-mlp")
    assert genesis.rule.name == "best-share"  # v7: its 25,450-element vector goes in 2 parts
    assert genesis.aggregation.parameters == 25450
    assert genesis.eval_plan.input_shape == (784,) and genesis.eval_plan.num_batches == 5
    test_index = np.frombuffer(publisher.test_index_file.read_bytes(), dtype="<i8")
    assert len(test_index) == 1000 and test_index.max() < 5000  # a fifth of the 5,000
    rows = 0
    for i in (1, 2):
        data = np.load(out / f"node{i}" / "data.npz")
        assert data["x"].shape[1] == 784 and data["x"].dtype == np.float32
        assert data["x"].min() >= 0.0 and data["x"].max() <= 1.0
        rows += len(data["y"])
    assert rows == 5000 - 5 * 2 - 1000  # the pool, every row to one participant
