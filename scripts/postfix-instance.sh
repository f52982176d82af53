#!/usr/bin/env bash
# A private Postfix instance on loopback delivering to Maildir, for the benchmark
# (scripts/bench.py). It never touches the system's own Postfix instance.
#
#   scripts/postfix-instance.sh install           # Debian's postfix, if missing (root)
#   scripts/postfix-instance.sh start BASE PORT   # configure BASE/{etc,queue,data,mail,log}, start
#   scripts/postfix-instance.sh stop BASE         # stop that instance (by its pid file)
#   scripts/postfix-instance.sh status BASE       # exit 0 if its master runs; prints its pid
#
# Mail to <anything>@example.org on 127.0.0.1:PORT lands in BASE/mail/<anything>/new/,
# written by virtual(8) as VMAIL_USER (default: nobody). Postfix's durability is
# left as shipped: cleanup(8) fsyncs the queue file before the 250, virtual(8)
# fsyncs each Maildir file before renaming it into new/.
#
# Environment:
#   VMAIL_USER         owner of the delivered mail (default nobody)
#   POSTFIX_PROCS      default_process_limit (default 2100: room for 2,000 sessions)
#   POSTFIX_LOG=0      do not log (default: BASE/log/postfix.log through postlogd)
#   VMAIL_MAILBOXES    mailboxes user0 ... user<N-1>@example.org (default 1000)
#
# The instance is started with `postfix -c BASE/etc` as root. That needs no
# alternate_config_directories entry in /etc/postfix/main.cf, and in fact works
# with no system main.cf at all (Debian's "No configuration"). The entry matters
# for unprivileged callers and the set-gid postdrop/postqueue, which this instance
# never uses, since mail comes in by SMTP only.
set -euo pipefail

die() { echo "postfix-instance: $*" >&2; exit 1; }
# shellcheck source=scripts/postfix-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/postfix-lib.sh"

masters() { pgrep -x master 2>/dev/null | sort || true; }

cmd_install() {
    if command -v postfix >/dev/null 2>&1 || [ -x /usr/sbin/postfix ]; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "postfix is not installed and only root can install it"
    local before after added_policy=0
    before=$(masters)
    # Keep the package's maintainer scripts from starting the system instance: a
    # policy-rc.d that refuses every start (Debian's documented switch), removed
    # again afterwards if we were the ones to add it.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string bench.invalid" | debconf-set-selections
    local rc=0
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix \
        >/tmp/postfix-install.log 2>&1 || rc=$?
    if [ "$rc" != 0 ]; then
        # The package lists may be missing on a fresh machine.
        apt-get update -q >>/tmp/postfix-install.log 2>&1 || true
        rc=0
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix \
            >>/tmp/postfix-install.log 2>&1 || rc=$?
    fi
    [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" = 0 ] || die "apt-get install postfix failed (see /tmp/postfix-install.log)"
    # Anything the install started that was not running before is the system
    # instance: stop it (only it; by the default config's own stop command).
    after=$(masters)
    if [ -n "$(comm -13 <(echo "$before") <(echo "$after") | grep . || true)" ]; then
        echo "postfix-instance: the install started the system postfix; stopping it" >&2
        postfix stop >/dev/null 2>&1 || true
    fi
}

write_config() {
    local base=$1 port=$2 user=$3
    local uid gid
    uid=$(id -u "$user") || die "no user $user"
    gid=$(id -g "$user")
    local procs=${POSTFIX_PROCS:-2100}
    mkdir -p "$base"/{etc,queue,data,mail,log}
    # The same placement Buzón gives its mail root (storage/maildir.py): on ext4
    # without a journal, files created in a busy block group cost 10x more CPU, and
    # both Postfix's queue files and its Maildirs would pay it. Best effort.
    chattr +T "$base/mail" "$base/queue" 2>/dev/null || true
    chown "$uid:$gid" "$base/mail"
    chown postfix "$base/data"
    # Everything up to BASE must be traversable by the postfix and vmail users.
    chmod 755 "$base"

    cat > "$base/etc/main.cf" <<EOF
# Private benchmark instance written by scripts/postfix-instance.sh: do not edit.
compatibility_level = $(compat_level)
queue_directory = $base/queue
data_directory = $base/data
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-bench
myhostname = bench.postfix.invalid
mydomain = postfix.invalid
myorigin = \$myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost =
relay_domains =
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_banner = \$myhostname ESMTP
biff = no
append_dot_mydomain = no

# Maildirs under $base/mail: user1@example.org -> "user1/" (trailing slash = Maildir).
virtual_mailbox_domains = example.org
virtual_mailbox_base = $base/mail
virtual_mailbox_maps = texthash:$base/etc/vmailbox
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
virtual_minimum_uid = 1
# Nothing else is delivered or relayed anywhere.
alias_maps =
alias_database =
local_recipient_maps =
local_transport = error:local delivery is disabled on this instance
default_transport = error:outbound mail is disabled on this instance
relay_transport = error:outbound mail is disabled on this instance
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
smtpd_peername_lookup = no

# Load: 2,000 concurrent sessions, one smtpd each; no rate limits from loopback.
default_process_limit = $procs
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
smtpd_client_recipient_rate_limit = 0
smtpd_client_new_tls_session_rate_limit = 0
smtpd_client_event_limit_exceptions = 127.0.0.0/8
in_flow_delay = 0
message_size_limit = 10240000

# Bounded queue life; nothing is ever sent out anyway.
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
delay_warning_time = 0
EOF
    if [ "${POSTFIX_LOG:-1}" != 0 ]; then
        cat >> "$base/etc/main.cf" <<EOF
maillog_file = $base/log/postfix.log
maillog_file_prefixes = $base/log
EOF
    fi

    # virtual(8) refuses regexp substitutions ("$1") in its maps, so the mailboxes
    # are listed: user0 ... user<N-1> (buzon-load's recipients) and load (its sender).
    {
        local i
        for ((i = 0; i < ${VMAIL_MAILBOXES:-1000}; i++)); do
            printf 'user%d@example.org\tuser%d/\n' "$i" "$i"
        done
        printf 'load@example.org\tload/\n'
    } > "$base/etc/vmailbox"

    # Debian's master.cf, trimmed to what SMTP-in → virtual delivery needs, chroot off.
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
virtual     unix  -       n       n       -       -       virtual
lmtp        unix  -       -       n       -       -       lmtp
anvil       unix  -       -       n       -       1       anvil
scache      unix  -       -       n       -       1       scache
postlog     unix-dgram n  -       n       -       1       postlogd
EOF
}



cmd_start() {
    local base=${1:?usage: start BASE PORT} port=${2:?usage: start BASE PORT}
    [ "$(id -u)" = 0 ] || die "must run as root (postfix -c with a private config)"
    cmd_install
    base=$(realpath -m "$base")
    refuse_running "$base"
    write_config "$base" "$port" "${VMAIL_USER:-nobody}"
    start_written "$base" "$port"
}



case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    *) sed -n '2,9p' "$0" >&2; exit 2 ;;
esac
