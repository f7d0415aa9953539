"""The accuracy circuit: "the model committed as C classifies k of this batch correctly".

Public: the batch inputs x, the one-hot labels Y, k. Private: the weights, bound
to C by ezkl's `polycommit` visibility (the proof's leading curve points are the
KZG commitments of the parameter column; DESIGN.md §4). One setup serves the
whole chain: keys depend on the architecture and batch size, not the weights.

Every function here calls ezkl directly and may take seconds or hang on bad
input: call them only inside a worker process (`prover.worker`).

(Over 300 lines on purpose: everything that touches ezkl's files and formats, the ONNX
export, settings, keys, witness, proof bytes and commitments, stays in this one module.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ezkl
import numpy as np
import onnx
import torch
from torch import nn

from consensus.types import CircuitSpec
from prover.quant import (
    FixedPoint,
    IntArray,
    QuantError,
    accuracy_count,
    dequantise_params,
    logits,
    to_felt_hex,
)

COMPRESSED_BYTES = 32  # x little-endian, y's parity in the top bit
POINT_BYTES = 64  # an affine BN254 G1 point as it appears in the proof: x || y, big-endian
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
SETTINGS, COMPILED, VK, PK, SRS, ONNX = (
    "settings.json",
    "circuit.ezkl",
    "vk.key",
    "pk.key",
    "kzg.srs",
    "model.onnx",
)
MANIFEST = "manifest.json"


class CircuitError(Exception):
    """Building, proving or verifying failed; the message says which step and why."""


class AccuracyHead(nn.Module):
    """Counts strict arg-max hits without any float constant a prover could choose.

    a = max(logits + Y), b = max(logits - Y), correct = a - sum(Y) > b: sum(Y) is
    the "1" of the fixed point, taken from the public labels, so ties (and the
    all-equal-logits model) count as wrong.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        a = torch.amax(logits + y, dim=1)
        b = torch.amax(logits - y, dim=1)
        one = torch.sum(y, dim=1)
        return torch.sum(((a - one) > b).to(torch.float32)).reshape(1)


