#!/usr/bin/env bash
# Provision the real clients and servers the tests drive, on a bare Debian 12 machine
# (root): swaks and openssl (SMTP and TLS clients), Postfix (a relaying MTA in the
# mail-host tests; installed without starting the system instance, see
# scripts/postfix-instance.sh), Chromium and ChromeDriver (the dashboard's browser
# test). Idempotent: each step checks first, so a warm machine pays nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf '[provision] %s\n' "$*" >&2; }

export DEBIAN_FRONTEND=noninteractive
need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if ((${#need[@]})); then
  log "apt-get install ${need[*]}"
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi
bash scripts/postfix-instance.sh install
