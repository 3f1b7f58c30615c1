#!/usr/bin/env bash
# Gateway benchmark: the Portcullis gateway vs nginx as a plain reverse proxy,
# both in front of the same tiny upstream (nginx returning a fixed JSON body).
#
#   bash bench/gateway/run.sh            # from anywhere; needs root for apt
#
# What it does, in order:
#   1. installs what is missing (Debian's nginx and wrk; oha from crates.io
#      with `cargo install oha --locked` for the rate-limited runs), builds
#      target/release/portcullis (cargo build --release -p portcullis);
#   2. writes every config into $BENCH_WORKDIR (default /tmp/gwbench, wiped):
#        upstream     nginx, 1 worker, 127.0.0.1:18090: return 200 '{"ok":true}'
#        nginx proxy  nginx, 2 workers, 127.0.0.1:18070: proxy_pass to the
#                     upstream with keepalive 64 (HTTP/1.1, Connection "")
#        IAM          portcullis iam serve on 127.0.0.1:19600 (admin :19601)
#        gateway      portcullis gateway serve on 127.0.0.1:18080 (admin :18081)
#                     routes /open (anonymous), /key (x-api-key), /jwt (bearer
#                     JWT from the IAM), all to the same upstream
#   3. checks each path answers 200 once, and that /key without a key, /key
#      with a wrong key, /jwt without a token and /jwt with a forged token are 401;
#   3b. a vCPU stall census (bench/lib/vcpu_stalls.py): how much of the time
#      each CPU of this VM stops running a busy thread, in gaps of 1 ms or more,
#      on the idle machine; again before each round at the latency target's rate;
#   4. peak load: wrk -t1 -c64 -d10s --latency (after a 3 s warm-up with the
#      same settings) against the upstream directly, the nginx proxy and the
#      gateway's /open, /key and /jwt, in 5 interleaved rounds (variant by
#      variant, then again); each variant's figures are those of its median
#      round, and each ratio is the median of the ratios within a round (the
#      two runs compared minutes, not seconds, apart would carry the VM's
#      drift); then the gateway again with --log info (access log per
#      request) and stdout to /dev/null, one round;
#   5. peak load under oha: oha at full speed (no rate limit) against each
#      variant, in 3 interleaved rounds; oha costs about twice wrk's CPU per
#      request on the same two cores, so this peak is lower than wrk's;
#   6. fixed-rate load: oha at a fixed rate (--qps, --latency-correction) of
#      half (then a quarter) of each variant's peak under oha, and half of its
#      wrk peak (the method of runs A-I, near saturation under oha), against the
#      proxy and then against the upstream directly at the same rate; added
#      latency = proxy - direct, percentile by percentile; at the fraction the
#      target is judged at, 3 interleaved rounds and the median round's figure;
#   7. a memory soak: more unmeasured load on the gateway, its RSS after each part;
#   8. prints the tables, the targets and whether they are met, the gateway's
#      request counters, its memory after each run and anything it logged.
# Everything started here is stopped on exit (trap), whatever happens.
# Load goes to 127.0.0.1 only; every load run is bounded by -d/-z and `timeout`.
#
# Settings (env):
#   BENCH_THREADS=1 BENCH_CONNS=64 BENCH_DURATION=10 BENCH_WARMUP=3   wrk settings
#   BENCH_ROUNDS=5             interleaved rounds of the peak-load runs (median reported)
#   BENCH_RATE_DURATION=15 BENCH_RATE_WARMUP=2  oha fixed-rate runs (seconds)
#   BENCH_RATE_PEAK=oha        which peak the fixed rates are fractions of: oha (each variant's peak under
#                              oha itself, measured in BENCH_OHA_PEAK_ROUNDS interleaved rounds of oha at
#                              full speed, median) or wrk (the wrk peak above, as in runs A-I)
#   BENCH_OHA_PEAK_ROUNDS=3 BENCH_OHA_PEAK_DURATION=10  the oha peak runs (seconds; with a ${RATE_WARMUP}s warm-up)
#   BENCH_RATE_FRACTIONS="0.5 0.25"  fractions of that peak for the fixed-rate runs;
#                              the first is the one the latency target is judged at
#   BENCH_RATE_WRK_FRACTIONS=0.5  with BENCH_RATE_PEAK=oha, also these fractions of the wrk peak
#                              (the earlier method, for comparison; empty to skip)
#   BENCH_RATE_ROUNDS=3        interleaved rounds at the fraction the latency target is judged at (the
#                              first of BENCH_RATE_FRACTIONS); the added p99 judged is the median of
#                              the rounds' (each round's proxy run less the direct run right after it);
#                              the other fractions run once
#   BENCH_RATE_CONNS=64        oha connections for the fixed-rate runs
#   BENCH_RATE_THREADS=1       oha --worker-threads (1, like wrk -t1: the other core is left to the servers)
#   BENCH_LOG_INFO=1           also run the gateway with --log info, stdout to /dev/null (0 to skip)
#   BENCH_SKIP_BUILD=0         1: use the existing target/release/portcullis
#   BENCH_WORKDIR=/tmp/gwbench scratch dir (wiped at start): configs, logs, databases
#   BENCH_QUIET_WAIT_S=900     before each measured run, wait up to this long until no
#                              wrk/oha process runs and the machine is idle (< 0.15 cores
#                              busy); then go on, and flag the run
#   BENCH_RETRIES=2            a run during which other processes used >= 0.15 cores is repeated
#                              (after waiting for quiet again) up to this many times; still flagged if it stays busy
#   BENCH_SOAK_ROUNDS=2 BENCH_SOAK_S=20  after the measured runs, load the gateway for ROUNDS x 3 x S
#                              seconds more (/open, /key, /jwt) and print its VmRSS after each (0: skip)
#   BENCH_SCRAPE_S=10          scrape the gateway's /metrics this often throughout, as Prometheus
#                              would (0: never after the first scrape)
#   BENCH_OHA=oha              oha binary
#   BENCH_STALL_S=3            vCPU stall census (bench/lib/vcpu_stalls.py) this long at the start and
#                              before each round at the latency target's rate (0: skip): the share of
#                              time a busy thread pinned to each CPU did not run, in gaps of 1 ms or more
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="$ROOT/target/release/portcullis"
LUA="$HERE/report.lua"

THREADS="${BENCH_THREADS:-1}"
CONNS="${BENCH_CONNS:-64}"
DURATION="${BENCH_DURATION:-10}"
ROUNDS="${BENCH_ROUNDS:-5}"
WARMUP="${BENCH_WARMUP:-3}"
RATE_DURATION="${BENCH_RATE_DURATION:-15}"
RATE_WARMUP="${BENCH_RATE_WARMUP:-2}"
RATE_FRACTIONS="${BENCH_RATE_FRACTIONS:-0.5 0.25}"
read -r RATE_FRACTION _ <<<"$RATE_FRACTIONS"
RATE_CONNS="${BENCH_RATE_CONNS:-64}"
RATE_ROUNDS="${BENCH_RATE_ROUNDS:-3}"
RATE_PEAK="${BENCH_RATE_PEAK:-oha}"
OHA_PEAK_ROUNDS="${BENCH_OHA_PEAK_ROUNDS:-3}"
OHA_PEAK_DURATION="${BENCH_OHA_PEAK_DURATION:-10}"
RATE_WRK_FRACTIONS="${BENCH_RATE_WRK_FRACTIONS:-0.5}"
case "$RATE_PEAK" in oha|wrk) ;; *) echo "BENCH_RATE_PEAK must be oha or wrk" >&2; exit 2 ;; esac
[ "$RATE_PEAK" = wrk ] && RATE_WRK_FRACTIONS=""
RATE_THREADS="${BENCH_RATE_THREADS:-1}"
LOG_INFO="${BENCH_LOG_INFO:-1}"
SKIP_BUILD="${BENCH_SKIP_BUILD:-0}"
WORKDIR="${BENCH_WORKDIR:-/tmp/gwbench}"
QUIET_WAIT_S="${BENCH_QUIET_WAIT_S:-900}"
OHA="${BENCH_OHA:-oha}"
RETRIES="${BENCH_RETRIES:-2}"
SOAK_ROUNDS="${BENCH_SOAK_ROUNDS:-2}"
SOAK_S="${BENCH_SOAK_S:-20}"
SCRAPE_S="${BENCH_SCRAPE_S:-10}"
STALL_S="${BENCH_STALL_S:-3}"
QUIET_CORES=0.15

