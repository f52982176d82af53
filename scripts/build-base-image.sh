#!/usr/bin/env bash
# Build a local Python base image from Debian packages, for hosts that cannot pull
# from a container registry (CI, air-gapped mail hosts). See ../shared/ENVIRONMENT.md.
#
#   scripts/build-base-image.sh [--force] [IMAGE]      (default IMAGE: buzon-base:bookworm)
#
# debootstrap --variant=minbase bookworm with python3 + python3-venv + ca-certificates,
# from the Debian mirror this host already uses, plus the host's CA bundle (HTTPS may go
# through an intercepting proxy), then `docker import`. Idempotent: an existing image is
# kept unless --force. services/Dockerfile (every image, one target each) accepts it as
#   docker build -f services/Dockerfile --target smtp --build-arg BASE_IMAGE=buzon-base:bookworm .
# or, with compose, BUZON_BASE_IMAGE=buzon-base:bookworm docker compose build.
set -euo pipefail
log() { printf '[base-image] %s\n' "$*" >&2; }

force=0
if [[ ${1:-} == --force ]]; then force=1; shift; fi
image=${1:-buzon-base:bookworm}
suite=${BUZON_BASE_SUITE:-bookworm}
start=$SECONDS

if ((!force)) && docker image inspect "$image" >/dev/null 2>&1; then
  log "$image already exists (use --force to rebuild)"
  exit 0
fi

# The mirror: BUZON_DEBIAN_MIRROR, else the first URIs: line of the host's deb822
# sources (or the first deb line of sources.list), else deb.debian.org.
mirror=${BUZON_DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    mirror=$(awk '/^URIs:/ {print $2; exit}' "$f")
    [[ -n $mirror ]] && break
  done
fi
if [[ -z $mirror && -r /etc/apt/sources.list ]]; then
  mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
fi
mirror=${mirror:-http://deb.debian.org/debian}

command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install debootstrap"; exit 1; }
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -r $ca_bundle ]] || { log "no CA bundle at $ca_bundle"; exit 1; }

work=$(mktemp -d /var/tmp/buzon-base.XXXXXX)
trap 'rm -rf --one-file-system "$work"' EXIT
rootfs=$work/rootfs

log "debootstrap $suite from $mirror (about a minute)"
if ! debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1; then
  tail -30 "$work/debootstrap.log" >&2
  [[ -r $rootfs/debootstrap/debootstrap.log ]] && tail -30 "$rootfs/debootstrap/debootstrap.log" >&2
  log "debootstrap failed"
  exit 1
fi

# apt inside builds: the host's sources (updates + security too) when they are deb822,
# the host's CA bundle so HTTPS through the proxy verifies, no recommends, no caches.
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
  cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/debian.sources"
  : >"$rootfs/etc/apt/sources.list"
fi
install -m 0644 "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
cat >"$rootfs/etc/apt/apt.conf.d/90buzon" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Retries "3";
APT
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90buzon-nodoc" <<'DPKG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
DPKG
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/debootstrap \
       "$rootfs"/tmp/* "$rootfs"/var/tmp/*

log "docker import -> $image"
tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "buzon base: debootstrap $suite minbase + python3 from $mirror" \
  - "$image" >/dev/null

size=$(docker image inspect --format '{{.Size}}' "$image")
version=$(docker run --rm "$image" python3 --version 2>&1 || echo "python3 missing?")
log "built $image ($((size / 1000000)) MB, $version) in $((SECONDS - start)) s"
