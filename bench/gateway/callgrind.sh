#!/usr/bin/env bash
# Instructions per proxied request, counted by valgrind's callgrind: unlike
# wall-clock figures on a shared 2-core VM, the count is the same run to run
# whatever else the machine is doing. Proxies measured on the same nginx
# upstream: nginx `proxy_pass` (the baseline) and the gateway's open route
# (no auth) and API-key route.
#
#   bash bench/gateway/callgrind.sh            # builds target/release/portcullis
#   BENCH_REQUESTS=3000 BENCH_SKIP_BUILD=1 bash bench/gateway/callgrind.sh
#
# Each proxy runs under callgrind; counters are zeroed after a warm-up of
# 500 requests, then BENCH_REQUESTS keep-alive requests are sent over 8
# connections by wrk (rate-limited by valgrind itself), then the counters
# are dumped. Figure: total instructions of every process of the proxy /
# requests answered in the window (wrk counts them).
#
# Then system calls per request, counted by strace -c -f (BENCH_SYSCALLS=0
# skips them): the kernel's share, which callgrind does not count.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${BENCH_BIN:-$ROOT/target/release/portcullis}"
FLOOR="${BENCH_FLOOR_BIN:-$ROOT/target/release/examples/hyper_floor}"
FLOOR_PORT=18160
REQUESTS="${BENCH_REQUESTS:-3000}"
WORKDIR="${BENCH_WORKDIR:-/tmp/gwcallgrind}"
UP_PORT=18190; PROXY_PORT=18170; GW_PORT=18180; GW_ADMIN_PORT=18181

command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 1; }
command -v nginx >/dev/null || apt-get install -y nginx >/dev/null
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --locked -p portcullis >&2
  cargo build --release --locked -p portcullis-gateway --example hyper_floor >&2
fi

