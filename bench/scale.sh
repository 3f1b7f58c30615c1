#!/usr/bin/env bash
# Beyond one machine: client-credentials tokens/s and introspections/s of the
# IAM server on SQLite and on PostgreSQL, one replica and two replicas on one
# PostgreSQL database (two wrk clients at once, one per replica, summed); and
# gateway throughput through a route with the local limiter against one with
# the cluster (Redis) limiter, measured in the same run.
#
#   bash bench/scale.sh          # from the repository root
#
# Needs PostgreSQL (127.0.0.1:5432, user postgres, trust) and Redis
# (127.0.0.1:6379). Everything runs on this one machine: two replicas share
# its cores with each other and with wrk, so the two-replica figure shows
# the cost of coordination through PostgreSQL, not the gain of a second machine.
#
# Env: BENCH_SECONDS=10 BENCH_CONN=32 BENCH_SKIP_BUILD=0 BENCH_WORKDIR=/tmp/pcscale
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN="${BENCH_BIN:-$ROOT/target/release/portcullis}"
WORKDIR="${BENCH_WORKDIR:-/tmp/pcscale}"
SECS="${BENCH_SECONDS:-10}"
CONN="${BENCH_CONN:-32}"
CLIENT="bench-client:bench-secret-0123456789abcdef0123456789abcdef"
DB="pcbench_scale"
PGURL="postgres://postgres@127.0.0.1:5432/$DB?max_connections=16"
PREFIX="pcbench:$$:"
MASTER="$(openssl rand -base64 32)"

command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 1; }
redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || { echo "Redis is not running at 127.0.0.1:6379"; exit 1; }
psql -h 127.0.0.1 -U postgres -d test -qc "SELECT 1" >/dev/null 2>&1 || { echo "PostgreSQL is not running at 127.0.0.1:5432"; exit 1; }
rm -rf "$WORKDIR"; mkdir -p "$WORKDIR"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "building: cargo build --release -p portcullis"
  (cd "$ROOT" && cargo build --release -p portcullis >"$WORKDIR/build.log" 2>&1)
fi
psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null

PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; true' EXIT
iam() { # port db-url
  PORTCULLIS_MASTER_KEY="$MASTER" "$BIN" --log warn iam serve --config "$HERE/iam-bench.toml" \
    --listen "127.0.0.1:$1" --admin-listen "127.0.0.1:$(($1 + 1))" --issuer "http://127.0.0.1:19810" \
    --database-url "$2" >"$WORKDIR/iam-$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 400); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return; sleep 0.05; done
  echo "IAM on $1 did not start"; cat "$WORKDIR/iam-$1.log"; exit 1
}
iam 19800 "sqlite://$WORKDIR/iam.db"
iam 19810 "$PGURL"
iam 19820 "$PGURL"

