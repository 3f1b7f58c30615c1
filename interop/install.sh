#!/usr/bin/env bash
# Installs the interop test dependencies: a Python venv at python/.venv with
# python/requirements.txt, node/node_modules from node/package-lock.json, and
# Debian's chromium for the headless browser test (apt, when run as root and
# /usr/bin/chromium or $CHROMIUM is missing).
# Idempotent (skips a part whose pin file has not changed since its last
# install), quiet on success, non-zero with the tool's output on failure.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

fail() {
  echo "interop/install.sh: $1" >&2
  cat "$log" >&2
  exit 1
}

sum() { sha256sum "$1" | cut -d' ' -f1; }

# ---- Python -------------------------------------------------------------
py="$here/python"
venv="$py/.venv"
stamp="$venv/.requirements.sha256"
want="$(sum "$py/requirements.txt")"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
  rm -rf "$venv"
  python3 -m venv "$venv" >"$log" 2>&1 || fail "python3 -m venv failed"
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q --no-input \
    -r "$py/requirements.txt" >"$log" 2>&1 || fail "pip install failed"
  echo "$want" >"$stamp"
fi

# ---- Node ---------------------------------------------------------------
node_dir="$here/node"
stamp="$node_dir/node_modules/.interop-lock.sha256"
want="$(sum "$node_dir/package-lock.json")"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) >"$log" 2>&1 \
    || fail "npm ci failed"
  echo "$want" >"$stamp"
fi

# ---- Chromium (headless browser test) ------------------------------------
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]] && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
    >"$log" 2>&1 || fail "apt-get install chromium failed"
fi
