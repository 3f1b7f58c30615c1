#!/usr/bin/env bash
# The access log's cost, with and without buffering, against nginx's in the
# same run: each proxy on the same nginx upstream, once without an access
# log, once writing one line per request, once gathering lines in a 64 KiB
# buffer flushed at least every second (the gateway's `[access_log]` default,
# nginx's `access_log ... buffer=64k flush=1s`).
#
#   bash bench/gateway/access_log.sh            # builds target/release/portcullis
#   BENCH_SKIP_BUILD=1 BENCH_ROUNDS=5 bash bench/gateway/access_log.sh
#
# Every proxy's stdout (the gateway's JSON lines, nginx's `access_log
# /dev/stdout`) is a pipe read by `cat >/dev/null`, as under a container
# runtime or systemd: a write to it wakes its reader. Rounds alternate the
# variants (wrk -t1 -c64, BENCH_SECONDS each after a 2 s warm-up); the
# figures are the median round's req/s and p99, and each variant's req/s
# against the same proxy without an access log in the same round.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${BENCH_BIN:-$ROOT/target/release/portcullis}"
ROUNDS="${BENCH_ROUNDS:-3}"
SECONDS_PER="${BENCH_SECONDS:-8}"
WORKDIR="${BENCH_WORKDIR:-/tmp/gwaccesslog}"
UP_PORT=18290

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y nginx wrk >/dev/null
fi
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p portcullis >&2
fi

