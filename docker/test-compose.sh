#!/usr/bin/env bash
# The compose testnet under a real Docker engine, end to end:
#   engine -> base image -> node image -> compose up -> agreed final block -> CLI -> down.
# Usage (from anywhere): docker/test-compose.sh     (or: make docker-test)
#
# On a normal machine it builds with the Dockerfile's defaults. On a machine like CI's
# (no registry, PyPI only through a TLS-inspecting proxy, no PyTorch index) it adapts:
# it starts dockerd when none runs (root), builds a Debian bookworm base with
# debootstrap when no base image can be pulled, passes the machine's CA bundle as the
# build secret `ca` and the local CPU torch wheel as the build context's wheel dir.
# Every step is named; the first that fails ends the run with its name and exit 1, after
# tearing down what it brought up (containers, networks, volumes, the daemon it started).
#
# Environment (all optional):
#   ZKPOT_DOCKER_BASE   base image to use (skips the pull / debootstrap step)
#   ZKPOT_DOCKER_CA     CA bundle for the build secret (default: the system bundle, if any)
#   ZKPOT_TORCH_INDEX   index for the CPU torch wheel (default: PyTorch's, when reachable)
#   ZKPOT_TORCH_WHEEL   a torch 2.13.0 CPU wheel file to use instead of an index
#   ZKPOT_DOCKER_WAIT   seconds to wait for the agreed final block (default 900)
#   ZKPOT_DOCKER_KEEP=1 leave the network running at the end (no teardown)
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPOSE_FILE=$REPO/docker/compose.yml
PROJECT=zkpot-compose-test
IMAGE=zkpot:local
BASE_TAG=zkpot-base:bookworm
WHEELS=docker/.wheels  # inside the build context, ignored by git
WAIT_S=${ZKPOT_DOCKER_WAIT:-900}
WORK=$(mktemp -d)
STARTED_DOCKERD=
STEP=setup
T0=$(date +%s)

