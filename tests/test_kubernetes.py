"""The Kubernetes testnet (kubernetes/testnet.yaml), checked without a cluster.

No cluster can be started here: the manifests are validated offline against the
Kubernetes API's own schemas (kubernetes-validate bundles them), held to the real CLI
(every `zkpot ...` line parses; the names `testnet dns` writes are the names the
headless service gives the pods) and the pods' home-copying script runs for real.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.home import Home
from node.tools import cli, compose
from support.clilines import dockerfile, fake_testnet, parse, zkpot_commands

pytestmark = pytest.mark.slow  # kubectl and shell subprocesses: not in the fast tier

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "kubernetes" / "testnet.yaml"
OLDEST = "1.30.0"  # the pod-index label the pods read is there from 1.28 on


def _validate(path: Path, version: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(path)]
    return subprocess.run(argv, capture_output=True, text=True)


@pytest.fixture(scope="module")
def docs() -> dict[str, dict[str, Any]]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d for d in yaml.safe_load_all(MANIFEST.read_text())
    }


def test_manifests_validate_against_the_api_schemas() -> None:
    for version in (OLDEST, "1.37.0"):
        r = _validate(MANIFEST, version)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("passed for resource") == 5, r.stdout


def test_the_validator_rejects_a_broken_manifest(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(MANIFEST.read_text().replace("replicas: 4", 'replicas: "four"'))
    r = _validate(broken, OLDEST)
    assert r.returncode != 0 and "spec.replicas" in r.stdout + r.stderr


def _init_commands(docs: dict[str, dict[str, Any]]) -> list[list[str]]:
    (container,) = docs["Job/zkpot-init"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    return zkpot_commands(container["args"][0])


def test_manifests_agree_with_the_cli_and_the_image(docs: dict[str, dict[str, Any]]) -> None:
    init_cmd, dns_cmd = _init_commands(docs)
    init, dns = parse(init_cmd), parse(dns_cmd)
    assert init.func is cli._cmd_testnet_init and dns.func is compose._cmd_dns
    assert dns.dir == init.out and dns.into == "/homes"
    sts = docs["StatefulSet/zkpot"]
    headless = docs["Service/zkpot"]
    assert headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert sts["spec"]["replicas"] == init.nodes
    # pod I of the StatefulSet is <name>-I, found as <name>-I.<service>: what dns wrote
    assert compose.host_of(dns.hostname, 2) == f"zkpot-2.{headless['metadata']['name']}"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"] == labels == sts["spec"]["selector"]["matchLabels"]
    api = docs["Service/zkpot-api"]["spec"]
    assert api["ports"][0]["targetPort"] == init.api_port  # node0's API
    pod = sts["spec"]["template"]["spec"]
    (node,) = pod["containers"]
    args = parse(node["args"])
    assert args.func is cli._cmd_node_start and args.home == compose.NODE_HOME
    assert {m["mountPath"] for m in node["volumeMounts"]} == {compose.NODE_HOME}
    for spec in (pod, docs["Job/zkpot-init"]["spec"]["template"]["spec"]):
        assert spec["securityContext"]["runAsUser"] == compose.UID  # the image's user
        assert spec["securityContext"]["fsGroup"] == compose.UID
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert c["image"] == compose.ComposeSpec().image
    # the readiness probe is the image's HEALTHCHECK
    (healthcheck,) = dockerfile("HEALTHCHECK")
    check = json.loads(healthcheck.split("CMD", 1)[1])
    assert node["readinessProbe"]["exec"]["command"] == check
    # each pod mounts only its own home from the shared volume
    (home,) = pod["initContainers"]
    mounts = {m["name"]: m for m in home["volumeMounts"]}
    assert mounts["homes"]["subPathExpr"] == "node$(POD_INDEX)" and mounts["homes"]["readOnly"]
    (env,) = home["env"]
    assert env["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )


def test_dns_writes_the_pods_names_and_refuses_a_bad_pattern(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "testnet"
    fake_testnet(src, 3, 27100, 8645)
    argv = ["testnet", "dns", str(src), "--hostname", "zkpot-{i}.zkpot", "--json"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [s["host"] for s in summary] == ["zkpot-0.zkpot", "zkpot-1.zkpot", "zkpot-2.zkpot"]
    cfg = Home(src / "node1").load_config()
    assert sorted(a.split("/")[2] for a in cfg.bootstrap) == ["zkpot-0.zkpot", "zkpot-2.zkpot"]
    for bad, why in (("zkpot", "{i}"), ("Zkpot_{i}", "not a DNS name")):
        assert cli.main(["testnet", "dns", str(src), "--hostname", bad]) == 1
        assert why in capsys.readouterr().err


def test_the_pods_home_copy_runs_once_and_puts_the_config_last(
    tmp_path: Path, docs: dict[str, dict[str, Any]]
) -> None:
    """The init container's script, run for real against directories standing in for
    the pod's claim and its subpath of the homes volume."""
    (home,) = docs["StatefulSet/zkpot"]["spec"]["template"]["spec"]["initContainers"]
    script = home["args"][0]
    src = tmp_path / "homes"
    fake_testnet(src, 3, 27100, 8645)
    data, init = tmp_path / "data", src / "node2"
    data.mkdir()
    local = script.replace("/home-init", str(init)).replace("/data", str(data))
    env = {"POD_INDEX": "2", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(["sh", "-c", local], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    copied = sorted(p.relative_to(data) for p in data.rglob("*"))
    assert copied == sorted(p.relative_to(init) for p in init.rglob("*"))
    assert Home(data).load_key().seed == Home(init).load_key().seed
    (data / "config.toml").write_text((data / "config.toml").read_text() + "# kept\n")
    r = subprocess.run(["sh", "-c", local], capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and "in place" in r.stdout, shlex.join([r.stdout, r.stderr])
    assert (data / "config.toml").read_text().endswith("# kept\n")  # never copied twice