rm -rf "$WORKDIR"; mkdir -p "$WORKDIR"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM -- "-$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# nginx_conf DIR PORT ACCESS_LOG: an nginx proxying to the
# upstream (2 workers, like the gateway's default on 2 CPUs).
nginx_conf() {
  mkdir -p "$1"
  cat >"$1/nginx.conf" <<C
daemon off; worker_processes 2; pid $1/nginx.pid; error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    access_log $3; keepalive_timeout 65; keepalive_requests 1000000;
    client_body_temp_path $1/cb; proxy_temp_path $1/p; fastcgi_temp_path $1/f;
    uwsgi_temp_path $1/u; scgi_temp_path $1/s;
    upstream echo { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
    server { listen 127.0.0.1:$2; default_type application/json;
             location / { proxy_pass http://echo; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
C
}
# start NAME URL -- CMD...: runs CMD in its own process group, its stdout
# into a pipe drained by cat, and waits for a 200 from URL.
start() {
  local name="$1" url="$2"; shift 3
  setsid bash -c 'exec "$@" | cat >/dev/null' _ "$@" </dev/null 2>"$WORKDIR/$name.stderr" &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)" = 200 ] && return 0
    sleep 0.1
  done
  echo "$name: no 200 from $url" >&2; cat "$WORKDIR/$name.stderr" >&2; exit 1
}

# The upstream: nginx, 1 worker, the fixed body at /open.
mkdir -p "$WORKDIR/up"
cat >"$WORKDIR/up/nginx.conf" <<C
daemon off; worker_processes 1; pid $WORKDIR/up/nginx.pid; error_log $WORKDIR/up/error.log warn;
events { worker_connections 4096; }
http { access_log off; keepalive_timeout 65; keepalive_requests 1000000;
       client_body_temp_path $WORKDIR/up/cb; proxy_temp_path $WORKDIR/up/p; fastcgi_temp_path $WORKDIR/up/f;
       uwsgi_temp_path $WORKDIR/up/u; scgi_temp_path $WORKDIR/up/s;
       server { listen 127.0.0.1:$UP_PORT; default_type application/json;
                location / { return 200 '{"ok":true}'; } } }
C
start upstream "http://127.0.0.1:$UP_PORT/open" -- nginx -p "$WORKDIR/up" -c "$WORKDIR/up/nginx.conf"

# Variants: label, port, how started.
LABELS=(); declare -A URL
variant_nginx() { # LABEL PORT ACCESS_LOG
  nginx_conf "$WORKDIR/$2" "$2" "$3"
  start "$1" "http://127.0.0.1:$2/open" -- nginx -p "$WORKDIR/$2" -c "$WORKDIR/$2/nginx.conf"
  LABELS+=("$1"); URL[$1]="http://127.0.0.1:$2/open"
}
# shellcheck source=config.sh
. "$HERE/config.sh"
# Only /open is measured: the API-key consumer's digest is a placeholder.
API_DIGEST="sha256:$(printf '0%.0s' $(seq 1 64))"
variant_gateway() { # LABEL PORT LOGLEVEL [ACCESS_LOG_TABLE]
  GW_PORT="$2"; GW_ADMIN_PORT=$(( $2 + 1 ))   # read by gateway_config
  { gateway_config; printf '\n%s\n' "${4:-}"; } >"$WORKDIR/gw-$2.toml"
  start "$1" "http://127.0.0.1:$2/open" -- "$BIN" --log-format json --log "$3" gateway serve --config "$WORKDIR/gw-$2.toml"
  LABELS+=("$1"); URL[$1]="http://127.0.0.1:$2/open"
}
variant_nginx   "nginx, no access log"         18270 "off"
variant_nginx   "nginx, a write per line"      18272 "/dev/stdout"
variant_nginx   "nginx, buffer=64k flush=1s"   18274 "/dev/stdout combined buffer=64k flush=1s"
variant_gateway "gateway, no access log"       18276 warn
variant_gateway "gateway, a write per line"    18278 info "$(printf '[access_log]\nbuffer_bytes = 0')"
variant_gateway "gateway, buffer_bytes=65536"  18280 info "$(printf '[access_log]\nbuffer_bytes = 65536\nflush_ms = 1000')"

declare -A RPS P99
echo "access log: $ROUNDS rounds of wrk -t1 -c64 -d${SECONDS_PER}s per variant, stdout a pipe to cat; nproc=$(nproc); $(date -u +%FT%TZ)"
for r in $(seq 1 "$ROUNDS"); do
  for label in "${LABELS[@]}"; do
    wrk -t1 -c64 -d2s "${URL[$label]}" >/dev/null 2>&1 || true
    out="$(wrk -t1 -c64 -d"${SECONDS_PER}s" --latency "${URL[$label]}" 2>&1)"
    rps="$(printf '%s\n' "$out" | awk '/^Requests\/sec/ {printf "%.0f", $2}')"
    p99="$(printf '%s\n' "$out" | awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.2f", v}')"
    # A round without a figure (wrk failed) counts as 0 req/s, so that
    # the rounds stay paired.
    rps="${rps:-0}"; p99="${p99:-0}"
    RPS[$label]="${RPS[$label]:-} $rps"; P99[$label]="${P99[$label]:-} $p99"
    printf '  round %s  %-30s %8s req/s  p99 %6s ms\n' "$r" "$label" "$rps" "$p99"
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# ratio_rounds A B: the median of A/B over the rounds (same round each;
# with an even number of rounds, the lower middle one).
ratio_rounds() {
  paste <(tr ' ' '\n' <<<"${RPS[$1]}" | grep -v '^$') <(tr ' ' '\n' <<<"${RPS[$2]}" | grep -v '^$') |
    awk '{printf "%.3f\n", ($2 > 0 ? $1/$2 : 0)}' | sort -n | awk '{a[NR]=$1} END {printf "%s (rounds %s-%s)", a[int((NR+1)/2)], a[1], a[NR]}'
}
echo
printf '%-30s %10s %9s  %s\n' "variant" "req/s" "p99 ms" "req/s in every round"
for label in "${LABELS[@]}"; do
  printf '%-30s %10s %9s  %s\n' "$label" "$(median <<<"${RPS[$label]}")" "$(median <<<"${P99[$label]}")" "${RPS[$label]# }"
done
echo
echo "against the same proxy without an access log (median of the rounds' ratios):"
for kind in nginx gateway; do
  for what in "a write per line" "$([ $kind = nginx ] && echo 'buffer=64k flush=1s' || echo 'buffer_bytes=65536')"; do
    printf '  %-30s %s\n' "$kind, $what" "$(ratio_rounds "$kind, $what" "$kind, no access log")"
  done
done
echo "gateway against nginx, each with the same kind of access log:"
printf '  %-30s %s\n' "no access log" "$(ratio_rounds "gateway, no access log" "nginx, no access log")"
printf '  %-30s %s\n' "a write per line" "$(ratio_rounds "gateway, a write per line" "nginx, a write per line")"
printf '  %-30s %s\n' "64 KiB buffer, 1 s flush" "$(ratio_rounds "gateway, buffer_bytes=65536" "nginx, buffer=64k flush=1s")"
echo "(nginx writes its \"combined\" line, about 90 bytes here; the gateway its JSON line, about 230.)"
