#!/usr/bin/env bash
# Browser-login benchmark of the IAM server against panva's oidc-provider in the
# same run: password sign-ins/s (argon2id at the configured [passwords]
# parameters, default 19 MiB / 2 iterations / 1 lane), authorization-code
# redemptions/s (code + PKCE S256, public client, openid scope) and refresh
# grants/s (rotated), driven over real HTTP by bench/iam-login.mjs (Node's
# fetch) from a separate process, with the same concurrency and duration for
# both servers.
#
#   bash bench/iam-login.sh            # from the repository root
#
# Peer: oidc-provider at the version pinned in bench/peer/oidc-provider (the
# token benchmark's peer), set up by bench/peer/oidc-provider/login-server.mjs:
# RS256 ID tokens, ES256 JWT access tokens (resource indicator), refresh tokens
# rotated on every use, a minimal interaction handler (sign-in form; consent
# skipped for the first-party client, as Portcullis does), in-memory storage
# (its default adapter; Portcullis uses SQLite). oidc-provider does no password
# hashing: its sign-ins verify argon2id with the pinned `argon2` npm package
# against Portcullis' own stored hash of the same password, so the parameters
# are the same by construction.
#
# Phases run one server at a time, alternating (logins: Portcullis then
# oidc-provider, then code redemptions, then refresh grants), so that drift in
# the machine's load hits both. Each server's CPU time over each phase is read
# from /proc/PID/stat (all threads), so per-CPU-second figures compare the two
# per core. Keycloak's published sizing figures (15 password logins/s and 120
# refresh-token requests/s per vCPU, keycloak.org high-availability guide,
# "Concepts for sizing CPU and memory resources") are kept as a second baseline.
#
# Env: BENCH_CONC=8 BENCH_SECONDS=15 BENCH_SKIP_BUILD=0 BENCH_WORKDIR=/tmp/pclogin
#      BENCH_PEER=1 (0: Portcullis only)  BENCH_PEER_NODE=node (Node.js binary for
#      the peer; oidc-provider 9 asks for Node 22 LTS+, it warns on Node 20 but works)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN="$ROOT/target/release/portcullis"
PEER_DIR="$HERE/peer/oidc-provider"
WORKDIR="${BENCH_WORKDIR:-/tmp/pclogin}"
WITH_PEER="${BENCH_PEER:-1}"
PEER_NODE="${BENCH_PEER_NODE:-node}"
CONC="${BENCH_CONC:-8}"
SECONDS_PER_PHASE="${BENCH_SECONDS:-15}"
PORT=19700
ADMIN_PORT=19701
PEER_PORT=19710
ADMIN_TOKEN="login-bench-admin-token-0123456789"
BASE="http://127.0.0.1:$PORT"
ADMIN="http://127.0.0.1:$ADMIN_PORT"
PEER_BASE="http://127.0.0.1:$PEER_PORT"
PASSWORD="bench-password-0123456789"
REDIRECT="http://127.0.0.1/callback"

rm -rf "$WORKDIR"; mkdir -p "$WORKDIR"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "building: cargo build --release -p portcullis"
  if ! (cd "$ROOT" && nice -n 10 cargo build --release -p portcullis >"$WORKDIR/build.log" 2>&1); then
    tail -30 "$WORKDIR/build.log" >&2; echo "release build failed" >&2; exit 1
  fi
