"""The Docker Compose testnet, checked without a Docker engine.

`docker-compose config` validates every compose file; the rest holds the compose file to
the real CLI: every command parses with `build_parser()`, ports and volumes agree with
the flags, and `zkpot testnet dns` names each peer by the service that runs it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import multiaddr
import pytest
from libp2p.peer.peerinfo import info_from_p2p_addr

from node.home import Home
from node.tools import cli, compose
from p2p import peer_id_from_seed
from support.clilines import dockerfile, fake_testnet, parse, zkpot_commands

pytestmark = (
    pytest.mark.slow
)  # docker-compose and image builds as subprocesses: not in the fast tier

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "docker"
CHECKED_IN = DOCKER / "compose.yml"
SPEC = compose.ComposeSpec()  # the checked-in file is the default 4-node network
DOCKER_COMPOSE = shutil.which("docker-compose")


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return compose.compose_dict(SPEC)


@pytest.fixture(scope="module")
def init_args(doc: dict[str, Any]) -> tuple[argparse.Namespace, argparse.Namespace]:
    cmds = zkpot_commands(doc["services"]["init"]["command"][0])
    assert [c[:2] for c in cmds] == [["testnet", "init"], ["testnet", "dns"]]
    return parse(cmds[0]), parse(cmds[1])


def test_checked_in_compose_file_is_what_the_cli_writes(tmp_path: Path) -> None:
    out = tmp_path / "compose.yml"
    assert (
        cli.main(["testnet", "compose", "--nodes", "4", "--out", str(out), "--context", ".."]) == 0
    )
    assert out.read_text() == CHECKED_IN.read_text() == compose.render(SPEC), (
        "docker/compose.yml is stale: run `zkpot testnet compose --nodes 4 --out docker/compose.yml`"
    )
    # run from the checkout, the default build context of docker/compose.yml is the repo root
    assert os.path.relpath(compose._default_context(), DOCKER) == ".."


def test_every_command_in_the_image_and_compose_file_parses_with_the_real_cli(
    doc: dict[str, Any], init_args: tuple[argparse.Namespace, argparse.Namespace]
) -> None:
    assert [json.loads(e) for e in dockerfile("ENTRYPOINT")] == [["zkpot"]]
    (default_cmd,) = (json.loads(c) for c in dockerfile("CMD"))
    assert parse(default_cmd).func is cli._cmd_node_start
    nodes = {k: v for k, v in doc["services"].items() if k != "init"}
    for svc in nodes.values():
        assert "entrypoint" not in svc  # the image's `zkpot`
        args = parse(svc["command"])
        assert args.func is cli._cmd_node_start and args.home == compose.NODE_HOME
        assert svc["depends_on"] == {"init": {"condition": "service_completed_successfully"}}
    init, dns = init_args
    assert init.func is cli._cmd_testnet_init and dns.func is compose._cmd_dns
    assert doc["services"]["init"]["entrypoint"] == ["/bin/sh", "-c"]
    assert init.nodes == len(nodes) and init.participants < init.nodes
    assert dns.dir == init.out and dns.into == compose.INIT_HOMES
    assert "$" not in doc["services"]["init"]["command"][0]  # compose would interpolate it


def test_image_home_volume_and_healthcheck(doc: dict[str, Any]) -> None:
    assert dockerfile("VOLUME") == [f'["{compose.NODE_HOME}"]']
    env = " ".join(dockerfile("ENV"))
    assert f"ZKPOT_HOME={compose.NODE_HOME}" in env
    assert dockerfile("USER") == ["zkpot"]
    assert f"--uid {compose.UID}" in " ".join(dockerfile("RUN"))
    (check,) = dockerfile("HEALTHCHECK")
    argv = json.loads(check.split("CMD", 1)[1])
    assert argv[:2] == ["python", "-c"] and "/status" in argv[2] and "ZKPOT_HOME" in argv[2]


def test_dockerfile_defaults_serve_a_normal_machine_and_bake_in_nothing_of_this_one() -> None:
    args = dict(a.split("=", 1) for a in dockerfile("ARG") if "=" in a)
    assert args["BASE"] == "python:3.11-slim-bookworm"
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"
    assert args["TORCH_WHEELS"] == ""  # a wheel directory only when asked for
    runs = " ".join(dockerfile("RUN"))
    assert "--mount=type=secret,id=ca" in runs  # the CA bundle is a secret, never a layer
    code = [ln for ln in (DOCKER / "Dockerfile").read_text().splitlines() if not ln.startswith("#")]
    for machine_path in ("/etc/ssl", "/opt/wheels", "/etc/pip", "PIP_CERT", "/etc/xdg"):
        assert not any(machine_path in ln for ln in code), machine_path
    assert not (DOCKER / "Dockerfile").read_text().startswith("# syntax=")  # no frontend pull


def test_with_ca_joins_the_secret_only_for_the_command(tmp_path: Path) -> None:
    """docker/with-ca.sh, run for real: without the secret the command runs as is; with
    it, pip's bundle plus the secret, in a file gone when the command ends."""
    script = (DOCKER / "with-ca.sh").read_text()
    secret = tmp_path / "ca.pem"
    local = script.replace("/run/secrets/ca", str(secret)).replace("python3 ", f"{sys.executable} ")
    probe = 'echo "${PIP_CERT:-none}"; test -z "${PIP_CERT:-}" || cat "$PIP_CERT"'
    run = ["sh", "-c", local, "with-ca", "sh", "-c", probe]
    env = {k: v for k, v in os.environ.items() if k != "PIP_CERT"}  # this machine sets one
    out = subprocess.run(run, capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "none"
    secret.write_text("-----BEGIN CERTIFICATE-----\nextra\n-----END CERTIFICATE-----\n")
    out = subprocess.run(run, capture_output=True, text=True, check=True, env=env).stdout
    bundle, text = out.split("\n", 1)
    assert text.endswith(secret.read_text()) and "BEGIN CERTIFICATE" in text.split("extra")[0]
    assert not Path(bundle).exists()


def test_ports_and_volumes_are_consistent(
    doc: dict[str, Any], init_args: tuple[argparse.Namespace, argparse.Namespace]
) -> None:
    init, _ = init_args
    services = doc["services"]
    init_mounts = dict(v.split(":", 1) for v in services["init"]["volumes"])
    assert set(doc["volumes"]) == set(init_mounts)
    for i in range(init.nodes):
        svc = services[compose.service_name(i)]
        api = init.api_port + i
        assert svc["ports"] == [f"127.0.0.1:{api}:{api}"]  # API on loopback only, same port
        (mount,) = svc["volumes"]
        volume, path = mount.split(":", 1)
        assert path == compose.NODE_HOME
        # `testnet dns --into /homes` puts home nodeI in /homes/nodeI: this node's volume
        assert init_mounts[volume] == f"{compose.INIT_HOMES}/{compose.service_name(i)}"
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert all(p.startswith("127.0.0.1:") for p in published)
    assert len(set(published)) == len(published) == init.nodes
    p2p = {str(init.p2p_port + i) for i in range(init.nodes)}
    assert not any(p.rsplit(":", 1)[1] in p2p for p in published)  # p2p stays inside


def test_dns_names_each_peer_by_the_service_that_runs_it(
    tmp_path: Path,
    doc: dict[str, Any],
    init_args: tuple[argparse.Namespace, argparse.Namespace],
    capsys: pytest.CaptureFixture[str],
) -> None:
    init, _ = init_args
    src, homes = tmp_path / "testnet", tmp_path / "homes"
    keys = fake_testnet(src, init.nodes, init.p2p_port, init.api_port)
    for i in range(init.nodes):
        (homes / f"node{i}").mkdir(parents=True)  # empty volume mount points
    for _ in range(2):  # idempotent: a re-run gives the same homes
        assert cli.main(["testnet", "dns", str(src), "--into", str(homes), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [s["service"] for s in summary] == [f"node{i}" for i in range(init.nodes)]
    node_services = {k for k in doc["services"] if k != "init"}
    by_service = {
        f"node{i}": (init.p2p_port + i, peer_id_from_seed(k.seed)) for i, k in enumerate(keys)
    }
    for i in range(init.nodes):
        home = Home(homes / f"node{i}")
        cfg = home.load_config()
        assert cfg.listen == (f"/ip4/0.0.0.0/tcp/{init.p2p_port + i}",)
        assert (cfg.api_host, cfg.api_port) == ("0.0.0.0", init.api_port + i)
        assert home.load_key().seed == keys[i].seed
        assert stat.S_IMODE(home.key_file.stat().st_mode) == 0o600
        assert (home.artifacts / "vk.key").read_bytes() == b"vk"
        named = set()
        for addr in cfg.bootstrap:
            parts = addr.split("/")
            assert parts[1] == "dns4" and parts[3] == "tcp" and parts[5] == "p2p", addr
            service, port = parts[2], int(parts[4])
            assert service in node_services and service != f"node{i}"
            assert (port, info_from_p2p_addr(multiaddr.Multiaddr(addr)).peer_id) == by_service[
                service
            ]
            named.add(service)
        assert named == node_services - {f"node{i}"}


def test_compose_and_dns_refuse_bad_input_with_a_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.yml"
    argv = ["testnet", "compose", "--nodes", "2", "--participants", "2", "--out", str(out)]
    assert cli.main(argv) == 1 and not out.exists()
    assert "node0 publishes" in capsys.readouterr().err
    assert cli.main(["testnet", "dns", str(tmp_path)]) == 1
    assert "zkpot testnet init" in capsys.readouterr().err


def _system_yaml_loader() -> list[str] | None:
    """docker-compose's own Python (it ships PyYAML), to read YAML without a new dependency."""
    assert DOCKER_COMPOSE is not None
    first = Path(DOCKER_COMPOSE).read_bytes().split(b"\n", 1)[0].decode(errors="replace")
    python = first[2:].strip().split()[0] if first.startswith("#!") else "python3"
    cmd = [
        python,
        "-c",
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
    ]
    ok = subprocess.run([*cmd[:2], "import yaml"], capture_output=True).returncode == 0
    return cmd if ok else None


@pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="docker-compose is not installed (Debian package docker-compose; .ci/run installs it)",
)
def test_docker_compose_config_accepts_every_compose_file(tmp_path: Path) -> None:
    assert DOCKER_COMPOSE is not None
    generated = []
    for nodes, participants in ((2, 1), (7, 5)):
        out = tmp_path / f"compose-{nodes}.yml"
        argv = ["testnet", "compose", "--nodes", str(nodes), "--participants", str(participants)]
        assert cli.main([*argv, "--out", str(out)]) == 0
        generated.append((out, compose.ComposeSpec(nodes=nodes, participants=participants)))
    files = [(f, SPEC if f == CHECKED_IN else None) for f in sorted(DOCKER.glob("*.yml"))]
    assert (CHECKED_IN, SPEC) in files
    loader = _system_yaml_loader()
    for path, spec in [*files, *generated]:
        run = subprocess.run(
            [DOCKER_COMPOSE, "-f", str(path), "config", "-q"], capture_output=True, text=True
        )
        assert run.returncode == 0, f"docker-compose config rejects {path}:\n{run.stderr}"
        if spec is None:
            continue
        run = subprocess.run(
            [DOCKER_COMPOSE, "-f", str(path), "config", "--services"],
            capture_output=True,
            text=True,
        )
        expected = {"init", *(compose.service_name(i) for i in range(spec.nodes))}
        assert set(run.stdout.split()) == expected
        if loader is not None:  # our YAML writer: the file reads back as the dict it wrote
            read = subprocess.run([*loader, str(path)], capture_output=True, text=True, check=True)
            want = compose.compose_dict(spec)
            if path != CHECKED_IN:
                want["services"] = {
                    k: {**v, "build": {**v["build"], "context": os.path.relpath(REPO, tmp_path)}}
                    for k, v in want["services"].items()
                }
            assert json.loads(read.stdout) == want


def test_docs_show_commands_the_cli_has() -> None:
    """The `zkpot ...` examples in README's Docker section and docker/README.md parse."""
    text = (REPO / "README.md").read_text().split("\n## Docker\n", 1)[1]
    text += (DOCKER / "README.md").read_text()
    examples = []
    for line in text.splitlines():
        code = line.split("  #", 1)[0].strip()
        if code.startswith("zkpot ") and "[" not in code:
            examples.append(shlex.split(code)[1:])
        elif code.startswith("docker compose") and " exec " in code:
            examples.append(shlex.split(code.split(" zkpot ", 1)[1]))
    assert len(examples) >= 6, examples
    for argv in examples:
        parse(argv)