UP_PORT=18090
PROXY_PORT=18070
GW_PORT=18080
GW_ADMIN_PORT=18081
IAM_PORT=19600
IAM_ADMIN_PORT=19601
ADMIN_TOKEN="gwbench-admin-token-0123456789"

UP_URL="http://127.0.0.1:$UP_PORT/open"
PROXY_URL="http://127.0.0.1:$PROXY_PORT/open"
GW_BASE="http://127.0.0.1:$GW_PORT"

# ---------------------------------------------------------------- helpers
say() { printf '%s\n' "$*"; }
hr() { say "------------------------------------------------------------------------------"; }
die() { say "ERROR: $*" >&2; exit 1; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
kv() { # KEY LINE -> value of KEY=value in LINE
  printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1
}
calc() { awk "BEGIN { $1 }"; }
CLK_TCK="$(getconf CLK_TCK)"

# ---------------------------------------------------------------- processes
# Every server is started with setsid: its pid is its process group, and the
# group (nginx master + workers) is what is stopped. Nothing else is touched.
SERVER_PIDS=()
LOAD_JOB=""
cleanup() {
  local pid
  if [ -n "$LOAD_JOB" ]; then
    pkill -TERM -P "$LOAD_JOB" 2>/dev/null || true
    kill -TERM "$LOAD_JOB" 2>/dev/null || true
  fi
  for pid in "${SERVER_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${SERVER_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  SERVER_PIDS=()
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM HUP

SPAWNED=""
spawn() { # NAME STDOUT -- CMD... ; sets SPAWNED to the pid
  local name="$1" out="$2"; shift 3
  setsid "$@" >"$out" 2>"$WORKDIR/$name.stderr" </dev/null &
  SPAWNED=$!
  SERVER_PIDS+=("$SPAWNED")
}

stop_server() { # PID
  local pid="$1" keep=() p
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  for p in "${SERVER_PIDS[@]:-}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  SERVER_PIDS=("${keep[@]:-}")
}

wait_http() { # NAME PID URL -> waits (<= 30 s) for a 200
  local name="$1" pid="$2" url="$3" i code
  for i in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$WORKDIR/$name.stderr" >&2 || true; die "$name exited during start-up"; }
    code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$url" 2>/dev/null || true)"
    [ "$code" = "200" ] && return 0
    sleep 0.1
  done
  tail -20 "$WORKDIR/$name.stderr" >&2 || true
  die "$name: no 200 from $url within 30 s"
}

group_pids() { # PID -> the pid and its direct children (nginx master + workers)
  echo "$1"
  ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
}
group_ticks() { # PID -> utime+stime of the process and its live children, clock ticks
  local t=0 p v
  for p in $(group_pids "$1"); do
    v="$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)"
    t=$(( t + v ))
  done
  echo "$t"
}
machine_busy_ticks() { # -> user+nice+system ticks over all CPUs since boot
  # irq/softirq time is left out: loopback packet processing is charged
  # there, not to any process, and would read as "other work".
  awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat
}
rss_kb() { awk '$1=="VmRSS:" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
hwm_kb() { awk '$1=="VmHWM:" {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# ---------------------------------------------------------------- quiet machine
busy_cores_1s() {
  local b0 b1
  b0="$(machine_busy_ticks)"; sleep 1; b1="$(machine_busy_ticks)"
  calc "printf \"%.2f\", ($b1 - $b0) / $CLK_TCK"
}
load_gen_running() { pgrep -x wrk >/dev/null 2>&1 || pgrep -x oha >/dev/null 2>&1; }
QUIET_FLAG=""
wait_quiet() { # sets QUIET_FLAG to "" (idle) or a warning
  local t0 busy waited=0
  t0=$(date +%s)
  while :; do
    busy="$(busy_cores_1s)"
    if ! load_gen_running && calc "exit !($busy < $QUIET_CORES)"; then
      QUIET_FLAG=""
      [ "$waited" = 1 ] && say "  machine idle again (${busy} cores busy) after $(( $(date +%s) - t0 )) s"
      return 0
    fi
    if [ $(( $(date +%s) - t0 )) -ge "$QUIET_WAIT_S" ]; then
      QUIET_FLAG="busy"
      say "  WARNING: machine still busy after ${QUIET_WAIT_S}s (${busy} cores; load generator running: $(load_gen_running && echo yes || echo no)); measuring anyway, figures flagged"
      ps -eo pcpu,comm --sort=-pcpu | sed -n 2,4p | sed 's/^/    busy: /'
      return 0
    fi
    if [ "$waited" = 0 ]; then
      say "  machine busy (${busy} cores; other load generator running: $(load_gen_running && echo yes || echo no)); waiting up to ${QUIET_WAIT_S}s..."
      ps -eo pcpu,comm --sort=-pcpu | sed -n 2,4p | sed 's/^/    busy: /'
      waited=1
    fi
    sleep 4
  done
}

# ---------------------------------------------------------------- vCPU stalls
# The census loads both cores for STALL_S seconds: it runs when the machine
# is quiet, never during a measured run. Sets STALLS to its summary
# ("ge1ms_pct=a,b ge1ms_n=c,d max_ms=e,f"; "" if it failed). Called only
# with STALL_S > 0.
STALLS=""
stall_census() { # INDENT
  STALLS=""
  wait_quiet
  local out
  out="$(python3 "$HERE/../lib/vcpu_stalls.py" "$STALL_S")" || { say "$1(vCPU stall census failed)"; return 0; }
  STALLS="$(printf '%s\n' "$out" | head -1 | tr ' ' '\n' | grep -E '^(ge1ms_pct|ge1ms_n|max_ms)=' | tr '\n' ' ')"
  printf '%s\n' "$out" | sed -e 1d -e "s/^ */$1/"
}

# ---------------------------------------------------------------- setup
say "== Portcullis gateway benchmark (bench/gateway/run.sh) =="
say "date:      $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "git:       $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$([ -z "$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] || echo ' + uncommitted changes under crates/, Cargo.toml or Cargo.lock (built as they are)')"
say "nproc:     $(nproc)"
say "cpu:       $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
say "memory:    $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
say "kernel:    $(uname -r)"

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then apt-get update -qq >/dev/null; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
command -v nginx >/dev/null 2>&1 || { say "installing nginx (apt)..."; apt_install nginx; }
command -v wrk >/dev/null 2>&1 || { say "installing wrk (apt)..."; apt_install wrk; }
command -v curl >/dev/null 2>&1 || { say "installing curl (apt)..."; apt_install curl; }
command -v openssl >/dev/null 2>&1 || { say "installing openssl (apt)..."; apt_install openssl; }
command -v python3 >/dev/null 2>&1 || die "python3 is required (parses JSON answers)"
if ! command -v "$OHA" >/dev/null 2>&1; then
  # wrk2 is not in Debian; oha (crates.io) sends at a fixed rate (--qps) and
  # corrects for coordinated omission (--latency-correction).
  say "installing oha (cargo install oha --locked; a few minutes on 2 cores)..."
  cargo install oha --locked >"/tmp/gwbench-oha-install.log" 2>&1 || { tail -20 /tmp/gwbench-oha-install.log; die "cargo install oha failed"; }
  OHA="$(command -v oha)" || OHA="$HOME/.cargo/bin/oha"
fi
OHA="$(command -v "$OHA")" || die "oha not found"
NGINX="$(command -v nginx)"
say "nginx:     $("$NGINX" -v 2>&1 | sed 's/^nginx version: //')"
say "wrk:       $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
say "oha:       $("$OHA" --version 2>&1 | head -1)"
say "rustc:     $(rustc --version 2>/dev/null || echo '?')"

rm -rf "$WORKDIR"
mkdir -p "$WORKDIR"

if [ "$SKIP_BUILD" != "1" ]; then
  say "building:  cargo build --release -p portcullis (log: $WORKDIR/build.log)"
  b0=$(date +%s)
  if ! (cd "$ROOT" && cargo build --release -p portcullis >"$WORKDIR/build.log" 2>&1); then
    tail -30 "$WORKDIR/build.log"; die "release build failed"
  fi
  say "build:     done in $(( $(date +%s) - b0 )) s"
fi
[ -x "$BIN" ] || die "$BIN not found (build it, or unset BENCH_SKIP_BUILD)"
say "binary:    $BIN ($(stat -c %s "$BIN" | awk '{printf "%.1f MiB", $1/1048576}'), built $(date -u -r "$BIN" '+%Y-%m-%dT%H:%M:%SZ'))"

for p in $UP_PORT $PROXY_PORT $GW_PORT $GW_ADMIN_PORT $IAM_PORT $IAM_ADMIN_PORT; do
  port_free "$p" || die "port 127.0.0.1:$p is already in use"
done

# ---------------------------------------------------------------- configs
# Shared nginx settings. keepalive_requests is raised from nginx's default of
# 1000 so that neither nginx (as server) closes client connections every
# 1000 requests: the gateway's hyper server and its upstream pool have no such
# limit, so the default would hand nginx reconnects the gateway doesn't pay.
nginx_common() { # DIR
  cat <<EOF
daemon off;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() { # DIR
  cat <<EOF
    access_log off;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
EOF
}

mkdir -p "$WORKDIR/upstream" "$WORKDIR/nginx-proxy"
{
  say "# The upstream: one worker returning a fixed small JSON body (same for every variant)."
  say "worker_processes 1;"
  nginx_common "$WORKDIR/upstream"
  say "http {"
  nginx_http_common "$WORKDIR/upstream"
  cat <<EOF
    server {
        listen 127.0.0.1:$UP_PORT backlog=4096;
        default_type application/json;
        location / { return 200 '{"ok":true}'; }
    }
}
EOF
} >"$WORKDIR/upstream/nginx.conf"

{
  say "# The baseline: nginx as a plain reverse proxy, 2 workers (the gateway's runtime uses both cores)."
  say "worker_processes 2;"
  nginx_common "$WORKDIR/nginx-proxy"
  say "http {"
  nginx_http_common "$WORKDIR/nginx-proxy"
  cat <<EOF
    upstream echo {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT backlog=4096;
        location / {
            proxy_pass http://echo;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
} >"$WORKDIR/nginx-proxy/nginx.conf"

# API key for the /key route: the gateway stores only its digest.
. "$HERE/config.sh"
new_api_key
[ -n "$API_KEY" ] && [ -n "$API_DIGEST" ] || { say "$KEYOUT"; die "could not parse 'portcullis apikeys create' output"; }
CHECK_DIGEST="sha256:$(printf '%s' "$API_KEY" | sha256sum | awk '{print $1}')"
[ "$CHECK_DIGEST" = "$API_DIGEST" ] || die "apikeys digest $API_DIGEST != sha256 of the key $CHECK_DIGEST"

GW_CONFIG="$WORKDIR/gateway.toml"
gateway_config "$IAM_PORT" >"$GW_CONFIG"

hr
say "configs:   $WORKDIR/upstream/nginx.conf, $WORKDIR/nginx-proxy/nginx.conf, $GW_CONFIG"
say "gateway.toml (the key digest is that of a fresh 'portcullis apikeys create --consumer bench' key):"
sed 's/^/  | /' "$GW_CONFIG"
say "nginx proxy config:"
sed 's/^/  | /' "$WORKDIR/nginx-proxy/nginx.conf"
say "upstream config:"
sed 's/^/  | /' "$WORKDIR/upstream/nginx.conf"

# ---------------------------------------------------------------- start
hr
spawn upstream /dev/null -- "$NGINX" -e "$WORKDIR/upstream/error.log" -p "$WORKDIR/upstream" -c "$WORKDIR/upstream/nginx.conf"
UP_PID=$SPAWNED
wait_http upstream "$UP_PID" "$UP_URL"
say "upstream:    pid $UP_PID (nginx, 1 worker) on 127.0.0.1:$UP_PORT"

spawn nginx-proxy /dev/null -- "$NGINX" -e "$WORKDIR/nginx-proxy/error.log" -p "$WORKDIR/nginx-proxy" -c "$WORKDIR/nginx-proxy/nginx.conf"
PROXY_PID=$SPAWNED
wait_http nginx-proxy "$PROXY_PID" "$PROXY_URL"
say "nginx proxy: pid $PROXY_PID (nginx, 2 workers) on 127.0.0.1:$PROXY_PORT"

export PORTCULLIS_MASTER_KEY
PORTCULLIS_MASTER_KEY="$(openssl rand -base64 32)"
spawn iam "$WORKDIR/iam.stdout" -- "$BIN" --log warn iam serve \
  --listen "127.0.0.1:$IAM_PORT" --admin-listen "127.0.0.1:$IAM_ADMIN_PORT" \
  --database-url "sqlite://$WORKDIR/iam.db" --admin-token "$ADMIN_TOKEN" --access-token-ttl-secs 3600
IAM_PID=$SPAWNED
wait_http iam "$IAM_PID" "http://127.0.0.1:$IAM_PORT/readyz"
say "IAM:         pid $IAM_PID on 127.0.0.1:$IAM_PORT (admin 127.0.0.1:$IAM_ADMIN_PORT)"

CLIENT_JSON="$(curl -s --max-time 10 -H "authorization: Bearer $ADMIN_TOKEN" -H 'content-type: application/json' \
  -d '{"client_id":"bench","allowed_scopes":["read"],"allowed_audiences":["gateway"],"default_audiences":["gateway"]}' \
  "http://127.0.0.1:$IAM_ADMIN_PORT/admin/clients")"
CLIENT_SECRET="$(printf '%s' "$CLIENT_JSON" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' 2>/dev/null)" \
  || { say "$CLIENT_JSON"; die "client creation failed"; }
get_token() { # sets TOKEN and TOKEN_AT
  local j
  j="$(curl -s --max-time 10 -u "bench:$CLIENT_SECRET" -d grant_type=client_credentials -d scope=read \
    "http://127.0.0.1:$IAM_PORT/oauth2/token")"
  TOKEN="$(printf '%s' "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])' 2>/dev/null)" \
    || { say "$j"; die "token request failed"; }
  TOKEN_AT=$(date +%s)
}
# The token lives 3600 s; a run that waited long for an idle machine gets a
# new one before a JWT run rather than measuring 401s.
token_fresh() {
  if [ $(( $(date +%s) - TOKEN_AT )) -gt 3000 ]; then
    get_token
    say "  (token older than 3000 s: fetched a new one for this run)"
  fi
}
get_token
say "token:       one client_credentials token for the whole JWT run; its header and claims:"
printf '%s' "$TOKEN" | python3 -c '
import base64, json, sys
t = sys.stdin.read().strip().split(".")
dec = lambda s: json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))
print("             header", json.dumps(dec(t[0]), sort_keys=True))
print("             claims", json.dumps(dec(t[1]), sort_keys=True))
print("             length", sum(len(p) for p in t) + 2, "bytes")'

GW_CMD_BASE=("$BIN" --log-format json)
start_gateway() { # LOGLEVEL STDOUT
  spawn "gateway-$1" "$2" -- "${GW_CMD_BASE[@]}" --log "$1" gateway serve --config "$GW_CONFIG"
  GW_PID=$SPAWNED
  wait_http "gateway-$1" "$GW_PID" "http://127.0.0.1:$GW_ADMIN_PORT/healthz"
  # portcullis_core::telemetry installs its Prometheus recorder on the first
  # /metrics render: until someone scrapes, the gateway records nothing. One
  # request before the first scrape shows it (its count is missing from the
  # second scrape if so). A deployment is scraped, so the load then runs with
  # the metrics work on, and the counters reported at the end are complete.
  curl -s -o /dev/null --max-time 5 "$GW_BASE/open" || true
  curl -s --max-time 5 "http://127.0.0.1:$GW_ADMIN_PORT/metrics" >"$WORKDIR/gateway-$1.scrape1" || true
  curl -s -o /dev/null --max-time 5 "$GW_BASE/open" || true
  curl -s --max-time 5 "http://127.0.0.1:$GW_ADMIN_PORT/metrics" >"$WORKDIR/gateway-$1.scrape2" || true
  GW_FIRST_SCRAPE="first scrape $(wc -c <"$WORKDIR/gateway-$1.scrape1") bytes after 1 request to /open;"
  GW_FIRST_SCRAPE="$GW_FIRST_SCRAPE second scrape after a 2nd request: $(grep '^portcullis_gateway_requests_total{route="open"' "$WORKDIR/gateway-$1.scrape2" || echo 'no open-route counter')"
  GW_RSS0="$(rss_kb "$GW_PID")"
  GW_SENT=0
  say "gateway:     pid $GW_PID on 127.0.0.1:$GW_PORT (admin 127.0.0.1:$GW_ADMIN_PORT), --log $1, stdout -> $2; RSS at start $GW_RSS0 kB"
  say "             command: ${GW_CMD_BASE[*]} --log $1 gateway serve --config $GW_CONFIG"
  say "             metrics: $GW_FIRST_SCRAPE"
  say "             (2 requests to /open were sent; a count of 1 means requests before the first scrape are not counted)"
}
start_gateway warn "$WORKDIR/gateway-warn.stdout"

# A Prometheus-like scraper of the gateway's /metrics every $SCRAPE_S s for the
# rest of the run (the gateway keeps histogram samples until the next scrape;
# see the memory soak). Paused while $WORKDIR/scrape.off exists. Bounded.
if [ "$SCRAPE_S" -gt 0 ]; then
  spawn scraper /dev/null -- bash -c 'for i in $(seq 1 '"$(( 7200 / SCRAPE_S ))"'); do
      [ -e "$1/scrape.off" ] || curl -s -o /dev/null --max-time 2 "$2" || true; sleep "$3"; done' \
    scraper "$WORKDIR" "http://127.0.0.1:$GW_ADMIN_PORT/metrics" "$SCRAPE_S"
  say "scraper:     pid $SPAWNED: GET /metrics on the gateway's admin port every ${SCRAPE_S}s"
fi

# ---------------------------------------------------------------- checks
hr
say "checks (one request each):"
check() { # LABEL EXPECTED URL [curl args...]
  local label="$1" want="$2" url="$3" code; shift 3
  code="$(curl -s -o "$WORKDIR/check.body" -D "$WORKDIR/check.head" -w '%{http_code}' --max-time 5 "$@" "$url" || true)"
  printf '  %-44s -> %s %s  body: %s\n' "$label" "$code" "$([ "$code" = "$want" ] && echo ok || echo "UNEXPECTED (want $want)")" \
    "$(head -c 160 "$WORKDIR/check.body" | tr -d '\r\n')"
  [ "$code" = "$want" ] || { sed 's/^/    < /' "$WORKDIR/check.head"; die "check failed: $label"; }
}
check "upstream GET /open" 200 "$UP_URL"
check "nginx proxy GET /open" 200 "$PROXY_URL"
check "gateway GET /open (anonymous)" 200 "$GW_BASE/open"
say "    gateway response head for /open:"
tr -d '\r' <"$WORKDIR/check.head" | sed '/^$/d; s/^/      < /'
check "gateway GET /key with x-api-key" 200 "$GW_BASE/key" -H "x-api-key: $API_KEY"
check "gateway GET /jwt with the bearer token" 200 "$GW_BASE/jwt" -H "authorization: Bearer $TOKEN"
check "gateway GET /key without a key" 401 "$GW_BASE/key"
check "gateway GET /key with a wrong key" 401 "$GW_BASE/key" -H "x-api-key: pak_wrong0000000000000000000000000000000000"
check "gateway GET /jwt without a token" 401 "$GW_BASE/jwt"
SIG="${TOKEN##*.}"
if [ "${SIG:0:1}" = "A" ]; then FORGED="${TOKEN%.*}.B${SIG:1}"; else FORGED="${TOKEN%.*}.A${SIG:1}"; fi
check "gateway GET /jwt with a forged signature" 401 "$GW_BASE/jwt" -H "authorization: Bearer $FORGED"

# ---------------------------------------------------------------- peak load (wrk)
declare -A R_LINE R_FLAG R_PROXYCPU R_UPCPU R_WRKCPU R_OTHER R_RSS R_ROUNDS
ORDER=()
ROUND=1

run_wrk() { # OUT DURATION URL [extra wrk args...]; writes the WRKRESULT line (+ wrk_cpu_s) to OUT
  local out="$1" dur="$2" url="$3"; shift 3
  (
    timeout $(( dur + 30 )) wrk -t"$THREADS" -c"$CONNS" -d"${dur}s" --latency -s "$LUA" "$@" "$url" >"$out.wrk" 2>&1 || true
    times >"$out.times"
  ) &
  LOAD_JOB=$!
  wait "$LOAD_JOB" || true
  LOAD_JOB=""
  local cpu line
  cpu="$(tail -1 "$out.times" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.2f", t }')"
  line="$(grep '^WRKRESULT' "$out.wrk" || true)"
  [ -n "$line" ] || { cat "$out.wrk" >&2; die "wrk produced no result ($out.wrk)"; }
  echo "$line wrk_cpu_s=$cpu" >"$out"
}

ours_ticks() { # -> CPU ticks of every server started here (process groups: nginx masters + workers)
  local t=0 p
  for p in "${SERVER_PIDS[@]:-}"; do
    [ -n "$p" ] && t=$(( t + $(group_ticks "$p") ))
  done
  echo "$t"
}

measure() { # LABEL PROXYPID(or "") URL [wrk -H args...]
  local label="$1" ppid="$2" url="$3"; shift 3
  local safe="${label//[^a-zA-Z0-9]/_}" attempt
  hr
  say "[$label]  round $ROUND  $url"
  for attempt in $(seq 0 "$RETRIES"); do
    wait_quiet
    run_wrk "$WORKDIR/$safe.warmup" "$WARMUP" "$url" "$@"
    local w; w="$(cat "$WORKDIR/$safe.warmup")"
    say "  warm-up ${WARMUP}s: $(kv requests "$w") requests, $(kv rps "$w")/s, non-2xx $(kv non2xx "$w")"
    local p0=0 p1=0 u0 u1 o0 o1 m0 m1
    if [ -n "$ppid" ]; then p0="$(group_ticks "$ppid")"; fi
    u0="$(group_ticks "$UP_PID")"; o0="$(ours_ticks)"; m0="$(machine_busy_ticks)"
    run_wrk "$WORKDIR/$safe.measured" "$DURATION" "$url" "$@"
    if [ -n "$ppid" ]; then p1="$(group_ticks "$ppid")"; fi
    u1="$(group_ticks "$UP_PID")"; o1="$(ours_ticks)"; m1="$(machine_busy_ticks)"
    local m; m="$(cat "$WORKDIR/$safe.measured")"
    if [ -n "${GW_PID:-}" ] && [ "$ppid" = "$GW_PID" ]; then GW_SENT=$(( GW_SENT + $(kv requests "$w") + $(kv requests "$m") )); fi
    local wall pcpu ucpu wcpu other
    wall="$(kv duration_s "$m")"
    pcpu="$(calc "printf \"%.2f\", ($p1 - $p0) / $CLK_TCK / $wall")"
    ucpu="$(calc "printf \"%.2f\", ($u1 - $u0) / $CLK_TCK / $wall")"
    wcpu="$(calc "printf \"%.2f\", $(kv wrk_cpu_s "$m") / $wall")"
    # everything else = the machine's busy time - all servers started here - wrk
    other="$(calc "o = (($m1 - $m0) - ($o1 - $o0)) / $CLK_TCK / $wall - $wcpu; if (o < 0) o = 0; printf \"%.2f\", o")"
    say "  measured ${DURATION}s (wrk output):"
    sed -n '/Thread Stats/,/Transfer/p' "$WORKDIR/$safe.measured.wrk" | sed 's/^/    /'
    say "  p99.9 $(kv p999_ms "$m") ms, max $(kv max_ms "$m") ms; non-2xx $(kv non2xx "$m");" \
        "socket errors connect $(kv connect_err "$m") read $(kv read_err "$m") write $(kv write_err "$m") timeout $(kv timeout_err "$m")"
    say "  CPU (cores, averaged over ${wall}s): proxy ${pcpu}, upstream ${ucpu}, wrk ${wcpu}, everything else ${other}"
    if calc "exit !($other >= $QUIET_CORES)"; then
      say "  WARNING: other processes used ${other} cores during this run; figures distorted"
      QUIET_FLAG="busy"
      if [ "$attempt" -lt "$RETRIES" ]; then say "  -> repeating this run (attempt $(( attempt + 2 )) of $(( RETRIES + 1 )))"; continue; fi
    fi
    break
  done
  if [ -n "${GW_PID:-}" ] && [ "$ppid" = "$GW_PID" ]; then
    R_RSS[$label#$ROUND]="$(rss_kb "$GW_PID")"
    say "  gateway VmRSS after the run: ${R_RSS[$label#$ROUND]} kB (at start $GW_RSS0 kB)"
    kill -0 "$GW_PID" 2>/dev/null || die "the gateway (pid $GW_PID) died during the load"
  fi
  local k="$label#$ROUND"
  R_LINE[$k]="$m"; R_FLAG[$k]="$QUIET_FLAG"
  R_PROXYCPU[$k]="$pcpu"; R_UPCPU[$k]="$ucpu"; R_WRKCPU[$k]="$wcpu"; R_OTHER[$k]="$other"
  if [ -z "${R_ROUNDS[$label]:-}" ]; then ORDER+=("$label"); fi
  R_ROUNDS[$label]="$ROUND"
}

