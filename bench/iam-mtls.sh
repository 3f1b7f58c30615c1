#!/usr/bin/env bash
# Token issuance with mutual TLS: client-credentials tokens/s with
# tls_client_auth (RFC 8705, certificate-bound tokens) against
# client_secret_basic over the same TLS listener and over plain HTTP, in
# the same run.
#
#   bash bench/iam-mtls.sh            # from the repository root
#
# wrk cannot present client certificates, so the load comes from
# crates/portcullis-iam/examples/token_load.rs (reqwest + rustls, closed
# loop, --conns workers), run as a separate process. Certificates come from
# a throw-away internal CA (`portcullis ca init/issue`). Two servers run at
# once from target/release/portcullis: one plain, one with [tls]
# (client_auth = optional, so the same listener serves secret and
# certificate clients). Modes, each measured with keep-alive connections
# and again with a new connection per request (a full TLS handshake each):
#   plain   client_secret_basic over HTTP
#   tls     client_secret_basic over TLS (no client certificate)
#   mtls    tls_client_auth over TLS (client certificate, bound token)
# Servers are killed on exit. Load goes to 127.0.0.1 only.
#
# Settings (env): BENCH_CONNS=32 BENCH_DURATION=10 BENCH_WARMUP=2
#   BENCH_SKIP_BUILD=0 (1: use existing release binaries)
#   BENCH_BIN, BENCH_LOAD: other paths of the two binaries
#   BENCH_WORKDIR=/tmp/pcbench-mtls (wiped at start)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
BIN="${BENCH_BIN:-$ROOT/target/release/portcullis}"
LOAD="${BENCH_LOAD:-$ROOT/target/release/examples/token_load}"
CONNS="${BENCH_CONNS:-32}"
DURATION="${BENCH_DURATION:-10}"
WARMUP="${BENCH_WARMUP:-2}"
WORKDIR="${BENCH_WORKDIR:-/tmp/pcbench-mtls}"
PLAIN_PORT=19300
TLS_PORT=19310
SECRET="bench-secret-0123456789abcdef0123456789abcdef"
MASTER_KEY="$(head -c 32 /dev/urandom | base64 -w0)"

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM
say() { printf '%s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p portcullis -p portcullis-iam --example token_load)
fi
[ -x "$BIN" ] && [ -x "$LOAD" ] || die "release binaries missing (unset BENCH_SKIP_BUILD)"

rm -rf "$WORKDIR" && mkdir -p "$WORKDIR"
cd "$WORKDIR"
export PORTCULLIS_MASTER_KEY="$MASTER_KEY"
"$BIN" ca init --dir ca --trust-domain bench.portcullis >/dev/null
"$BIN" ca issue --dir ca --service iam --dns localhost,127.0.0.1 --out-dir server >/dev/null
"$BIN" ca issue --dir ca --service billing --out-dir billing >/dev/null

common() { # port
  cat <<EOF
mode = "production"
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$(($1 + 1))"
database_url = "sqlite://$WORKDIR/db-$1.sqlite"
admin_token = "bench-admin-token-0123456789"

[[clients]]
id = "secret-client"
secret = "$SECRET"
allowed_scopes = ["read"]
default_scopes = ["read"]
allowed_audiences = ["bench-api"]
default_audiences = ["bench-api"]

[[clients]]
id = "billing"
token_endpoint_auth_method = "tls_client_auth"
tls_client_auth_san_uri = "spiffe://bench.portcullis/billing"
allowed_scopes = ["read"]
default_scopes = ["read"]
allowed_audiences = ["bench-api"]
default_audiences = ["bench-api"]
EOF
}
common "$PLAIN_PORT" > plain.toml
{ common "$TLS_PORT"; cat <<EOF

[tls]
cert = "$WORKDIR/server/cert.pem"
key = "$WORKDIR/server/key.pem"
client_ca = "$WORKDIR/ca/root.pem"
crls = ["$WORKDIR/ca/crl.pem"]
client_auth = "optional"
EOF
} > tls.toml

start() { # name config url
  "$BIN" --log warn iam serve --config "$2" >"$1.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 400); do
    if curl -fsk --cacert "$WORKDIR/ca/root.pem" -o /dev/null "$3/readyz"; then return 0; fi
    sleep 0.05
  done
  die "$1 did not become ready (see $WORKDIR/$1.log)"
}
start plain plain.toml "http://127.0.0.1:$PLAIN_PORT"
start tls tls.toml "https://127.0.0.1:$TLS_PORT"

run() { # label url args...
  local label="$1" url="$2"; shift 2
  local out
  out="$("$LOAD" --url "$url/oauth2/token" --conns "$CONNS" --duration "$DURATION" --warmup "$WARMUP" "$@")"
  printf '%-34s %s\n' "$label" "$out" >&2
  printf '%s\n' "$out" | sed -n 's/.*RATE=\([0-9]*\).*/\1/p'
}

say "Portcullis $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, $CONNS connections, ${DURATION}s each"
PLAIN_URL="http://127.0.0.1:$PLAIN_PORT"
TLS_URL="https://127.0.0.1:$TLS_PORT"
TLS_ARGS=(--root "$WORKDIR/ca/root.pem")
CERT_ARGS=(--cert "$WORKDIR/billing/cert.pem" --key "$WORKDIR/billing/key.pem")
for conn in keepalive new; do
  extra=()
  [ "$conn" = new ] && extra=(--new-connections)
  plain=$(run "plain  basic        ($conn)" "$PLAIN_URL" --client-id secret-client --secret "$SECRET" "${extra[@]}")
  tls=$(run "tls    basic        ($conn)" "$TLS_URL" "${TLS_ARGS[@]}" --client-id secret-client --secret "$SECRET" "${extra[@]}")
  mtls=$(run "mtls   tls_client_auth ($conn)" "$TLS_URL" "${TLS_ARGS[@]}" "${CERT_ARGS[@]}" --client-id billing "${extra[@]}")
  awk -v c="$conn" -v p="$plain" -v t="$tls" -v m="$mtls" 'BEGIN {
    printf "%-9s plain %6d/s   tls %6d/s (%.2fx plain)   mtls %6d/s (%.2fx plain, %.2fx tls)\n",
      c, p, t, t / p, m, m / p, m / t }'
done