b64() { printf '%s' "$1" | base64 -w0; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
wrk_tokens() { # base path body -> WRKRESULT line
  BENCH_BASIC="$(b64 "$CLIENT")" BENCH_TOKEN_PATH="$2" BENCH_BODY="$3" \
    wrk -t1 -c"$CONN" -d2s -s "$HERE/token.lua" "$1" >/dev/null 2>&1 || true
  BENCH_BASIC="$(b64 "$CLIENT")" BENCH_TOKEN_PATH="$2" BENCH_BODY="$3" \
    wrk -t1 -c"$CONN" -d"${SECS}s" --latency -s "$HERE/token.lua" "$1" | grep WRKRESULT
}
kv() { printf '%s' "$2" | tr ' ' '\n' | grep "^$1=" | cut -d= -f2; }
row() { printf '%-44s %10s %9s %9s %8s\n' "$1" "$(kv rps "$2")" "$(kv lat_p50_ms "$2")" "$(kv lat_p99_ms "$2")" "$(kv non2xx "$2")"; }
two() { # path body: both PostgreSQL replicas at once, summed
  wrk_tokens http://127.0.0.1:19810 "$1" "$2" >"$WORKDIR/a" & local a=$!
  wrk_tokens http://127.0.0.1:19820 "$1" "$2" >"$WORKDIR/b" & local b=$!
  wait $a $b
  python3 - "$(cat "$WORKDIR/a")" "$(cat "$WORKDIR/b")" <<'PY'
import sys
def kv(line):
    return dict(p.split("=", 1) for p in line.split()[1:] if "=" in p)
a, b = kv(sys.argv[1]), kv(sys.argv[2])
print("WRKRESULT rps=%.0f lat_p50_ms=%s/%s lat_p99_ms=%s/%s non2xx=%d" % (
    float(a["rps"]) + float(b["rps"]), a["lat_p50_ms"], b["lat_p50_ms"],
    a["lat_p99_ms"], b["lat_p99_ms"], int(a["non2xx"]) + int(b["non2xx"])))
PY
}

echo "machine:   $(nproc) cores; $(uname -r)"
echo "servers:   $BIN, ES256, --log warn; SQLite file / PostgreSQL $(psql -h 127.0.0.1 -U postgres -d test -tAc 'SHOW server_version') (max_connections=16 per replica)"
echo "load:      wrk -t1 -c$CONN -d${SECS}s --latency per server, 2 s warm-up"
echo
CC="grant_type=client_credentials"
# Each back-end introspects a token it issued (their signing keys differ).
INTRO_S="token=$(curl -sf -u "$CLIENT" -d "$CC" http://127.0.0.1:19800/oauth2/token | json "['access_token']")"
INTRO="token=$(curl -sf -u "$CLIENT" -d "$CC" http://127.0.0.1:19810/oauth2/token | json "['access_token']")"
printf '%-44s %10s %9s %9s %8s\n' "" "req/s" "p50 ms" "p99 ms" "non-2xx"
S_CC="$(wrk_tokens http://127.0.0.1:19800 /oauth2/token "$CC")";     row "tokens, SQLite, 1 replica" "$S_CC"
P_CC="$(wrk_tokens http://127.0.0.1:19810 /oauth2/token "$CC")";     row "tokens, PostgreSQL, 1 replica" "$P_CC"
P2_CC="$(two /oauth2/token "$CC")";                                  row "tokens, PostgreSQL, 2 replicas (sum)" "$P2_CC"
S_IN="$(wrk_tokens http://127.0.0.1:19800 /oauth2/introspect "$INTRO_S")"; row "introspections, SQLite, 1 replica" "$S_IN"
P_IN="$(wrk_tokens http://127.0.0.1:19810 /oauth2/introspect "$INTRO")"; row "introspections, PostgreSQL, 1 replica" "$P_IN"
P2_IN="$(two /oauth2/introspect "$INTRO")";                              row "introspections, PostgreSQL, 2 replicas (sum)" "$P2_IN"

# Gateway: the same anonymous route to the IAM server's /healthz, limited
# locally or through Redis (limits far above the load: every request is admitted).
cat >"$WORKDIR/gateway.toml" <<TOML
listen = "127.0.0.1:19830"
admin_listen = "127.0.0.1:19831"
signing_key_file = "$WORKDIR/gw-key.pem"
[redis]
url = "redis://127.0.0.1:6379/0"
key_prefix = "$PREFIX"
[[upstreams]]
name = "iam"
targets = ["127.0.0.1:19800"]
[[routes]]
name = "local"
path_prefix = "/local"
strip_prefix = true
upstream = "iam"
auth = ["anonymous"]
rate_limit = { per_second = 1000000, burst = 1000000, key = "client_ip" }
[[routes]]
name = "cluster"
path_prefix = "/cluster"
strip_prefix = true
upstream = "iam"
auth = ["anonymous"]
rate_limit = { per_second = 1000000, burst = 1000000, key = "client_ip", scope = "cluster", lease = 100 }
[[routes]]
name = "cluster1"
path_prefix = "/exact"
strip_prefix = true
upstream = "iam"
auth = ["anonymous"]
rate_limit = { per_second = 1000000, burst = 1000000, key = "client_ip", scope = "cluster", lease = 1 }
TOML
"$BIN" --log warn gateway serve --config "$WORKDIR/gateway.toml" >"$WORKDIR/gateway.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 200); do curl -sf http://127.0.0.1:19830/local/healthz >/dev/null && break; sleep 0.05; done
gw() { wrk -t1 -c"$CONN" -d2s "http://127.0.0.1:19830$1" >/dev/null 2>&1 || true
       wrk -t1 -c"$CONN" -d"${SECS}s" --latency "http://127.0.0.1:19830$1" \
       | awk '/Requests\/sec/ {r=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx/ {n=$5} END {printf "WRKRESULT rps=%s lat_p50_ms=%s lat_p99_ms=%s non2xx=%d\n", r, p50, p99, n}'; }
echo
G_L="$(gw /local/healthz)";   row "gateway, local limiter" "$G_L"
G_C="$(gw /cluster/healthz)"; row "gateway, Redis limiter (lease 100)" "$G_C"
G_1="$(gw /exact/healthz)";   row "gateway, Redis limiter (lease 1: Redis per request)" "$G_1"
python3 - "$(kv rps "$S_CC")" "$(kv rps "$P_CC")" "$(kv rps "$P2_CC")" "$(kv rps "$S_IN")" "$(kv rps "$P_IN")" "$(kv rps "$P2_IN")" "$(kv rps "$G_L")" "$(kv rps "$G_C")" "$(kv rps "$G_1")" <<'PY'
import sys
s_cc, p_cc, p2_cc, s_in, p_in, p2_in, g_l, g_c, g_1 = map(float, sys.argv[1:])
print()
print(f"tokens:          PostgreSQL / SQLite {p_cc / s_cc:.2f}x; 2 replicas / 1 {p2_cc / p_cc:.2f}x")
print(f"introspections:  PostgreSQL / SQLite {p_in / s_in:.2f}x; 2 replicas / 1 {p2_in / p_in:.2f}x")
print(f"gateway:         Redis limiter / local {g_c / g_l:.2f}x (lease 100), {g_1 / g_l:.2f}x (lease 1)")
PY
