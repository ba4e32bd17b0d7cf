#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the browser tests (Playwright drives the system
# browser; it never downloads one of its own). Installs it with apt-get when it is missing, as
# root or through passwordless sudo; otherwise stops with the command to run.
set -euo pipefail

CHROMIUM=${CALORIA_CHROMIUM:-/usr/bin/chromium}

if [[ -x "$CHROMIUM" ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "make test: Chromium is missing ($CHROMIUM) and this user cannot install it." >&2
  echo "Run: sudo apt-get update && sudo apt-get install -y chromium" >&2
  exit 1
fi

echo "make test: installing Debian's chromium for the browser tests (apt-get)"
log=$(mktemp /tmp/caloria-apt-chromium.XXXXXX)
if ! { "${as_root[@]}" apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    chromium fonts-liberation; } >"$log" 2>&1; then
  tail -20 "$log" >&2
  echo "make test: apt-get could not install chromium (full log: $log)" >&2
  exit 1
fi
rm -f "$log"
if [[ ! -x "$CHROMIUM" ]]; then
  echo "make test: chromium installed but $CHROMIUM is not there; set CALORIA_CHROMIUM" >&2
  exit 1
fi