# LABEL -> its figures (R_LINE[LABEL], ...) become those of its median round
# by req/s (the lower median for an even count), every round's req/s listed
# in R_ALL[LABEL], and any round run on a busy machine flags it.
declare -A R_ALL
pick_median() {
  local label="$1" n="${R_ROUNDS[$1]}" r sorted mid flag=""
  sorted="$(for r in $(seq 1 "$n"); do printf '%s %s\n' "$(kv rps "${R_LINE[$label#$r]}")" "$r"; done | sort -g)"
  mid="$(printf '%s\n' "$sorted" | sed -n "$(( (n + 1) / 2 ))p" | awk '{print $2}')"
  for r in $(seq 1 "$n"); do [ -n "${R_FLAG[$label#$r]}" ] && flag="busy"; done
  R_ALL[$label]="$(for r in $(seq 1 "$n"); do printf '%s ' "$(kv rps "${R_LINE[$label#$r]}")"; done)"
  R_LINE[$label]="${R_LINE[$label#$mid]}"; R_FLAG[$label]="$flag"
  R_PROXYCPU[$label]="${R_PROXYCPU[$label#$mid]}"; R_UPCPU[$label]="${R_UPCPU[$label#$mid]}"
  R_WRKCPU[$label]="${R_WRKCPU[$label#$mid]}"; R_OTHER[$label]="${R_OTHER[$label#$mid]}"
  R_RSS[$label]="${R_RSS[$label#$mid]:-}"
}

