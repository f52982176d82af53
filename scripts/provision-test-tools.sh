#!/usr/bin/env bash
# Provision the real clients and servers the tests drive, on a bare Debian 12 machine
# (root): swaks and openssl (SMTP and TLS clients), Postfix (a relaying MTA in the
# mail-host tests; installed without starting the system instance, see
# scripts/postfix-instance.sh), Chromium and ChromeDriver (the dashboard's browser
# test), Dovecot's binaries (the users-file login test runs a private instance; the
# package's own service is kept from starting). Idempotent: each step checks first, so a warm machine pays nothing.
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
if ! command -v doveadm >/dev/null 2>&1; then
  log "apt-get install dovecot-imapd (its system service is not started)"
  added_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then   # Debian's switch: refuse every service start
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get install -y -qq --no-install-recommends dovecot-imapd >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends dovecot-imapd >/dev/null; }
  if ((added_policy)); then rm -f /usr/sbin/policy-rc.d; fi
fi
