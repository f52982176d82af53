#!/bin/bash
# Start spamd on a private Unix socket, wait until it answers a keep-alive (rules loaded),
# then start the buzon-sidecar that pipes each message through spamc. If either process
# exits, stop the other and exit with its status, so the container's restart policy
# brings both back; SIGTERM/SIGINT are passed on to both.
#
# Environment (all optional):
#   BUZON_MAX_MESSAGE_SIZE   the server's size limit; spamc scans messages up to it plus
#                            room for trace headers (its own default is only 500 KB)
#   SPAMD_MAX_CHILDREN       spamd worker processes (default 2)
#   SPAMD_READY_TIMEOUT      seconds to wait for spamd to answer (default 120)
#   SPAMC_TIMEOUT            seconds spamc waits for spamd (default 25; keep it below the
#                            sidecar's --timeout so spamc fails cleanly first)
#   BUZON_SIDECAR_*          the sidecar's own settings (root, port, timeout...; see
#                            .env.example); arguments to this script are passed to
#                            buzon-sidecar before the `--` and override them.
set -euo pipefail

sock=/run/spamd/spamd.sock
max_size=$(( ${BUZON_MAX_MESSAGE_SIZE:-10240000} + 65536 ))
ready_timeout=${SPAMD_READY_TIMEOUT:-120}

spamd --socketpath="$sock" --socketmode=0600 --nouser-config --syslog=stderr \
      --max-children="${SPAMD_MAX_CHILDREN:-2}" --min-children=1 \
      --pidfile=/run/spamd/spamd.pid &
spamd_pid=$!
sidecar_pid=

requested=0   # 1 once Docker asked us to stop: then exit 0

stop() {
  kill -TERM "$spamd_pid" ${sidecar_pid:+"$sidecar_pid"} 2>/dev/null || true
}
# shellcheck disable=SC2317  # invoked by the trap
on_signal() {
  requested=1
  stop
}
trap on_signal TERM INT

deadline=$((SECONDS + ready_timeout))
until spamc -U "$sock" -K >/dev/null 2>&1; do
  if ((requested)); then
    wait || true
    exit 0
  fi
  if ! kill -0 "$spamd_pid" 2>/dev/null; then
    echo "buzon-spamassassin: spamd exited during start-up" >&2
    wait "$spamd_pid" || exit $?
    exit 1
  fi
  if ((SECONDS >= deadline)); then
    echo "buzon-spamassassin: spamd did not answer within ${ready_timeout}s (SPAMD_READY_TIMEOUT)" >&2
    stop
    exit 1
  fi
  sleep 0.5
done
echo "buzon-spamassassin: spamd ready after ${SECONDS}s; starting the sidecar" >&2

# spamc: -x exit non-zero instead of passing the message through unscanned when spamd
# fails; -X report "spamd unavailable" as a temporary failure (75, EX_TEMPFAIL); -s scan
# messages up to the server's limit.
buzon-sidecar "$@" -- spamc -U "$sock" -x -X -s "$max_size" -t "${SPAMC_TIMEOUT:-25}" &
sidecar_pid=$!

status=0
wait -n "$spamd_pid" "$sidecar_pid" || status=$?
if ((!requested)); then
  echo "buzon-spamassassin: $( kill -0 "$spamd_pid" 2>/dev/null && echo buzon-sidecar || echo spamd) exited (status $status); stopping" >&2
  stop
fi
wait || true
((requested)) && exit 0
exit $((status == 0 ? 1 : status))   # an unrequested exit is a failure: let Docker restart us