rm -rf "$WORKDIR"; mkdir -p "$WORKDIR/up" "$WORKDIR/px"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM -- "-$p" 2>/dev/null || true; done; }
trap cleanup EXIT
common() { cat <<C
daemon off; master_process off; pid $1/nginx.pid; error_log $1/error.log warn;
events { worker_connections 1024; }
C
}
http_common() { cat <<C
    access_log off; keepalive_timeout 65; keepalive_requests 1000000;
    client_body_temp_path $1/cb; proxy_temp_path $1/p; fastcgi_temp_path $1/f;
    uwsgi_temp_path $1/u; scgi_temp_path $1/s;
C
}
{ common "$WORKDIR/up"; echo "http {"; http_common "$WORKDIR/up"; cat <<C
    server { listen 127.0.0.1:$UP_PORT; default_type application/json;
             location / { return 200 '{"ok":true}'; } }
}
C
} >"$WORKDIR/up/nginx.conf"
# The baseline proxy runs as a single process (master_process off) so that
# callgrind follows all of its work.
{ common "$WORKDIR/px"; echo "http {"; http_common "$WORKDIR/px"; cat <<C
    upstream echo { server 127.0.0.1:$UP_PORT; keepalive 64; keepalive_requests 1000000; }
    server { listen 127.0.0.1:$PROXY_PORT;
             location / { proxy_pass http://echo; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
C
} >"$WORKDIR/px/nginx.conf"

. "$HERE/config.sh"
new_api_key
gateway_config >"$WORKDIR/gateway.toml"

wait_200() { for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "x-api-key: $API_KEY" "$1" || true)" = 200 ] && return 0; sleep 0.1; done
  echo "no 200 from $1" >&2; exit 1; }

setsid nginx -p "$WORKDIR/up" -c "$WORKDIR/up/nginx.conf" -e "$WORKDIR/up/error.log" </dev/null >/dev/null 2>&1 &
PIDS+=($!); wait_200 "http://127.0.0.1:$UP_PORT/open"

# measure NAME URL HEADER -- CMD...
measure() {
  local name="$1" url="$2" header="$3"; shift 4
  local out="$WORKDIR/$name.cg"
  setsid valgrind --tool=callgrind --compress-strings=no --compress-pos=no --callgrind-out-file="$out.%p" --trace-children=no "$@" \
    </dev/null >"$WORKDIR/$name.stdout" 2>"$WORKDIR/$name.stderr" &
  local pid=$!; PIDS+=("$pid")
  wait_200 "$url"
  wrk -t1 -c8 -d10s -H "$header" "$url" >/dev/null 2>&1 || true   # warm-up
  callgrind_control -z "$pid" >/dev/null
  # wrk sends at most ~this many requests in the window (valgrind is slow);
  # the exact count is read from its output.
  local secs=$(( REQUESTS / 150 + 5 ))
  local w; w="$(wrk -t1 -c8 -d${secs}s -H "$header" "$url" 2>&1)"
  callgrind_control -d "$pid" >/dev/null
  sleep 1
  local n; n="$(printf '%s\n' "$w" | awk '/requests in/ {print $1}')"
  local total=0 f ir
  # The dump made by -d ("$out.PID.1") holds exactly the window.
  for f in "$out".*.*; do
    ir="$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}' || true)"
    total=$(( total + ${ir:-0} ))
    [ "${BENCH_KEEP:-0}" = 1 ] && cp "$f" "$WORKDIR/$name.window.cg"
  done
  kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  rm -f "$out".*
  printf '%-28s %8s requests  %10s instr/request\n' "$name" "$n" "$(( total / (n > 0 ? n : 1) ))"
  echo "$name $(( total / (n > 0 ? n : 1) ))" >>"$WORKDIR/results"
}
# proxies FN GATEWAY_CONFIG: FN for nginx, the hyper floor and the gateway's open route.
proxies() {
  local fn="$1" config="$2"
  "$fn" nginx-proxy "http://127.0.0.1:$PROXY_PORT/open" "x-api-key: $API_KEY" -- \
    nginx -p "$WORKDIR/px" -c "$WORKDIR/px/nginx.conf" -e "$WORKDIR/px/error.log"
  "$fn" hyper-floor "http://127.0.0.1:$FLOOR_PORT/open" "x-api-key: $API_KEY" -- \
    "$FLOOR" "127.0.0.1:$FLOOR_PORT" "127.0.0.1:$UP_PORT" 1
  "$fn" gateway-open "http://127.0.0.1:$GW_PORT/open" "x-api-key: $API_KEY" -- \
    "$BIN" --log warn gateway serve --config "$config"
}
echo "instructions per request (callgrind), keep-alive, 8 connections:"
proxies measure "$WORKDIR/gateway.toml"
measure gateway-apikey "http://127.0.0.1:$GW_PORT/key" "x-api-key: $API_KEY" -- \
  "$BIN" --log warn gateway serve --config "$WORKDIR/gateway.toml"
awk '$1=="nginx-proxy"{b=$2} {r[$1]=$2} END {for (k in r) if (k!="nginx-proxy") printf "%-28s %.2fx nginx instructions\n", k, r[k]/b}' "$WORKDIR/results"

# System calls per request: the kernel's share, which callgrind does not see.
# Every proxy runs as one process with one event loop here (nginx with
# master_process off, the floor with 1 thread, the gateway with workers = 1),
# so epoll batching is alike; strace -c -f counts every thread's calls while
# wrk sends for 5 s. strace slows the proxies down, not what they call.
[ "${BENCH_SYSCALLS:-1}" = 1 ] || exit 0
command -v strace >/dev/null || apt-get install -y strace >/dev/null
sed 's/^admin_listen = .*/&\nworkers = 1/' "$WORKDIR/gateway.toml" >"$WORKDIR/gateway-1.toml"
syscalls() { # NAME URL HEADER -- CMD...
  local name="$1" url="$2" header="$3"; shift 4
  setsid "$@" </dev/null >"$WORKDIR/$name.sys.out" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  wait_200 "$url"
  wrk -t1 -c8 -d3s -H "$header" "$url" >/dev/null 2>&1 || true   # warm-up
  strace -c -f -o "$WORKDIR/$name.strace" -p "$pid" 2>/dev/null &
  local sp=$!
  sleep 1
  local w; w="$(wrk -t1 -c8 -d5s -H "$header" "$url" 2>&1)"
  kill -INT "$sp" 2>/dev/null; wait "$sp" 2>/dev/null || true
  kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  local n; n="$(printf '%s\n' "$w" | awk '/requests in/ {print $1}')"
  # strace -c rows: % time, seconds, usecs/call, calls, [errors,] syscall.
  awk -v name="$name" -v n="${n:-0}" '
    $1 ~ /^[0-9.]+$/ && $NF != "total" { calls[$NF] = $4; all += $4 }
    END {
      if (n == 0) { printf "%-28s no requests counted\n", name; exit }
      line = ""
      for (c in calls) if (calls[c] / n >= 0.01) line = line sprintf("  %s %.2f", c, calls[c] / n)
      printf "%-28s %6.2f per request:%s\n", name, all / n, line
    }' "$WORKDIR/$name.strace"
}
echo
echo "system calls per request (strace -c -f), keep-alive, 8 connections, one event loop each:"
proxies syscalls "$WORKDIR/gateway-1.toml"