fi
[ -x "$BIN" ] || { echo "$BIN not found (build it, or unset BENCH_SKIP_BUILD)" >&2; exit 1; }
command -v node >/dev/null || { echo "node is required" >&2; exit 1; }
command -v sqlite3 >/dev/null || { echo "sqlite3 is required (the stored password hash)" >&2; exit 1; }
if [ "$WITH_PEER" = 1 ]; then
  PEER_NODE="$(command -v "$PEER_NODE")" || { echo "BENCH_PEER_NODE: no such node binary" >&2; exit 1; }
  # Install the peer's pinned dependencies (package-lock.json) when a version differs.
  need_ci=0
  for dep in oidc-provider argon2; do
    want="$(node -p "require('$PEER_DIR/package.json').dependencies['$dep']")"
    have="$(node -p "try { require('$PEER_DIR/node_modules/$dep/package.json').version } catch { '' }" 2>/dev/null || true)"
    [ "$want" = "$have" ] || need_ci=1
  done
  if [ "$need_ci" = 1 ]; then
    echo "installing peer dependencies (npm ci in bench/peer/oidc-provider)..."
    (cd "$PEER_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi

PID=""
PEER_PID=""
cleanup() {
  for p in $PID $PEER_PID; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
PORTCULLIS_MASTER_KEY="$(openssl rand -base64 32)" PORTCULLIS_ADMIN_TOKEN="$ADMIN_TOKEN" \
  "$BIN" --log warn iam serve --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" \
  --issuer "$BASE" --database-url "sqlite://$WORKDIR/iam.db" >"$WORKDIR/server.log" 2>&1 &
PID=$!
for _ in $(seq 200); do curl -sf "$BASE/readyz" >/dev/null && break; sleep 0.05; done
admin() { curl -sf -X POST -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' "$ADMIN$1" -d "$2"; }
admin /admin/users "{\"username\":\"bench\",\"password\":\"$PASSWORD\",\"email\":\"bench@example.com\"}" >/dev/null
admin /admin/clients "{\"client_id\":\"bench-web\",\"public\":true,\"first_party\":true,\"redirect_uris\":[\"$REDIRECT\"],\"allowed_scopes\":[\"openid\",\"profile\"],\"default_scopes\":[\"openid\"]}" >/dev/null
PHC="$(sqlite3 "$WORKDIR/iam.db" 'select password_hash from users limit 1' 2>/dev/null || true)"
PARAMS="$(printf '%s' "$PHC" | grep -o 'm=[0-9]*,t=[0-9]*,p=[0-9]*' | head -1)"

if [ "$WITH_PEER" = 1 ]; then
  case "$PHC" in
    '$argon2id$'*) ;;
    *) echo "no argon2id hash found in $WORKDIR/iam.db (got '$PHC')" >&2; exit 1 ;;
  esac
  NODE_ENV=production PEER_PORT="$PEER_PORT" PEER_REDIRECT_URI="$REDIRECT" PEER_USERNAME=bench \
    PEER_PASSWORD="$PASSWORD" PEER_PASSWORD_HASH="$PHC" \
    "$PEER_NODE" "$PEER_DIR/login-server.mjs" >"$WORKDIR/peer.log" 2>&1 &
  PEER_PID=$!
  for _ in $(seq 400); do curl -sf "$PEER_BASE/.well-known/openid-configuration" >/dev/null && break; sleep 0.05; done
  curl -sf "$PEER_BASE/.well-known/openid-configuration" >/dev/null \
    || { echo "oidc-provider did not start:" >&2; cat "$WORKDIR/peer.log" >&2; exit 1; }
fi

echo "date:      $(date -u '+%Y-%m-%dT%H:%M:%SZ'); git $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$([ -z "$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] || echo ' + uncommitted changes under crates/ (built as they are)')"
echo "machine:   $(nproc) cores; $(uname -r)"
echo "server:    $BIN (pid $PID), SQLite, --log warn"
if [ "$WITH_PEER" = 1 ]; then
  echo "peer:      oidc-provider $(node -p "require('$PEER_DIR/node_modules/oidc-provider/package.json').version") (pid $PEER_PID) on node $("$PEER_NODE" --version), bench/peer/oidc-provider/login-server.mjs,"
  echo "           one Node process, in-memory storage (its default adapter), NODE_ENV=production"
fi
echo "password:  argon2id ${PARAMS:-at the default [passwords] parameters (m=19456,t=2,p=1)} (from the stored hash)"
if [ "$WITH_PEER" = 1 ]; then
  echo "           oidc-provider verifies it with argon2 $(node -p "require('$PEER_DIR/node_modules/argon2/package.json').version") (npm) against that same stored hash"
fi
echo "driver:    node $(node --version) bench/iam-login.mjs, $CONC workers, $SECONDS_PER_PHASE s per phase and server;"
echo "           phases alternate between the servers, one server loaded at a time"
echo "note:      server CPU per phase includes its untimed preparation (the sign-in page for"
echo "           logins, the SSO code for redemptions), so per-CPU-second figures are a floor;"
echo "           oidc-provider's sign-in is two requests (the post, then the resumed /auth"
echo "           that returns the code), Portcullis' one; both are timed to the code"
echo