# A / B -> the median over the rounds both ran of (A's req/s / B's req/s in
# that round), with the lowest and highest: "median min max".
round_ratio() {
  local a="$1" b="$2" n r
  n="${R_ROUNDS[$a]}"; [ "${R_ROUNDS[$b]}" -lt "$n" ] && n="${R_ROUNDS[$b]}"
  for r in $(seq 1 "$n"); do
    calc "printf \"%.3f\\n\", $(kv rps "${R_LINE[$a#$r]}") / $(kv rps "${R_LINE[$b#$r]}")"
  done | sort -g | awk '{ v[NR] = $1 } END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.3f %s %s", m, v[1], v[NR] }'
}

if [ "$STALL_S" != 0 ]; then
  hr
  say "vCPU stalls (bench/lib/vcpu_stalls.py ${STALL_S}): a busy thread pinned to each CPU, on the idle machine;"
  say "           gaps between its clock reads are time that CPU ran something else or nothing (a descheduled"
  say "           vCPU: this VM reports no steal time). Requests on a CPU that stalls wait it out."
  stall_census "  "
  STALLS_START="$STALLS"
fi

hr
say "peak load: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency -s bench/gateway/report.lua [-H ...] URL"
say "           after a ${WARMUP}s warm-up with the same settings; all servers stay up throughout;"
say "           $ROUNDS interleaved rounds (every variant once per round)"
L_UP="upstream direct"
L_NGX="nginx proxy"
L_A="gateway (a) /open"
L_B="gateway (b) /key"
L_C="gateway (c) /jwt"
L_AI="gateway (a) /open --log info"
L_BI="gateway (b) /key --log info"
L_CI="gateway (c) /jwt --log info"

for ROUND in $(seq 1 "$ROUNDS"); do
  measure "$L_UP" "" "$UP_URL"
  measure "$L_NGX" "$PROXY_PID" "$PROXY_URL"
  measure "$L_A" "$GW_PID" "$GW_BASE/open"
  measure "$L_B" "$GW_PID" "$GW_BASE/key" -H "x-api-key: $API_KEY"
  token_fresh
  measure "$L_C" "$GW_PID" "$GW_BASE/jwt" -H "authorization: Bearer $TOKEN"
done
for label in "$L_UP" "$L_NGX" "$L_A" "$L_B" "$L_C"; do pick_median "$label"; done

# ---------------------------------------------------------------- fixed-rate load (oha)
declare -A F_PROXY F_DIRECT F_RATE F_ROUNDS F_STALLS
run_oha() { # OUT RATE DURATION URL [oha -H args...] -> OUT holds "OHARESULT ..." ; OUT.json the raw answer
  # RATE "max": no rate limit (each connection sends its next request as soon as
  # the last is answered, as wrk does); otherwise -q RATE --latency-correction.
  local out="$1" rate="$2" dur="$3" url="$4"; shift 4
  local pace=(-q "$rate" --latency-correction)
  [ "$rate" = max ] && pace=()
  (
    timeout $(( dur + 30 )) "$OHA" --no-tui --output-format json -z "${dur}s" -c "$RATE_CONNS" "${pace[@]}" \
      -w --worker-threads "$RATE_THREADS" "$@" "$url" >"$out.json" 2>"$out.err" || true
    times >"$out.times"
  ) &
  LOAD_JOB=$!
  wait "$LOAD_JOB" || true
  LOAD_JOB=""
  python3 - "$out.json" >"$out" <<'PY' || { cat "$out.err" >&2; head -c 2000 "$out.json" >&2; die "oha produced no result ($out.json)"; }
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]
lp = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {}) or {}
errs = d.get("errorDistribution", {}) or {}
ok = sum(v for k, v in codes.items() if str(k).startswith("2"))
total = sum(codes.values()) + sum(errs.values())
ms = lambda v: "%.3f" % ((v or 0) * 1000)
print("OHARESULT requests=%d ok=%d non2xx=%d errors=%d rps=%.1f p50_ms=%s p90_ms=%s p99_ms=%s p999_ms=%s max_ms=%s success=%.4f codes=%s errs=%s" % (
    total, ok, sum(codes.values()) - ok, sum(errs.values()), s.get("requestsPerSec") or 0,
    ms(lp.get("p50")), ms(lp.get("p90")), ms(lp.get("p99")), ms(lp.get("p99.9")), ms(s.get("slowest")),
    s.get("successRate") or 0,
    ",".join("%s:%s" % kv for kv in sorted(codes.items())) or "-",
    ";".join("%s:%s" % (k.replace(" ", "_").replace("=", ":"), v) for k, v in sorted(errs.items())) or "-"))
PY
  local cpu
  cpu="$(tail -1 "$out.times" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.2f", t }')"
  echo "$(cat "$out") loadgen_cpu_s=$cpu" >"$out"
}