@dataclass(frozen=True)
class Manifest:
    """What the genesis pins (hashes) plus what a node needs to rebuild the keys."""

    architecture: str
    batch_size: int
    input_dim: int
    num_classes: int
    logrows: int
    input_scale: int
    param_scale: int
    decomp_base: int
    decomp_legs: int
    commitment_points: int
    proof_bytes: int  # every proof of this circuit has exactly this length
    settings_hash: str
    compiled_hash: str
    vk_hash: str
    srs_hash: str

    @property
    def fixed_point(self) -> FixedPoint:
        return FixedPoint(self.input_scale, self.param_scale, self.decomp_base, self.decomp_legs)

    def spec(self) -> CircuitSpec:
        """What a genesis pins of these artifacts."""
        return CircuitSpec(
            "polycommit",
            self.commitment_points * COMPRESSED_BYTES,
            self.proof_bytes,
            bytes.fromhex(self.settings_hash),
            bytes.fromhex(self.compiled_hash),
            bytes.fromhex(self.vk_hash),
            bytes.fromhex(self.srs_hash),
        )

    @classmethod
    def derive(
        cls,
        directory: Path,
        *,
        architecture: str,
        batch_size: int,
        input_dim: int,
        num_classes: int,
        proof_bytes: int,
    ) -> Manifest:
        """A manifest from pinned inputs only: the genesis values and the settings file.

        A node never trusts a manifest it was handed: everything verification depends
        on comes from the genesis or from `settings.json`, whose hash the genesis pins.
        """
        try:
            settings = json.loads((directory / SETTINGS).read_text())
            ra = settings["run_args"]
            points = len(settings.get("module_sizes", {}).get("polycommit", [])) or 1
            return cls(
                architecture=architecture,
                batch_size=batch_size,
                input_dim=input_dim,
                num_classes=num_classes,
                logrows=int(ra["logrows"]),
                input_scale=int(ra["input_scale"]),
                param_scale=int(ra["param_scale"]),
                decomp_base=int(ra["decomp_base"]),
                decomp_legs=int(ra["decomp_legs"]),
                commitment_points=points,
                proof_bytes=proof_bytes,
                settings_hash=sha256_file(directory / SETTINGS),
                compiled_hash=sha256_file(directory / COMPILED),
                vk_hash=sha256_file(directory / VK),
                srs_hash=sha256_file(directory / SRS),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CircuitError(
                f"cannot derive the circuit manifest in {directory}: {exc}"
            ) from None

    def save(self, directory: Path) -> None:
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(directory / MANIFEST)

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        try:
            raw = json.loads((directory / MANIFEST).read_text())
            return cls(**raw)
        except (OSError, ValueError, TypeError) as exc:
            raise CircuitError(f"cannot read circuit manifest in {directory}: {exc}") from None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _set_params(net: nn.Module, qparams: list[IntArray], fp: FixedPoint) -> None:
    tensors = dequantise_params(qparams, fp.param_scale)
    params = list(net.parameters())
    if len(params) != len(tensors) or any(
        p.shape != t.shape for p, t in zip(params, tensors, strict=True)
    ):
        raise QuantError("quantised parameters do not match the architecture's shapes")
    with torch.no_grad():
        for p, t in zip(params, tensors, strict=True):
            p.copy_(t)


def export_onnx(
    net: nn.Module,
    qparams: list[IntArray],
    fp: FixedPoint,
    batch: int,
    dim: int,
    classes: int,
    path: Path,
) -> None:
    """Export the head over `net` carrying exactly `qparams`; refuse any float constant."""
    _set_params(net, qparams, fp)
    model = AccuracyHead(net).eval()
    x = torch.zeros(batch, dim)
    y = torch.zeros(batch, classes)
    # The TorchScript exporter is deprecated, but it is the one whose graphs ezkl reads.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x, y),
            str(path),
            input_names=["x", "y"],
            output_names=["k"],
            dynamo=False,
            opset_version=17,
        )
    graph = onnx.load(str(path)).graph
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.t.data_type in FLOAT_TYPES:
                    raise CircuitError(
                        f"ONNX graph has a float constant ({node.name}): the prover would control it"
                    )
    names = {name for name, _ in net.named_parameters()}
    for init in graph.initializer:
        if init.data_type in FLOAT_TYPES and init.name.removeprefix("net.") not in names:
            raise CircuitError(f"ONNX initializer {init.name} is not a model parameter")


# ezkl lays a circuit of more rows than 2^logrows over more columns. Up to this many it
# works and proves faster than a taller circuit (mnist-cnn B=16, 116,848 rows: 29 s at
# 2^15, 47 s at 2^17, bench/results/prover-paper.json); at 2^13 (15 columns) its key
# setup failed with halo2's "General synthesis error".
MAX_FOLD = 4


def fold_logrows(rows: int, logrows: int) -> int:
    """The least logrows >= `logrows` whose circuit holds `rows` in MAX_FOLD columns."""
    while rows > MAX_FOLD << logrows:
        logrows += 1
    return logrows


def _run_args(fp: FixedPoint, logrows: int) -> Any:
    ra: Any = ezkl.PyRunArgs()
    ra.param_visibility = "polycommit"  # keys independent of weights; weights bound by C
    ra.input_visibility = "public"
    ra.output_visibility = "public"
    ra.ignore_range_check_inputs_outputs = True  # the verifier supplies them itself
    ra.input_scale = fp.input_scale
    ra.param_scale = fp.param_scale
    ra.scale_rebase_multiplier = 64  # never rescale: exact integer semantics (see prover.quant)
    ra.decomp_base = fp.decomp_base
    ra.decomp_legs = fp.decomp_legs
    ra.logrows = logrows
    return ra


