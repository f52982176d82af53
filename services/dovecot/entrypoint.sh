#!/bin/sh
# The imap container's entrypoint: make the health user, then run Dovecot in the
# foreground (its master process is PID 1's child under `init: true`).
#
# The healthcheck (python3 -m buzon.health imap) logs in for real. Its user lives in a
# passwd-file of its own on a tmpfs, with a password drawn afresh at every start, and
# Dovecot accepts it only from loopback (allow_nets), so it is no way in from outside
# and never touches the users file or a Maildir on the volume.
set -eu
umask 077
dir=/run/buzon-health
password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
printf 'buzon-health:{PLAIN}%s:10025:10025::%s::allow_nets=127.0.0.1/32,::1/128 userdb_mail=maildir:%s/Maildir\n' \
  "$password" "$dir" "$dir" > "$dir/passwd"
printf 'buzon-health\n%s\n' "$password" > "$dir/credentials"
exec dovecot -F "$@"