fixed_rate() { # LABEL FILETAG PROXYPID(or "") RATE URL [oha -H args...] -> prints a line, sets FIXED_RESULT
  local label="$1" tag="$2" ppid="$3" rate="$4" url="$5"; shift 5
  local safe="rate_${tag//[^a-zA-Z0-9]/_}" attempt r
  for attempt in $(seq 0 "$RETRIES"); do
    wait_quiet
    run_oha "$WORKDIR/$safe.warmup" "$rate" "$RATE_WARMUP" "$url" "$@"
    local p0=0 p1=0 o0 o1 m0 m1 t0 t1
    if [ -n "$ppid" ]; then p0="$(group_ticks "$ppid")"; fi
    o0="$(ours_ticks)"; m0="$(machine_busy_ticks)"; t0="$(date +%s.%N)"
    run_oha "$WORKDIR/$safe" "$rate" "${FIXED_DURATION:-$RATE_DURATION}" "$url" "$@"
    if [ -n "$ppid" ]; then p1="$(group_ticks "$ppid")"; fi
    o1="$(ours_ticks)"; m1="$(machine_busy_ticks)"; t1="$(date +%s.%N)"
    r="$(cat "$WORKDIR/$safe")"
    if [ -n "${GW_PID:-}" ] && [ "$ppid" = "$GW_PID" ]; then
      GW_SENT=$(( GW_SENT + $(kv requests "$(cat "$WORKDIR/$safe.warmup")") + $(kv requests "$r") ))
    fi
    local wall pcpu lcpu other
    wall="$(calc "printf \"%.3f\", $t1 - $t0")"
    pcpu="$(calc "printf \"%.2f\", ($p1 - $p0) / $CLK_TCK / $wall")"
    lcpu="$(calc "printf \"%.2f\", $(kv loadgen_cpu_s "$r") / $wall")"
    other="$(calc "o = (($m1 - $m0) - ($o1 - $o0)) / $CLK_TCK / $wall - $lcpu; if (o < 0) o = 0; printf \"%.2f\", o")"
    printf '    %-30s target %6s/s achieved %8s/s  p50 %7s  p90 %7s  p99 %7s  p99.9 %7s  max %8s ms  non-2xx %s err %s  CPU: %s %s, oha %s, other %s%s\n' \
      "$label" "$rate" "$(kv rps "$r")" "$(kv p50_ms "$r")" "$(kv p90_ms "$r")" "$(kv p99_ms "$r")" "$(kv p999_ms "$r")" \
      "$(kv max_ms "$r")" "$(kv non2xx "$r")" "$(kv errors "$r")" "$([ -n "$ppid" ] && echo proxy || echo upstream)" \
      "$([ -n "$ppid" ] && echo "$pcpu" || echo "$(calc "printf \"%.2f\", ($o1 - $o0) / $CLK_TCK / $wall")")" "$lcpu" "$other" \
      "$([ -n "$QUIET_FLAG" ] && echo '  [machine busy before]' || true)"
    if [ "$(kv errs "$r")" != "-" ]; then say "      errors: $(kv errs "$r")"; fi
    if calc "exit !($other >= $QUIET_CORES)"; then
      say "      WARNING: other processes used ${other} cores during this run; figures distorted"
      QUIET_FLAG="busy"
      if [ "$attempt" -lt "$RETRIES" ]; then say "      -> repeating this run (attempt $(( attempt + 2 )) of $(( RETRIES + 1 )))"; continue; fi
    fi
    break
  done
  FIXED_RESULT="$r${QUIET_FLAG:+ busy=1}"
}