def build(
    architecture: str,
    net: nn.Module,
    qparams: list[IntArray],
    *,
    batch_size: int,
    input_dim: int,
    num_classes: int,
    out: Path,
    fp: FixedPoint | None = None,
    logrows: int = 14,
    srs: Path | None = None,
    grow: bool = False,
) -> tuple[Manifest, SelfTest]:
    """Build the chain's circuit artifacts once: ONNX, settings, compiled circuit, SRS, keys.

    With `srs` None a test-only SRS is generated (its secret is known to this
    machine: fine for a testnet, never for a real network); otherwise the given
    SRS file is copied in and its hash pinned. `grow` (testnet init): `logrows` is a
    floor, raised to `fold_logrows` of the circuit's rows; otherwise it is taken as
    given, and a key setup that fails says which size would fold the rows.
    """
    fp = fp or FixedPoint()
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, qparams, fp, batch_size, input_dim, num_classes, out / ONNX)
    if not ezkl.gen_settings(str(out / ONNX), str(out / SETTINGS), _run_args(fp, logrows)):
        raise CircuitError("ezkl.gen_settings failed")
    settings = json.loads((out / SETTINGS).read_text())
    folded = fold_logrows(int(settings.get("num_rows") or 0), logrows)
    if grow and folded > logrows and srs is None:
        logrows = folded
        if not ezkl.gen_settings(str(out / ONNX), str(out / SETTINGS), _run_args(fp, logrows)):
            raise CircuitError("ezkl.gen_settings failed")
        settings = json.loads((out / SETTINGS).read_text())
    if settings["run_args"]["logrows"] != logrows:
        raise CircuitError(
            f"circuit needs logrows {settings['run_args']['logrows']}, asked {logrows}"
        )
    if not ezkl.compile_circuit(str(out / ONNX), str(out / COMPILED), str(out / SETTINGS)):
        raise CircuitError("ezkl.compile_circuit failed")
    if srs is None:
        ezkl.gen_srs(str(out / SRS), logrows)
    else:
        shutil.copyfile(srs, out / SRS)
    try:
        ok = ezkl.setup(
            str(out / COMPILED), str(out / VK), str(out / PK), str(out / SRS), None, False
        )
    except RuntimeError as exc:
        raise CircuitError(
            f"ezkl's key setup failed ({exc}); the circuit has {settings.get('num_rows')} "
            f"rows: try logrows {folded} or more"
        ) from None
    if not ok:
        raise CircuitError("ezkl.setup failed")
    # proof_bytes is fixed by the self-test proof below.
    manifest = Manifest.derive(
        out,
        architecture=architecture,
        batch_size=batch_size,
        input_dim=input_dim,
        num_classes=num_classes,
        proof_bytes=0,
    )
    manifest.save(out)
    # Self-test: one real proof of the initial model fixes the proof length (ezkl
    # ignores trailing bytes, which would make proof ids malleable) and shows the
    # artifacts work together before any genesis pins them; its timing tells a
    # testnet what round length this machine can meet.
    zeros = np.zeros((batch_size, input_dim), dtype=np.int64)
    labels = np.zeros(batch_size, dtype=np.int64)
    started = time.perf_counter()
    k, proof = prove(out, net, qparams, zeros, labels)
    proved = time.perf_counter()
    manifest = dataclasses.replace(manifest, proof_bytes=len(proof))
    manifest.save(out)
    ok, reason = verify(out, proof, zeros, labels, commit(out, net, qparams), k)
    verified = time.perf_counter()
    if not ok:
        raise CircuitError(f"self-test proof of the new circuit does not verify: {reason}")
    return manifest, SelfTest(int((proved - started) * 1000), int((verified - proved) * 1000))


@dataclass(frozen=True)
class SelfTest:
    """How long the self-test proof took to prove and to verify on this machine."""

    prove_ms: int
    verify_ms: int


def regenerate_pk(directory: Path) -> None:
    """Rebuild the proving key locally (pk files are never shipped) and check the vk it implies."""
    manifest = Manifest.load(directory)
    check_hashes(directory, manifest, need_vk=False)
    vk_tmp = directory / "vk.regen"
    if not ezkl.setup(
        str(directory / COMPILED),
        str(vk_tmp),
        str(directory / PK),
        str(directory / SRS),
        None,
        False,
    ):
        raise CircuitError("ezkl.setup failed while regenerating the proving key")
    if sha256_file(vk_tmp) != manifest.vk_hash:
        vk_tmp.unlink()
        raise CircuitError(
            "regenerated verifying key does not match the pinned vk hash: wrong SRS or circuit"
        )
    vk_tmp.replace(directory / VK)


