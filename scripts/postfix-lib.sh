# shellcheck shell=bash
# What both private Postfix instances share (sourced by scripts/postfix-instance.sh,
# the benchmark's, and scripts/postfix-relay.sh, the TLS and SMTPUTF8 tests' relay):
# finding an instance's master, starting a written configuration and waiting for its
# port, stopping it by its own pid. Each script defines die() before sourcing this.

compat_level() {
    # The newest level the installed release knows: 3.6 from Postfix 3.6 on, else 2.
    local v
    v=$(postconf -d -h mail_version 2>/dev/null || echo 0.0)
    if [ "$(printf '%s\n' 3.6 "${v%.*}" | sort -V | head -1)" = 3.6 ]; then echo 3.6; else echo 2; fi
}

master_pid() {
    local f=$1/queue/pid/master.pid
    [ -r "$f" ] || return 1
    local pid
    pid=$(tr -dc 0-9 < "$f")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = master ] \
        && echo "$pid"
}

refuse_running() {  # refuse_running BASE: one instance per directory
    if master_pid "$1" >/dev/null; then
        die "an instance already runs in $1 (pid $(master_pid "$1"))"
    fi
}

start_written() {  # start_written BASE PORT: check BASE/etc, start, wait for the port; print the pid
    local base=$1 port=$2
    # The system instance is not ours to start or stop: refuse if our -c would
    # somehow name the default directory.
    [ "$base/etc" != /etc/postfix ] || die "refusing to run on /etc/postfix"
    postfix -c "$base/etc" check >/dev/null 2>"$base/log/check.log" || {
        cat "$base/log/check.log" >&2; die "postfix check failed"; }
    postfix -c "$base/etc" start >"$base/log/start.log" 2>&1 || {
        cat "$base/log/start.log" >&2; die "postfix start failed"; }
    # Wait (bounded) until the port answers.
    local i
    for i in $(seq 1 100); do
        if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
            master_pid "$base"
            return 0
        fi
        sleep 0.1
    done
    die "postfix did not open 127.0.0.1:$port (see $base/log)"
}

cmd_stop() {
    local base=${1:?usage: stop BASE}
    base=$(realpath -m "$base")
    local pid
    pid=$(master_pid "$base") || return 0
    postfix -c "$base/etc" stop >/dev/null 2>&1 || true
    local i
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    # Still there after 10 s: abort, then kill that master and its children by pid.
    postfix -c "$base/etc" abort >/dev/null 2>&1 || true
    sleep 1
    if kill -0 "$pid" 2>/dev/null; then
        local kids
        kids=$(pgrep -P "$pid" || true)
        # shellcheck disable=SC2086  # the children's pids, one word each
        kill -9 "$pid" $kids 2>/dev/null || true
    fi
}

cmd_status() {
    local base=${1:?usage: status BASE}
    master_pid "$(realpath -m "$base")"
}