# ---------------------------------------------------------------- oha's own peak
# oha spends about twice wrk's CPU per request, on the same two cores as the
# servers, so a variant's peak under oha is well below its peak under wrk. A
# fixed rate meant as "half of peak" is taken as half of the peak the same load
# generator reaches (BENCH_RATE_PEAK=oha); half of the wrk peak under oha is
# near saturation and is kept as a comparison with the earlier runs.
declare -A O_PEAK O_ALL O_LINE
if [ "$RATE_PEAK" = oha ] || [ "$OHA_PEAK_ROUNDS" -gt 0 ]; then
  [ "$OHA_PEAK_ROUNDS" -gt 0 ] || die "BENCH_RATE_PEAK=oha needs BENCH_OHA_PEAK_ROUNDS > 0"
  hr
  say "peak load under oha: oha --no-tui -z ${OHA_PEAK_DURATION}s -c $RATE_CONNS -w --worker-threads $RATE_THREADS [-H ...] URL"
  say "                     (no -q: every connection sends as soon as it is answered), after a ${RATE_WARMUP}s warm-up;"
  say "                     $OHA_PEAK_ROUNDS interleaved rounds, median by req/s"
  for round in $(seq 1 "$OHA_PEAK_ROUNDS"); do
    say "  round $round:"
    for label in "$L_UP" "$L_NGX" "$L_A" "$L_B" "$L_C"; do
      case "$label" in
        "$L_UP") FIXED_DURATION="$OHA_PEAK_DURATION" fixed_rate "$label" "peak $label" "" max "$UP_URL" ;;
        "$L_NGX") FIXED_DURATION="$OHA_PEAK_DURATION" fixed_rate "$label" "peak $label" "$PROXY_PID" max "$PROXY_URL" ;;
        "$L_A") FIXED_DURATION="$OHA_PEAK_DURATION" fixed_rate "$label" "peak $label" "$GW_PID" max "$GW_BASE/open" ;;
        "$L_B") FIXED_DURATION="$OHA_PEAK_DURATION" fixed_rate "$label" "peak $label" "$GW_PID" max "$GW_BASE/key" -H "x-api-key: $API_KEY" ;;
        "$L_C") token_fresh; FIXED_DURATION="$OHA_PEAK_DURATION" fixed_rate "$label" "peak $label" "$GW_PID" max "$GW_BASE/jwt" -H "authorization: Bearer $TOKEN" ;;
      esac
      O_LINE[$label#$round]="$FIXED_RESULT"
      O_ALL[$label]="${O_ALL[$label]:-}$(kv rps "$FIXED_RESULT") "
    done
  done
  for label in "$L_UP" "$L_NGX" "$L_A" "$L_B" "$L_C"; do
    O_PEAK[$label]="$(printf '%s\n' ${O_ALL[$label]} | sort -g | sed -n "$(( (OHA_PEAK_ROUNDS + 1) / 2 ))p")"
  done
fi

hr
say "fixed-rate load: oha --no-tui --output-format json -z ${RATE_DURATION}s -c $RATE_CONNS -q RATE --latency-correction -w --worker-threads $RATE_THREADS [-H ...] URL"
say "                RATE = F x the variant's peak req/s under $RATE_PEAK (above), F in: $RATE_FRACTIONS${RATE_WRK_FRACTIONS:+; and F x its wrk peak, F in: $RATE_WRK_FRACTIONS (for comparison)}"
say "                each proxy run is followed by the upstream directly at the same RATE; a ${RATE_WARMUP}s run at the same rate precedes each."
say "                --latency-correction: latency counts from when a request was due, not when it was sent;"
say "                -w: requests in flight at the deadline are waited for, not counted as errors."
# "BASE:F" pairs, the target's first
RATE_POINTS=""
for frac in $RATE_FRACTIONS; do RATE_POINTS="$RATE_POINTS $RATE_PEAK:$frac"; done
for frac in $RATE_WRK_FRACTIONS; do RATE_POINTS="$RATE_POINTS wrk:$frac"; done
TARGET_POINT="$RATE_PEAK:$RATE_FRACTION"
base_peak() { # BASE LABEL -> req/s
  if [ "$1" = oha ]; then printf '%s' "${O_PEAK[$2]}"; else kv rps "${R_LINE[$2]}"; fi
}
for point in $RATE_POINTS; do
  base="${point%%:*}"; frac="${point#*:}"
  F_ROUNDS[$point]=1
  [ "$point" = "$TARGET_POINT" ] && F_ROUNDS[$point]="$RATE_ROUNDS"
  for round in $(seq 1 "${F_ROUNDS[$point]}"); do
  if [ "$point" = "$TARGET_POINT" ] && [ "$STALL_S" != 0 ]; then
    say "  vCPU stalls before round $round at $point:"
    stall_census "    "
    F_STALLS[$round]="$STALLS"
  fi
  for label in "$L_NGX" "$L_A" "$L_B" "$L_C"; do
    peak="$(base_peak "$base" "$label")"
    rate="$(calc "printf \"%d\", $peak * $frac")"
    F_RATE[$label|$point]="$rate"
    k="$label|$point#$round"
    say "  [$label] at $frac x its $base peak ($peak) = $rate req/s, round $round of ${F_ROUNDS[$point]}:"
    case "$label" in
      "$L_NGX") fixed_rate "$label" "$label $point r$round" "$PROXY_PID" "$rate" "$PROXY_URL" ;;
      "$L_A") fixed_rate "$label" "$label $point r$round" "$GW_PID" "$rate" "$GW_BASE/open" ;;
      "$L_B") fixed_rate "$label" "$label $point r$round" "$GW_PID" "$rate" "$GW_BASE/key" -H "x-api-key: $API_KEY" ;;
      "$L_C") token_fresh; fixed_rate "$label" "$label $point r$round" "$GW_PID" "$rate" "$GW_BASE/jwt" -H "authorization: Bearer $TOKEN" ;;
    esac
    F_PROXY[$k]="$FIXED_RESULT"
    fixed_rate "upstream direct, same rate" "direct for $label $point r$round" "" "$rate" "$UP_URL"
    F_DIRECT[$k]="$FIXED_RESULT"
  done
  done
