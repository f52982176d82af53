#!/usr/bin/env bash
# A private Postfix instance on loopback that relays everything it receives to one
# next hop (Buzón) over TLS that must verify: the peer MTA of the TLS tests.
# It never touches the system's own Postfix instance, nor scripts/postfix-instance.sh's.
#
#   scripts/postfix-relay.sh start BASE PORT NEXTHOP_PORT CAFILE
#                                       # listen on 127.0.0.1:PORT, relay to
#                                       # [127.0.0.1]:NEXTHOP_PORT, trust CAFILE
#   scripts/postfix-relay.sh stop BASE  # stop that instance (by its pid file)
#   scripts/postfix-relay.sh status BASE
#
# TLS to the next hop: smtp_tls_security_level = encrypt (no cleartext fallback)
# with smtp_tls_CAfile = CAFILE, so the log says "Trusted TLS connection
# established to 127.0.0.1[127.0.0.1]:NEXTHOP_PORT: TLSv1.3 with cipher ..."
# when Buzón's certificate chains to CAFILE (and "Untrusted" when it does not).
# The log is BASE/log/postfix.log; deliveries show "status=sent (250 ...)".
#
# Environment:
#   POSTFIX_SMTPUTF8   smtputf8_enable (default yes, Postfix's own default)
#   POSTFIX_TLS_LEVEL  smtp_tls_security_level (default encrypt; "verify" also
#                      checks the name, which is 127.0.0.1 here: the generated
#                      certificate names it)
#
# Runs as root with `postfix -c BASE/etc`, like scripts/postfix-instance.sh.
set -euo pipefail

die() { echo "postfix-relay: $*" >&2; exit 1; }
# shellcheck source=scripts/postfix-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/postfix-lib.sh"



write_config() {
    local base=$1 port=$2 nexthop=$3 cafile=$4
    mkdir -p "$base"/{etc,queue,data,log}
    chown postfix "$base/data"
    chmod 755 "$base"
    cat > "$base/etc/main.cf" <<EOF
# Private relay instance written by scripts/postfix-relay.sh: do not edit.
compatibility_level = $(compat_level)
queue_directory = $base/queue
data_directory = $base/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-relay
myhostname = relay.postfix.invalid
mydomain = postfix.invalid
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
smtpd_banner = \$myhostname ESMTP
smtpd_peername_lookup = no
biff = no
append_dot_mydomain = no
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:local delivery is disabled on this instance
smtputf8_enable = ${POSTFIX_SMTPUTF8:-yes}

# Everything goes to one next hop, over TLS or not at all.
relayhost = [127.0.0.1]:$nexthop
default_transport = smtp
relay_transport = smtp
smtp_dns_support_level = disabled
smtp_tls_security_level = ${POSTFIX_TLS_LEVEL:-encrypt}
smtp_tls_CAfile = $cafile
smtp_tls_loglevel = 1
smtp_tls_mandatory_protocols = >=TLSv1.2

# Quick retries: a test waits for the delivery, it does not want Postfix's 5 minutes.
minimal_backoff_time = 1s
maximal_backoff_time = 5s
queue_run_delay = 1s
maximal_queue_lifetime = 10m
bounce_queue_lifetime = 10m
delay_warning_time = 0
maillog_file = $base/log/postfix.log
maillog_file_prefixes = $base/log
EOF
    cat > "$base/etc/master.cf" <<EOF
# service   type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$port inet n     -       n       -       -       smtpd
pickup      unix  n       -       n       60      1       pickup
cleanup     unix  n       -       n       -       0       cleanup
qmgr        unix  n       -       n       300     1       qmgr
tlsmgr      unix  -       -       n       1000?   1       tlsmgr
rewrite     unix  -       -       n       -       -       trivial-rewrite
bounce      unix  -       -       n       -       0       bounce
defer       unix  -       -       n       -       0       bounce
trace       unix  -       -       n       -       0       bounce
verify      unix  -       -       n       -       1       verify
flush       unix  n       -       n       1000?   0       flush
proxymap    unix  -       -       n       -       -       proxymap
proxywrite  unix  -       -       n       -       1       proxymap
smtp        unix  -       -       n       -       -       smtp
relay       unix  -       -       n       -       -       smtp
showq       unix  n       -       n       -       -       showq
error       unix  -       -       n       -       -       error
retry       unix  -       -       n       -       -       error
discard     unix  -       -       n       -       -       discard
local       unix  -       n       n       -       -       local
anvil       unix  -       -       n       -       1       anvil
scache      unix  -       -       n       -       1       scache
postlog     unix-dgram n  -       n       -       1       postlogd
EOF
}

cmd_start() {
    local base=${1:?usage: start BASE PORT NEXTHOP_PORT CAFILE} port=${2:?} nexthop=${3:?} cafile=${4:?}
    [ "$(id -u)" = 0 ] || die "must run as root (postfix -c with a private config)"
    command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ] \
        || die "postfix is not installed (scripts/postfix-instance.sh install)"
    base=$(realpath -m "$base")
    cafile=$(realpath "$cafile")
    refuse_running "$base"
    write_config "$base" "$port" "$nexthop" "$cafile"
    start_written "$base" "$port"
}



case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
