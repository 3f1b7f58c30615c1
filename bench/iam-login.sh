#!/usr/bin/env bash
# Browser-login benchmark of the IAM server: password sign-ins/s (argon2id at
# the configured [passwords] parameters, default 19 MiB / 2 iterations / 1 lane),
# authorization-code redemptions/s and refresh grants/s, driven over real HTTP
# by bench/iam-login.mjs (Node's fetch) from a separate process.
#
#   bash bench/iam-login.sh            # from the repository root
#
# Baseline: Keycloak's published sizing figures (15 password logins/s and 120
# refresh-token requests/s per vCPU, keycloak.org high-availability guide,
# "Concepts for sizing CPU and memory resources"); per-CPU-second figures are
# printed so the comparison is per core. A peer server in the same run for the
# code and refresh grants is not part of this script yet.
#
# Env: BENCH_CONC=8 BENCH_SECONDS=15 BENCH_SKIP_BUILD=0 BENCH_WORKDIR=/tmp/pclogin
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN="$ROOT/target/release/portcullis"
WORKDIR="${BENCH_WORKDIR:-/tmp/pclogin}"
PORT=19700
ADMIN_PORT=19701
ADMIN_TOKEN="login-bench-admin-token-0123456789"
BASE="http://127.0.0.1:$PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
PASSWORD="bench-password-0123456789"
REDIRECT="http://127.0.0.1/callback"

rm -rf "$WORKDIR"; mkdir -p "$WORKDIR"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "building: cargo build --release -p portcullis"
  (cd "$ROOT" && cargo build --release -p portcullis >"$WORKDIR/build.log" 2>&1)
fi
command -v node >/dev/null || { echo "node is required" >&2; exit 1; }

PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; true' EXIT
PORTCULLIS_MASTER_KEY="$(openssl rand -base64 32)" PORTCULLIS_ADMIN_TOKEN="$ADMIN_TOKEN" \
  "$BIN" --log warn iam serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --issuer "$BASE" --database-url "sqlite://$WORKDIR/iam.db" >"$WORKDIR/server.log" 2>&1 &
PID=$!
for _ in $(seq 200); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.05; done
admin() { curl -sf -X POST -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' "$ADMIN$1" -d "$2"; }
admin /admin/users "{\"username\":\"bench\",\"password\":\"$PASSWORD\",\"email\":\"bench@example.com\"}" >/dev/null
admin /admin/clients "{\"client_id\":\"bench-web\",\"public\":true,\"first_party\":true,\"redirect_uris\":[\"$REDIRECT\"],\"allowed_scopes\":[\"openid\",\"profile\"],\"default_scopes\":[\"openid\"]}" >/dev/null
PHC="$(sqlite3 "$WORKDIR/iam.db" 'select password_hash from users limit 1' 2>/dev/null || true)"

echo "machine:   $(nproc) cores; $(uname -r)"
echo "server:    $BIN (pid $PID), SQLite, --log warn"
PARAMS="$(printf '%s' "$PHC" | grep -o 'm=[0-9]*,t=[0-9]*,p=[0-9]*' | head -1)"
echo "password:  argon2id ${PARAMS:-at the default [passwords] parameters (m=19456,t=2,p=1)} (from the stored hash)"
echo "note:      server CPU per phase includes its untimed preparation (the sign-in page for"
echo "           logins, the SSO code for redemptions), so per-CPU-second figures are a floor"
echo "driver:    node $(node --version) bench/iam-login.mjs, ${BENCH_CONC:-8} workers, ${BENCH_SECONDS:-15} s per phase"
echo

ticks() { awk '{print $14+$15}' "/proc/$PID/stat"; }
CLK="$(getconf CLK_TCK)"
node "$HERE/iam-login.mjs" "$BASE" bench-web "$REDIRECT" bench "$PASSWORD" | while read -r line; do
  echo "$line"
done > "$WORKDIR/results.txt" &
DRIVER=$!
# Server CPU per phase: sampled at phase boundaries by watching the results file.
T0="$(ticks)"; N=0; PREV="$T0"
while kill -0 "$DRIVER" 2>/dev/null || [ "$(wc -l <"$WORKDIR/results.txt")" -gt "$N" ]; do
  L="$(wc -l <"$WORKDIR/results.txt")"
  if [ "$L" -gt "$N" ]; then
    NOW="$(ticks)"
    echo "$(sed -n "$((N+1))p" "$WORKDIR/results.txt") server_cpu_s=$(awk "BEGIN{printf \"%.1f\", ($NOW-$PREV)/$CLK}")"
    PREV="$NOW"; N="$L"
  fi
  sleep 0.2
done | tee "$WORKDIR/summary.txt"
wait "$DRIVER" || true
echo
awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
  { per_cpu = (v["server_cpu_s"] > 0) ? v["ops"] / v["server_cpu_s"] : 0
    printf "%-17s %8.1f/s   %7.1f per server CPU-second   p50 %6s ms  p99 %6s ms  errors %s\n", v["phase"], v["ops"] / v["seconds"], per_cpu, v["p50_ms"], v["p99_ms"], v["errors"] }
  v["phase"] == "logins" { printf "  vs Keycloak (15 password logins/s per vCPU, its default hashing): %.1fx per core\n", per_cpu / 15 }
  v["phase"] == "refresh_grants" { printf "  vs Keycloak (120 refresh-token requests/s per vCPU): %.1fx per core\n", per_cpu / 120 }
' "$WORKDIR/summary.txt"