done
kill -0 "$GW_PID" 2>/dev/null || die "the gateway (pid $GW_PID) died during the fixed-rate runs"

# ---------------------------------------------------------------- memory soak
# The metrics recorder (metrics-exporter-prometheus, built without an upkeep
# task) keeps every histogram sample until /metrics is rendered: round 1 pauses
# the scraper to show the growth between scrapes, round 2 scrapes as usual.
if [ "$SOAK_ROUNDS" -gt 0 ]; then
  hr
  say "memory soak: wrk -t$THREADS -c$CONNS -d${SOAK_S}s on /open, /key, /jwt in turn, per round (not measured);"
  say "round 1 with the /metrics scraper paused, later rounds scraped every ${SCRAPE_S}s; gateway VmRSS after each run (kB)"
  wait_quiet
  curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$GW_ADMIN_PORT/metrics" || true
  say "  start (just after a scrape): $(rss_kb "$GW_PID")"
  for round in $(seq 1 "$SOAK_ROUNDS"); do
    if [ "$round" = 1 ]; then touch "$WORKDIR/scrape.off"; line="  round $round, no scrapes:"
    else rm -f "$WORKDIR/scrape.off"; line="  round $round, scraped:   "; fi
    for route in open key jwt; do
      case "$route" in
        open) hdr=() ;;
        key) hdr=(-H "x-api-key: $API_KEY") ;;
        jwt) token_fresh; hdr=(-H "authorization: Bearer $TOKEN") ;;
      esac
      run_wrk "$WORKDIR/soak-$round-$route" "$SOAK_S" "$GW_BASE/$route" "${hdr[@]}"
      r="$(cat "$WORKDIR/soak-$round-$route")"
      GW_SENT=$(( GW_SENT + $(kv requests "$r") ))
      line="$line  /$route $(kv requests "$r") req (non-2xx $(kv non2xx "$r")) -> $(rss_kb "$GW_PID")"
      kill -0 "$GW_PID" 2>/dev/null || die "the gateway (pid $GW_PID) died during the soak"
    done
    say "$line"
    if [ "$round" = 1 ]; then
      curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$GW_ADMIN_PORT/metrics" || true
      say "  one scrape after round 1 -> $(rss_kb "$GW_PID") (freed memory may stay with the allocator)"
    fi
  done
  rm -f "$WORKDIR/scrape.off"
fi

GW_RSS_END="$(rss_kb "$GW_PID")"; GW_HWM_END="$(hwm_kb "$GW_PID")"

# ---------------------------------------------------------------- gateway counters and log
hr
say "gateway (--log warn) after all its runs: VmRSS $GW_RSS_END kB, VmHWM $GW_HWM_END kB (at start $GW_RSS0 kB)"
say "gateway request counters (admin /metrics, portcullis_gateway_requests_total):"
curl -s --max-time 5 "http://127.0.0.1:$GW_ADMIN_PORT/metrics" >"$WORKDIR/gateway-warn.metrics" || true
grep '^portcullis_gateway_requests_total' "$WORKDIR/gateway-warn.metrics" | sed 's/^/  /' || say "  (none found)"
say "  summed by status: $(awk '/^portcullis_gateway_requests_total/ { match($0, /status="[0-9]+"/); st = substr($0, RSTART + 8, 3); n[st] += $NF } END { for (k in n) printf "%s: %d  ", k, n[k] }' "$WORKDIR/gateway-warn.metrics")"
say "  requests completed by wrk/oha against this gateway: $GW_SENT, + 2 at start + 7 checks (a load generator does not count"
say "  requests still in flight when it stops, so the server's total may be slightly higher)"
grep -E '^portcullis_gateway_upstream_seconds_(count|sum)' "$WORKDIR/gateway-warn.metrics" | sed 's/^/  /' || true
lines=$(cat "$WORKDIR/gateway-warn.stdout" "$WORKDIR/gateway-warn.stderr" 2>/dev/null | wc -l)
say "gateway log (--log warn): $lines lines"
if [ "$lines" -gt 0 ]; then cat "$WORKDIR/gateway-warn.stdout" "$WORKDIR/gateway-warn.stderr" | head -20 | cut -c1-400 | sed 's/^/  | /'; fi
for n in upstream nginx-proxy; do
  el=$(cat "$WORKDIR/$n/error.log" "$WORKDIR/$n.stderr" 2>/dev/null | wc -l)
  say "$n error.log + stderr: $el lines"
  if [ "$el" -gt 0 ]; then cat "$WORKDIR/$n/error.log" "$WORKDIR/$n.stderr" 2>/dev/null | head -10 | cut -c1-300 | sed 's/^/  | /'; fi
done
il=$(cat "$WORKDIR/iam.stdout" "$WORKDIR/iam.stderr" 2>/dev/null | wc -l)
say "IAM log (--log warn): $il lines"
if [ "$il" -gt 0 ]; then cat "$WORKDIR/iam.stdout" "$WORKDIR/iam.stderr" | head -10 | cut -c1-300 | sed 's/^/  | /'; fi

# ---------------------------------------------------------------- --log info
if [ "$LOG_INFO" = "1" ]; then
  hr
  say "restarting the gateway with --log info (one JSON access-log line per request), stdout -> /dev/null"
  stop_server "$GW_PID"
  start_gateway info /dev/null
  check "gateway GET /open (--log info)" 200 "$GW_BASE/open"
  ROUND=1
  measure "$L_AI" "$GW_PID" "$GW_BASE/open"
  measure "$L_BI" "$GW_PID" "$GW_BASE/key" -H "x-api-key: $API_KEY"
  token_fresh
  measure "$L_CI" "$GW_PID" "$GW_BASE/jwt" -H "authorization: Bearer $TOKEN"
  for label in "$L_AI" "$L_BI" "$L_CI"; do pick_median "$label"; done
  el=$(wc -l <"$WORKDIR/gateway-info.stderr")
  say "gateway (--log info) stderr: $el lines"
  if [ "$el" -gt 0 ]; then head -10 "$WORKDIR/gateway-info.stderr" | cut -c1-300 | sed 's/^/  | /'; fi
fi

# ---------------------------------------------------------------- report
hr
say ""
say "RESULTS  (peak: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency after a ${WARMUP}s warm-up; nproc=$(nproc);"
say "          upstream, proxy and wrk share the 2 cores; CPU columns are cores used, averaged over the run;"
say "          each row is the variant's median round of $ROUNDS by req/s, every round's req/s listed after the table)"
say ""
printf '%-30s %10s %9s %9s %9s %8s %7s %6s %6s %6s %6s\n' "variant" "req/s" "p50 ms" "p90 ms" "p99 ms" "non-2xx" "errors" "proxy" "upstr" "wrk" "other"
for label in "${ORDER[@]}"; do
  m="${R_LINE[$label]}"
  errs=$(( $(kv connect_err "$m") + $(kv read_err "$m") + $(kv write_err "$m") + $(kv timeout_err "$m") ))
  printf '%-30s %10s %9s %9s %9s %8s %7s %6s %6s %6s %6s%s\n' "$label" "$(kv rps "$m")" "$(kv p50_ms "$m")" \
    "$(kv p90_ms "$m")" "$(kv p99_ms "$m")" "$(kv non2xx "$m")" "$errs" \
    "$([ "$label" = "$L_UP" ] && echo - || echo "${R_PROXYCPU[$label]}")" "${R_UPCPU[$label]}" "${R_WRKCPU[$label]}" \
    "${R_OTHER[$label]}" "$([ -n "${R_FLAG[$label]}" ] && echo '  [machine busy]' || true)"