def check_hashes(directory: Path, manifest: Manifest, *, need_vk: bool = True) -> None:
    files = [
        (SETTINGS, manifest.settings_hash),
        (COMPILED, manifest.compiled_hash),
        (SRS, manifest.srs_hash),
    ]
    if need_vk:
        files.append((VK, manifest.vk_hash))
    for name, want in files:
        path = directory / name
        if not path.exists():
            raise CircuitError(f"circuit artifact {path} is missing")
        if sha256_file(path) != want:
            raise CircuitError(
                f"circuit artifact {path} does not match its pinned sha256 {want[:16]}…"
            )


def compress_point(point: bytes) -> bytes:
    """A proof's affine point (x || y, big-endian) in ezkl's compressed form.

    Compressed: x little-endian with the parity of y in the top bit of the last
    byte (y and p - y differ in parity, so this names exactly one point).
    """
    x_le = bytearray(point[:32][::-1])
    if int.from_bytes(point[32:64], "big") & 1:
        x_le[31] |= 0x80
    return bytes(x_le)


def _compile_model(
    directory: Path, manifest: Manifest, net: nn.Module, qparams: list[IntArray], work: Path
) -> None:
    fp = manifest.fixed_point
    export_onnx(
        net, qparams, fp, manifest.batch_size, manifest.input_dim, manifest.num_classes, work / ONNX
    )
    if not ezkl.compile_circuit(str(work / ONNX), str(work / COMPILED), str(directory / SETTINGS)):
        raise CircuitError("ezkl.compile_circuit failed for this model")


def _witness(directory: Path, work: Path) -> dict[str, Any]:
    """Run the circuit's forward pass; the JSON file has the commitments as hex (the return value does not)."""
    ezkl.gen_witness(
        str(work / "input.json"),
        str(work / COMPILED),
        str(work / "witness.json"),
        str(directory / VK),
        str(directory / SRS),
    )
    witness: dict[str, Any] = json.loads((work / "witness.json").read_text())
    return witness


def _commitment_of(witness: dict[str, Any]) -> bytes:
    columns = witness["processed_params"]["polycommit"]
    return b"".join(bytes.fromhex(point) for column in columns for point in column)


def commit(directory: Path, net: nn.Module, qparams: list[IntArray]) -> bytes:
    """C: the compressed KZG commitment(s) of the parameter column, as the proof carries them.

    Taken from ezkl's own witness (its `processed_params`) so the parameter
    layout is ezkl's, whatever order it packs the tensors in.
    """
    manifest = Manifest.load(directory)
    with tempfile.TemporaryDirectory(prefix="zkpot-commit-") as tmp:
        work = Path(tmp)
        _compile_model(directory, manifest, net, qparams, work)
        zeros = np.zeros((manifest.batch_size, manifest.input_dim), dtype=np.int64)
        _input_json(
            zeros, np.zeros(manifest.batch_size, dtype=np.int64), manifest, work / "input.json"
        )
        return _commitment_of(_witness(directory, work))


def _input_json(xq: IntArray, labels: np.ndarray[Any, Any], manifest: Manifest, path: Path) -> None:
    scale = 1 << manifest.input_scale
    y = np.zeros((len(labels), manifest.num_classes))
    y[np.arange(len(labels)), labels] = 1.0
    data = {"input_data": [(xq.astype(np.float64) / scale).ravel().tolist(), y.ravel().tolist()]}
    path.write_text(json.dumps(data))


def circuit_k(
    directory: Path,
    net: nn.Module,
    qparams: list[IntArray],
    xq: IntArray,
    labels: np.ndarray[Any, Any],
) -> int:
    """k as the circuit itself computes it (ezkl's witness), without proving: for cross-checks."""
    manifest = Manifest.load(directory)
    with tempfile.TemporaryDirectory(prefix="zkpot-witness-") as tmp:
        work = Path(tmp)
        _compile_model(directory, manifest, net, qparams, work)
        _input_json(xq, labels, manifest, work / "input.json")
        return _output_k(_witness(directory, work))


def _output_k(witness: dict[str, Any]) -> int:
    return int.from_bytes(bytes.fromhex(witness["outputs"][0][0]), "little")


