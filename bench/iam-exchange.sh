#!/usr/bin/env bash
# Token-exchange throughput (RFC 8693) of the IAM server, against its own
# client-credentials issuance measured in the same run on the same server:
# an exchange verifies the subject token (ES256), checks it is not revoked
# and its holder is enabled, applies the rule, and signs a new token, so its
# cost relative to a plain issuance is the figure that matters.
#
#   bash bench/iam-exchange.sh       # from the repository root
#
# Env: BENCH_SECONDS=15 BENCH_CONN=32 BENCH_SKIP_BUILD=0 BENCH_WORKDIR=/tmp/pcexchange
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN="$ROOT/target/release/portcullis"
WORKDIR="${BENCH_WORKDIR:-/tmp/pcexchange}"
SECS="${BENCH_SECONDS:-15}"
CONN="${BENCH_CONN:-32}"
PORT=19760
BASE="http://127.0.0.1:$PORT"
FRONTEND="frontend:bench-secret-frontend-0123456789abcdef01234567"
ORDERS="orders:bench-secret-orders-0123456789abcdef0123456789a"

command -v wrk >/dev/null || { echo "installing wrk (apt)..."; apt-get install -y -qq wrk >/dev/null; }
rm -rf "$WORKDIR"; mkdir -p "$WORKDIR"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "building: cargo build --release -p portcullis"
  (cd "$ROOT" && cargo build --release -p portcullis >"$WORKDIR/build.log" 2>&1)
fi
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; true' EXIT
PORTCULLIS_MASTER_KEY="$(openssl rand -base64 32)" \
  "$BIN" --log warn iam serve --config "$HERE/iam-exchange.toml" --listen "127.0.0.1:$PORT" \
  --admin-listen 127.0.0.1:19761 --issuer "$BASE" --database-url "sqlite://$WORKDIR/iam.db" \
  >"$WORKDIR/server.log" 2>&1 &
PID=$!
for _ in $(seq 200); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.05; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
SUBJECT="$(curl -sf -u "$FRONTEND" -d grant_type=client_credentials "$BASE/oauth2/token" | json "['access_token']")"
EXCHANGE_BODY="grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=$SUBJECT&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&audience=inventory-api"
ONE="$(curl -sf -u "$ORDERS" --data "$EXCHANGE_BODY" "$BASE/oauth2/token")"
CLAIMS="$(printf '%s' "$ONE" | json "['access_token']" | cut -d. -f2 | python3 -c "import base64,sys; s=sys.stdin.read().strip(); print(base64.urlsafe_b64decode(s+'='*(-len(s)%4)).decode())")"
echo "machine:   $(nproc) cores; $(uname -r)"
echo "server:    $BIN (pid $PID), SQLite, ES256, --log warn"
echo "check:     one exchange -> $CLAIMS"
echo "load:      wrk -t1 -c$CONN -d${SECS}s --latency from the same machine, 3 s warm-up each"
echo

b64() { printf '%s' "$1" | base64 -w0; }
run() { # label basic body
  BENCH_BASIC="$(b64 "$2")" BENCH_BODY="$3" wrk -t1 -c"$CONN" -d3s -s "$HERE/token.lua" "$BASE" >/dev/null 2>&1 || true
  BENCH_BASIC="$(b64 "$2")" BENCH_BODY="$3" wrk -t1 -c"$CONN" -d"${SECS}s" --latency -s "$HERE/token.lua" "$BASE" \
    | grep WRKRESULT | sed "s/^WRKRESULT/$1/"
}
CC="$(run cc "$FRONTEND" "grant_type=client_credentials")"
EX="$(run exchange "$ORDERS" "$EXCHANGE_BODY")"
kv() { printf '%s' "$2" | tr ' ' '\n' | grep "^$1=" | cut -d= -f2; }
printf '%-24s %10s %9s %9s %8s\n' "" "tokens/s" "p50 ms" "p99 ms" "non-2xx"
for row in "client credentials|$CC" "token exchange|$EX"; do
  label="${row%%|*}"; r="${row#*|}"
  printf '%-24s %10s %9s %9s %8s\n' "$label" "$(kv rps "$r")" "$(kv lat_p50_ms "$r")" "$(kv lat_p99_ms "$r")" "$(kv non2xx "$r")"
done
python3 - "$(kv rps "$CC")" "$(kv rps "$EX")" <<'PY'
import sys
cc, ex = float(sys.argv[1]), float(sys.argv[2])
print(f"\nexchange / client-credentials throughput: {ex / cc:.2f}x")
PY