say() { printf '[%4ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
step() { STEP=$1; say "== $STEP"; }
fail() { say "FAILED at step '$STEP': $*"; exit 1; }

teardown() {
  local rc=$?
  if [ -n "${ZKPOT_DOCKER_KEEP:-}" ] && [ "$rc" = 0 ]; then
    say "left running (ZKPOT_DOCKER_KEEP): ${COMPOSE[*]:-docker compose} -p $PROJECT -f $COMPOSE_FILE down -v"
  else
    if [ "$rc" != 0 ] && [ -n "${COMPOSE:-}" ]; then
      say "last log lines of every service:"
      "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" logs --no-color --tail 15 2>&1 | sed 's/^/    /' | tail -80
    fi
    if [ -n "${COMPOSE:-}" ]; then
      say "teardown: containers, networks, volumes"
      "${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" down -v --remove-orphans >/dev/null 2>&1 \
        || say "teardown: compose down failed"
    fi
    rm -rf "${REPO:?}/$WHEELS"
    if [ -n "$STARTED_DOCKERD" ]; then
      say "teardown: stopping the dockerd this script started"
      kill "$STARTED_DOCKERD" 2>/dev/null
      for _ in $(seq 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
    fi
  fi
  rm -rf "$WORK"
  say "total $(($(date +%s) - T0)) s, exit $rc"
  exit "$rc"
}
trap teardown EXIT
trap 'fail "interrupted"' INT TERM

# ---------------------------------------------------------------- engine
step "docker engine"
if ! command -v docker >/dev/null || ! command -v dockerd >/dev/null; then
  # a fresh Debian machine as root (as CI): install the engine, as `make browser` does chromium
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "no Docker engine here: installing Debian's docker.io (and docker-compose)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose >/dev/null \
      || fail "apt-get could not install docker.io: install Docker (https://docs.docker.com/engine/install/)"
  fi
fi
command -v docker >/dev/null || fail "no docker CLI on PATH (install Docker: https://docs.docker.com/engine/install/, or on Debian as root: apt-get install docker.io)"
if ! docker info >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || fail "no Docker engine answers and this is not root: start dockerd, or run as root"
  command -v dockerd >/dev/null || fail "no Docker engine answers and there is no dockerd to start"
  say "no engine answers: starting dockerd (--iptables=false: this machine has no NAT rules for it)"
  dockerd --iptables=false >"$WORK/dockerd.log" 2>&1 &
  STARTED_DOCKERD=$!
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; fail "dockerd did not come up in 60 s"; }
fi
NO_NAT=  # an engine without NAT rules: builds reach the network only on the host's
if [ -n "$STARTED_DOCKERD" ] || pgrep -a dockerd 2>/dev/null | grep -q -- '--iptables=false'; then
  NO_NAT=1
fi
say "engine $(docker version --format '{{.Server.Version}}' 2>/dev/null)"

# A CLI that builds with BuildKit (the Dockerfile mounts a secret): `docker buildx`, or a
# docker CLI with BuildKit built in (e.g. Debian's docker.io 20.10).
BUILD=()
if docker buildx version >/dev/null 2>&1; then
  BUILD=(docker buildx build --load)
else
  for cli in $(type -ap docker); do
    if DOCKER_BUILDKIT=1 "$cli" build --help 2>/dev/null | grep -q -- '--secret'; then
      BUILD=(env DOCKER_BUILDKIT=1 "$cli" build)
      break
    fi
  done
fi
[ ${#BUILD[@]} -gt 0 ] || fail "no docker CLI here builds with BuildKit: install the buildx plugin"
if docker compose version >/dev/null 2>&1; then
  COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null; then
  COMPOSE=(docker-compose)
else
  fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
say "build: ${BUILD[*]}; compose: ${COMPOSE[*]}"

# ---------------------------------------------------------------- base image
step "base image"
BASE=${ZKPOT_DOCKER_BASE:-}
if [ -z "$BASE" ]; then
  DEFAULT_BASE=python:3.11-slim-bookworm
  if docker image inspect "$DEFAULT_BASE" >/dev/null 2>&1 \
    || timeout 120 docker pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
    BASE=$DEFAULT_BASE
  elif docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    BASE=$BASE_TAG
    say "no registry: reusing the local base $BASE_TAG"
  else
    say "no registry: building a Debian bookworm base with debootstrap (about a minute)"
    if ! command -v debootstrap >/dev/null; then
      [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || fail "debootstrap is missing (apt-get install debootstrap)"
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } \
        >"$WORK/apt.log" 2>&1 || { tail -5 "$WORK/apt.log"; fail "could not install debootstrap"; }
    fi
    MIRROR=$(grep -hoE '^(deb|URIs:) +https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
      | head -1 | awk '{print $NF}')
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$WORK/rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -5 "$WORK/debootstrap.log"; fail "debootstrap from $MIRROR failed"; }
    tar -C "$WORK/rootfs" -c . | docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' - "$BASE_TAG" >/dev/null || fail "docker import of the base failed"
    rm -rf "$WORK/rootfs"
    BASE=$BASE_TAG
  fi
fi
say "base: $BASE"

# ---------------------------------------------------------------- node image
step "node image"
ARGS=(--build-arg "BASE=$BASE")
CA=${ZKPOT_DOCKER_CA:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$CA" ] && ARGS+=(--secret "id=ca,src=$CA")
WHEEL=${ZKPOT_TORCH_WHEEL:-}
if [ -z "$WHEEL" ] && [ -n "${ZKPOT_TORCH_INDEX:-}" ]; then
  ARGS+=(--build-arg "TORCH_INDEX=$ZKPOT_TORCH_INDEX")
elif [ -z "$WHEEL" ] && ! timeout 15 python3 -c 'import urllib.request; urllib.request.urlopen("https://download.pytorch.org/whl/cpu/torch/", timeout=10)' 2>/dev/null; then
  # PyTorch's index is out of reach: a CPU wheel from pip's local wheel directories
  for dir in ${PIP_FIND_LINKS:-} $(pip3 config get global.find-links 2>/dev/null) /opt/wheels; do
    found=$(ls "$dir"/torch-2.13.0+cpu-*.whl 2>/dev/null | head -1)
    [ -n "$found" ] && { WHEEL=$found; break; }
  done
  [ -n "$WHEEL" ] || fail "PyTorch's CPU index is unreachable and no torch-2.13.0+cpu wheel was found: set ZKPOT_TORCH_WHEEL or ZKPOT_TORCH_INDEX"
fi
if [ -n "$WHEEL" ]; then
  mkdir -p "$REPO/$WHEELS" && cp "$WHEEL" "$REPO/$WHEELS/" || fail "cannot copy $WHEEL into the build context"
  ARGS+=(--build-arg "TORCH_WHEELS=$WHEELS")
  say "torch from $WHEEL"
fi
[ -n "$NO_NAT" ] && ARGS+=(--network host)  # containers reach nothing without NAT rules
t=$(date +%s)
"${BUILD[@]}" "${ARGS[@]}" -f "$REPO/docker/Dockerfile" -t "$IMAGE" "$REPO" >"$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log"; fail "docker build failed"; }
say "image $IMAGE built in $(($(date +%s) - t)) s ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"

# ---------------------------------------------------------------- compose up
step "compose up"
PORTS=$(grep -oE '"127\.0\.0\.1:[0-9]+:[0-9]+"' "$COMPOSE_FILE" | cut -d: -f2 | tr '\n' ' ')
for port in $PORTS; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port on 127.0.0.1 is in use; the compose file publishes node APIs there"
  fi
done
"${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" down -v --remove-orphans >/dev/null 2>&1
"${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" up -d --no-build >"$WORK/up.log" 2>&1 \
  || { tail -20 "$WORK/up.log"; fail "compose up failed"; }
say "up: ${COMPOSE[*]} -p $PROJECT -f docker/compose.yml"

# ---------------------------------------------------------------- agreed final block
step "agreed final block"
python3 - "$WAIT_S" $PORTS <<'EOF' || fail "the nodes did not agree on a final block at height >= 2"
import json, sys, time, urllib.request
wait_s, ports = float(sys.argv[1]), sys.argv[2:]
deadline, last, seen = time.time() + wait_s, "", {}
while time.time() < deadline:
    for p in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{p}/status", timeout=3) as r:
                seen[p] = json.load(r)
        except Exception as exc:
            seen[p] = {"error": str(exc)[:60]}
    fin = {p: (s.get("finalized") or {}) for p, s in seen.items()}
    line = " ".join(f"{p}:{f.get('height', '-')}" for p, f in fin.items())
    if line != last:
        print(f"    finalized heights by API port: {line}", flush=True)
        last = line
    hashes = {f.get("hash") for f in fin.values()}
    if len(hashes) == 1 and None not in hashes and all(f["height"] >= 2 for f in fin.values()):
        print(f"    every node: final block {hashes.pop()[:16]} at height {min(f['height'] for f in fin.values())}")
        sys.exit(0)
    time.sleep(3)
sys.exit(1)
EOF

# ---------------------------------------------------------------- CLI
step "CLI through compose exec"
out=$("${COMPOSE[@]}" -p "$PROJECT" -f "$COMPOSE_FILE" exec -T node1 zkpot chain head --home /data 2>&1) \
  || { echo "$out"; fail "zkpot chain head inside node1 failed"; }
echo "$out" | sed 's/^/    /'
step "CLI from the host"
ZKPOT=$REPO/.venv/bin/zkpot
[ -x "$ZKPOT" ] || ZKPOT=$(command -v zkpot) || fail "no zkpot on the host (make install)"
API_PORT=$(echo "$PORTS" | awk '{print $2}')
out=$("$ZKPOT" chain head --api "http://127.0.0.1:$API_PORT" 2>&1) \
  || { echo "$out"; fail "zkpot chain head --api http://127.0.0.1:$API_PORT failed"; }
echo "$out" | sed 's/^/    /'

STEP=done
say "compose testnet OK: 4 nodes agreed on a final block; CLI answered inside and outside"