def prove(
    directory: Path,
    net: nn.Module,
    qparams: list[IntArray],
    xq: IntArray,
    labels: np.ndarray[Any, Any],
) -> tuple[int, bytes]:
    """Prove the committed model's k on (xq, labels); returns (k, raw proof bytes)."""
    manifest = Manifest.load(directory)
    fp = manifest.fixed_point
    out, scale = logits(net, qparams, xq, fp)  # refuses out-of-range models before ezkl sees them
    expected = accuracy_count(out, scale, labels, fp)
    with tempfile.TemporaryDirectory(prefix="zkpot-prove-") as tmp:
        work = Path(tmp)
        _compile_model(directory, manifest, net, qparams, work)
        _input_json(xq, labels, manifest, work / "input.json")
        witness = _witness(directory, work)
        k = _output_k(witness)
        if k != expected:
            raise CircuitError(
                f"circuit computes k={k} but the plain evaluator {expected}: layout mismatch"
            )
        ezkl.prove(
            str(work / "witness.json"),
            str(work / COMPILED),
            str(directory / PK),
            str(work / "proof.json"),
            str(directory / SRS),
        )
        proof = bytes(json.loads((work / "proof.json").read_text())["proof"])
        if leading_commitment(proof, manifest.commitment_points) != _commitment_of(witness):
            raise CircuitError("the proof's leading points are not the parameter commitment")
    return k, proof


def leading_commitment(proof: bytes, points: int) -> bytes:
    return b"".join(
        compress_point(proof[i * POINT_BYTES : (i + 1) * POINT_BYTES]) for i in range(points)
    )


def instances(
    manifest: Manifest, xq: IntArray, labels: np.ndarray[Any, Any], k: int
) -> list[list[str]]:
    """The public instances, rebuilt from the batch and k: never taken from a message."""
    one = 1 << manifest.input_scale
    y = np.zeros((len(labels), manifest.num_classes), dtype=np.int64)
    y[np.arange(len(labels)), labels] = one
    return [to_felt_hex(xq) + to_felt_hex(y) + to_felt_hex([k])]


def verify(
    directory: Path,
    proof: bytes,
    xq: IntArray,
    labels: np.ndarray[Any, Any],
    commitment: bytes,
    k: int,
) -> tuple[bool, str]:
    """(True, "") iff the proof shows that the model committed as C scores k on this batch."""
    manifest = Manifest.load(directory)
    want = manifest.commitment_points * COMPRESSED_BYTES
    if len(commitment) != want:
        return False, f"commitment is {len(commitment)} bytes, the circuit's is {want}"
    if len(proof) != manifest.proof_bytes:
        return (
            False,
            f"proof is {len(proof)} bytes, this circuit's proofs are {manifest.proof_bytes}",
        )
    if len(proof) <= manifest.commitment_points * POINT_BYTES:
        return False, "proof is too short"
    if leading_commitment(proof, manifest.commitment_points) != commitment:
        return False, "proof is not about the committed weights (leading commitment differs)"
    if xq.shape != (manifest.batch_size, manifest.input_dim) or labels.shape != (
        manifest.batch_size,
    ):
        return False, "batch shape does not match the circuit"
    if not 0 <= k <= manifest.batch_size:
        return False, f"k={k} is outside 0..{manifest.batch_size}"
    doc = {
        "protocol": None,
        "instances": instances(manifest, xq, labels, k),
        "proof": list(proof),
        "hex_proof": None,
        "split": None,
        "pretty_public_inputs": None,
        "timestamp": None,
        "version": None,
    }
    with tempfile.TemporaryDirectory(prefix="zkpot-verify-") as tmp:
        path = Path(tmp) / "proof.json"
        path.write_text(json.dumps(doc))
        try:
            ok = ezkl.verify(
                str(path),
                str(directory / SETTINGS),
                str(directory / VK),
                str(directory / SRS),
                False,
            )
        except Exception as exc:  # ezkl raises instead of returning False
            return False, f"proof rejected by the verifier: {str(exc).splitlines()[0][:200]}"
    return (True, "") if ok else (False, "proof rejected by the verifier")
