#!/usr/bin/env bash
# Make sure Debian's Prometheus is installed for the monitoring tests: `promtool` checks the
# /metrics output and unit-tests the alert rules, and one test starts a real `prometheus`
# scraping a live gunicorn. Installs the package with apt-get when it is missing, as root or
# through passwordless sudo; otherwise stops with the command to run. The package's own
# service is never started (the tests start their own server on a free port).
set -euo pipefail

PROMTOOL=${CALORIA_PROMTOOL:-/usr/bin/promtool}
PROMETHEUS=${CALORIA_PROMETHEUS:-/usr/bin/prometheus}

if [[ -x "$PROMTOOL" && -x "$PROMETHEUS" ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "make test: Prometheus is missing ($PROMTOOL, $PROMETHEUS) and this user cannot install it." >&2
  echo "Run: sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus" >&2
  exit 1
fi

echo "make test: installing Debian's prometheus for the monitoring tests (apt-get)"
log=$(mktemp /tmp/caloria-apt-prometheus.XXXXXX)
# policy-rc.d 101: the package's postinst must not start its own server on :9090.
policy=/usr/sbin/policy-rc.d
created_policy=
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
  "${as_root[@]}" chmod +x "$policy"
  created_policy=1
fi
if ! { "${as_root[@]}" apt-get update -qq &&
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    prometheus; } >"$log" 2>&1; then
  [[ -n $created_policy ]] && "${as_root[@]}" rm -f "$policy"
  tail -20 "$log" >&2
  echo "make test: apt-get could not install prometheus (full log: $log)" >&2
  exit 1
fi
[[ -n $created_policy ]] && "${as_root[@]}" rm -f "$policy"
rm -f "$log"
if [[ ! -x "$PROMTOOL" || ! -x "$PROMETHEUS" ]]; then
  echo "make test: prometheus installed but $PROMTOOL or $PROMETHEUS is not there;" >&2
  echo "set CALORIA_PROMTOOL / CALORIA_PROMETHEUS" >&2
  exit 1
fi