done
say ""
say "req/s in every round (1..$ROUNDS):"
for label in "$L_UP" "$L_NGX" "$L_A" "$L_B" "$L_C"; do printf '  %-30s %s\n' "$label" "${R_ALL[$label]}"; done
rps() { kv rps "${R_LINE[$1]}"; }
ratio() { calc "printf \"%.3f\", $(rps "$1") / $(rps "$2")"; }
# A B -> "median (min-max)" of the within-round ratios
rratio() { local m lo hi; read -r m lo hi <<<"$(round_ratio "$1" "$2")"; printf '%s  (rounds: %s-%s)' "$m" "$lo" "$hi"; }
say ""
say "throughput ratios (median of the ratios within each round, lowest-highest round):"
say "  nginx proxy / upstream direct        $(rratio "$L_NGX" "$L_UP")"
say "  gateway (a) /open / nginx proxy      $(rratio "$L_A" "$L_NGX")"
say "  gateway (b) /key  / nginx proxy      $(rratio "$L_B" "$L_NGX")"
say "  gateway (c) /jwt  / nginx proxy      $(rratio "$L_C" "$L_NGX")"
if [ "$LOG_INFO" = "1" ]; then
  say "  (--log info: one round, against the median --log warn round)"
  say "  gateway (a) --log info / --log warn  $(ratio "$L_AI" "$L_A")"
  say "  gateway (b) --log info / --log warn  $(ratio "$L_BI" "$L_B")"
  say "  gateway (c) --log info / --log warn  $(ratio "$L_CI" "$L_C")"
fi
say ""
if [ -n "${O_PEAK[$L_UP]:-}" ]; then
  say "PEAK UNDER OHA  (oha -c $RATE_CONNS -z ${OHA_PEAK_DURATION}s, no rate limit, median of $OHA_PEAK_ROUNDS rounds; against the wrk peak above)"
  say ""
  printf '%-22s %10s %10s %10s   %s\n' "variant" "oha req/s" "wrk req/s" "oha/wrk" "every round (oha)"
  for label in "$L_UP" "$L_NGX" "$L_A" "$L_B" "$L_C"; do
    printf '%-22s %10s %10s %10s   %s\n' "$label" "${O_PEAK[$label]}" "$(rps "$label")" \
      "$(calc "printf \"%.2f\", ${O_PEAK[$label]} / $(rps "$label")")" "${O_ALL[$label]}"
  done
  say "  gateway (a) / nginx proxy under oha: $(calc "printf \"%.3f\", ${O_PEAK[$L_A]} / ${O_PEAK[$L_NGX]}")"
  say ""
fi
say "FIXED-RATE LATENCY  (oha -c $RATE_CONNS -z ${RATE_DURATION}s -q RATE --latency-correction; RATE = F x the variant's peak req/s"
say "                    under the load generator named in 'peak' (oha: oha's own peak, wrk: the wrk peak);"
say "                    added = variant - upstream direct at the same rate, percentile by percentile;"
say "                    at $RATE_FRACTION x $RATE_PEAK peak, $RATE_ROUNDS interleaved rounds (column r), every round shown)"
say ""
printf '%-22s %4s %5s %2s %8s %9s | %8s %8s | %8s %8s | %9s %9s | %s\n' "variant" "peak" "F" "r" "rate/s" "achieved" "p50 ms" "p99 ms" "dir p50" "dir p99" "added p50" "added p99" "non-2xx/errors"
for point in $RATE_POINTS; do
for round in $(seq 1 "${F_ROUNDS[$point]}"); do
for label in "$L_NGX" "$L_A" "$L_B" "$L_C"; do
  k="$label|$point#$round"
  p="${F_PROXY[$k]}"; d="${F_DIRECT[$k]}"
  ap50="$(calc "printf \"%.3f\", $(kv p50_ms "$p") - $(kv p50_ms "$d")")"
  ap99="$(calc "printf \"%.3f\", $(kv p99_ms "$p") - $(kv p99_ms "$d")")"
  printf '%-22s %4s %5s %2s %8s %9s | %8s %8s | %8s %8s | %9s %9s | %s/%s%s\n' "$label" "${point%%:*}" "${point#*:}" "$round" "${F_RATE[$label|$point]}" "$(kv rps "$p")" \
    "$(kv p50_ms "$p")" "$(kv p99_ms "$p")" "$(kv p50_ms "$d")" "$(kv p99_ms "$d")" "$ap50" "$ap99" \
    "$(kv non2xx "$p")" "$(kv errors "$p")" "$( { [ -n "$(kv busy "$p")" ] || [ -n "$(kv busy "$d")" ]; } && echo '  [machine busy]' || true)"
done
done
done

# LABEL POINT -> every round's p99 added (proxy run less the direct run after it), space-separated
added99_all() {
  local r p d all=()
  for r in $(seq 1 "${F_ROUNDS[$2]}"); do
    p="${F_PROXY[$1|$2#$r]}"; d="${F_DIRECT[$1|$2#$r]}"
    all+=("$(calc "printf \"%.3f\", $(kv p99_ms "$p") - $(kv p99_ms "$d")")")
  done
  printf '%s' "${all[*]}"
}
# LABEL POINT -> the median round's p99 added (the lower middle one for an even count)
added99() {
  local all n
  all="$(added99_all "$1" "$2")"; n="${F_ROUNDS[$2]}"
  printf '%s\n' $all | sort -g | sed -n "$(( (n + 1) / 2 ))p"
}
verdict() { calc "exit !($1)" && echo "MET" || echo "NOT MET"; }
say ""
say "TARGETS"
read -r ra _ <<<"$(round_ratio "$L_A" "$L_NGX")"; read -r rc _ <<<"$(round_ratio "$L_C" "$L_NGX")"
say "  (a) gateway /open throughput >= nginx proxy:          median ${ra}x (medians $(rps "$L_A") vs $(rps "$L_NGX") req/s)  -> $(verdict "$ra >= 1.0")"
say "  (c) gateway /jwt throughput >= 70% of nginx proxy:    median ${rc}x (medians $(rps "$L_C") vs $(rps "$L_NGX") req/s)  -> $(verdict "$rc >= 0.70")"
for label in "$L_A" "$L_B" "$L_C"; do
  a="$(added99 "$label" "$TARGET_POINT")"
  printf '  p99 added latency < 1 ms at %s x %s peak, %-18s %s ms at %s req/s (every round: %s) -> %s\n' "$RATE_FRACTION" "$RATE_PEAK" "$label:" "$a" "${F_RATE[$label|$TARGET_POINT]}" "$(added99_all "$label" "$TARGET_POINT")" "$(verdict "$a < 1.0")"
done
a="$(added99 "$L_NGX" "$TARGET_POINT")"
printf '  (reference) nginx proxy p99 added at %s x %s peak:                 %s ms at %s req/s (every round: %s)\n' "$RATE_FRACTION" "$RATE_PEAK" "$a" "${F_RATE[$L_NGX|$TARGET_POINT]}" "$(added99_all "$L_NGX" "$TARGET_POINT")"
if [ "$STALL_S" != 0 ]; then
  say "  vCPU stalls (share of time in gaps >= 1 ms per CPU, count, longest ms), at the start: ${STALLS_START:-?}"
  for round in $(seq 1 "$RATE_ROUNDS"); do
    say "    before round $round at $RATE_FRACTION x $RATE_PEAK peak: ${F_STALLS[$round]:-?}"
  done
fi
for frac in $RATE_WRK_FRACTIONS; do
  for label in "$L_NGX" "$L_A" "$L_B" "$L_C"; do
    printf '  (comparison) p99 added at %s x wrk peak, %-18s %s ms at %s req/s\n' "$frac" "$label:" "$(added99 "$label" "wrk:$frac")" "${F_RATE[$label|wrk:$frac]}"
  done
done
say ""
say "notes: the JWT run uses one token throughout; the gateway caches validated tokens and the internal"
say "       tokens it mints per identity and upstream, so this is the steady state of a client reusing"
say "       its token, not the cost of a first validation."
say "       oha spends about twice wrk's CPU per request, on the same 2 cores as the servers: F x the wrk"
say "       peak under oha is a larger share of what is left for the proxy than F suggests (the oha/wrk"
say "       column above). On a shared 2-core machine the tail latencies of one run swing from round"
say "       to round (see every round above): repeat the script to see the run-to-run spread too."
say ""
say "done in $SECONDS s; stopping everything started here."