export BENCH_CONC="$CONC" BENCH_SECONDS="$SECONDS_PER_PHASE" BENCH_CLK_TCK="$(getconf CLK_TCK)"
drive() { # KIND BASE PID PHASES
  BENCH_KIND="$1" BENCH_SERVER_PID="$3" BENCH_PHASES="$4" BENCH_CHECK="$([ "$4" = logins ] && echo 1 || echo 0)" \
    node "$HERE/iam-login.mjs" "$2" bench-web "$REDIRECT" bench "$PASSWORD"
}
{
  for ph in logins code_redemptions refresh_grants; do
    drive portcullis "$BASE" "$PID" "$ph"
    if [ "$WITH_PEER" = 1 ]; then drive oidc-provider "$PEER_BASE" "$PEER_PID" "$ph"; fi
  done
} | tee "$WORKDIR/results.txt"
for p in $PID $PEER_PID; do
  kill -0 "$p" 2>/dev/null || { echo "server pid $p died during the run" >&2; exit 1; }
done
echo

awk -v conc="$CONC" '
  function val(k) { return (k in v) ? v[k] : "" }
  /^RESULT / {
    delete v
    for (i = 2; i <= NF; i++) { eq = index($i, "="); v[substr($i, 1, eq - 1)] = substr($i, eq + 1) }
    s = v["server"]; p = v["phase"]
    if (!(p in seen)) { seen[p] = 1; order[++np] = p }
    rate[s, p] = v["per_s"]
    wall[s, p] = v["ops"] / v["seconds"]
    cpu[s, p] = v["server_cpu_s"]
    percpu[s, p] = (v["server_cpu_s"] > 0) ? v["ops"] / v["server_cpu_s"] : 0
    p50[s, p] = v["p50_ms"]; p99[s, p] = v["p99_ms"]; err[s, p] = v["errors"]; oth[s, p] = v["other_cores"]
    have[s, p] = 1
  }
  END {
    printf "%-17s %-13s %9s %9s %8s %10s %8s %8s %6s %6s\n", "phase", "server", "timed/s", "wall/s", "CPU-s", "per CPU-s", "p50 ms", "p99 ms", "errors", "other"
    for (i = 1; i <= np; i++) {
      p = order[i]
      for (j = 1; j <= 2; j++) {
        s = (j == 1) ? "portcullis" : "oidc-provider"
        if (!have[s, p]) continue
        printf "%-17s %-13s %9.1f %9.1f %8.2f %10.1f %8s %8s %6s %6s\n", p, s, rate[s, p], wall[s, p], cpu[s, p], percpu[s, p], p50[s, p], p99[s, p], err[s, p], oth[s, p]
      }
      if (have["portcullis", p] && have["oidc-provider", p] && rate["oidc-provider", p] > 0 && percpu["oidc-provider", p] > 0)
        printf "  ratio Portcullis / oidc-provider: %.2fx timed ops/s, %.2fx per server CPU-second\n", rate["portcullis", p] / rate["oidc-provider", p], percpu["portcullis", p] / percpu["oidc-provider", p]
      if (p == "logins" && have["portcullis", p])
        printf "  vs Keycloak (15 password logins/s per vCPU, its default hashing): %.1fx per core\n", percpu["portcullis", p] / 15
      if (p == "refresh_grants" && have["portcullis", p])
        printf "  vs Keycloak (120 refresh-token requests/s per vCPU): %.1fx per core\n", percpu["portcullis", p] / 120
    }
    print ""
    print "  timed/s: ops / (time the workers spent in the timed operation / " conc " workers);"
    print "  wall/s: ops / phase wall time (includes the untimed preparation); CPU-s: the server"
    print "  process over the phase (/proc/PID/stat, all threads); per CPU-s: ops / CPU-s;"
    print "  other: cores used by everything but that server and the driver during the phase"
    print "  (/proc/stat): above ~0.1 the machine was shared and that row is noisy."
  }
' "$WORKDIR/results.txt"
