#!/usr/bin/env bash
# Re-pin the images' dependencies: resolve pyproject.toml's ranges in scratch venvs and
# write exact versions to requirements/{client,server,build}.txt. Review the diff,
# rebuild the images (docker compose --profile tools build) and run ./scripts/test.
# Only the dependencies are installed (never the project itself), so nothing is built
# in the working tree and no environment outside the scratch directory changes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Requirement lists from pyproject.toml: runtime, runtime + [server], build-system.
python3 - "$work" <<'PY'
import pathlib, sys, tomllib
work = pathlib.Path(sys.argv[1])
meta = tomllib.loads(pathlib.Path("pyproject.toml").read_text())
runtime = meta["project"]["dependencies"]
server = meta["project"]["optional-dependencies"]["server"]
(work / "client.in").write_text("\n".join(runtime) + "\n")
(work / "server.in").write_text("\n".join(runtime + server) + "\n")
(work / "build.in").write_text("\n".join(meta["build-system"]["requires"]) + "\n")
PY

pin() {  # pin NAME DESCRIPTION
  python3 -m venv "$work/$1"
  "$work/$1/bin/pip" install -q --disable-pip-version-check -r "$work/$1.in"
  {
    echo "# Pinned dependencies of $2, for reproducible images."
    echo "# Regenerate with scripts/lock-requirements.sh; the ranges live in pyproject.toml."
    "$work/$1/bin/pip" freeze | LC_ALL=C sort -f   # freeze leaves out pip/setuptools/wheel
  } >"requirements/$1.txt"
}
pin client "the package without extras (monitor-client, buzon-sidecar)"
pin server "the package with the [server] extra (the buzon SMTP server)"

python3 -m venv "$work/build-env"
"$work/build-env/bin/pip" install -q -U --disable-pip-version-check -r "$work/build.in"
{
  echo "# Pinned build backend for the project's wheel inside the images (pip wheel"
  echo "# --no-build-isolation), so an image build fetches no unpinned package."
  "$work/build-env/bin/pip" freeze --all | grep -E '^(setuptools|wheel)=='
} >requirements/build.txt
git --no-pager diff --stat -- requirements/ 2>/dev/null || true
