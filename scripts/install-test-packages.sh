#!/usr/bin/env bash
# Make sure the Debian servers and tools the tests run for real are installed: OpenSSH's sshd
# (the off-site backup tests start one of their own on a free port; see tests/sshd.py) and
# GnuPG (backup encryption) and PgBouncer (tests/pgbouncer.py starts one in transaction mode on
# a free port, in front of the test server). Installs what is missing with apt-get, as root or
# through passwordless sudo; otherwise stops with the command to run. Never starts a service:
# the tests start their own sshd and pgbouncer with throwaway configurations.
set -euo pipefail

missing=()
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v gpg >/dev/null || missing+=(gnupg)
[[ -x /usr/sbin/pgbouncer ]] || missing+=(pgbouncer)

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "make test: ${missing[*]} missing and this user cannot install them." >&2
  echo "Run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi

echo "make test: installing Debian's ${missing[*]} for the backup tests (apt-get)"
log=$(mktemp /tmp/caloria-apt-test-packages.XXXXXX)
if ! { "${as_root[@]}" apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"; } >"$log" 2>&1; then
  tail -20 "$log" >&2
  echo "make test: apt-get could not install ${missing[*]} (full log: $log)" >&2
  exit 1
fi
rm -f "$log"
if [[ ! -x /usr/sbin/sshd ]] || ! command -v gpg >/dev/null || [[ ! -x /usr/sbin/pgbouncer ]]; then
  echo "make test: ${missing[*]} installed but sshd, gpg or pgbouncer is still missing" >&2
  exit 1
fi
