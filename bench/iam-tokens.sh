#!/usr/bin/env bash
# Token-endpoint benchmark: Portcullis vs panva/oidc-provider.
#
# Both servers mint client-credentials access tokens as ES256-signed JWTs
# (typ at+jwt) for one client authenticated with client_secret_basic; wrk
# drives both with the same settings and the same request body.
#
#   bash bench/iam-tokens.sh            # from the repository root
#
# What it does, in order: installs what is missing (Debian's wrk, `npm ci` for
# the peer), builds target/release/portcullis, then for each server: spawns it
# on a fresh state, times spawn -> first 200 from its readiness URL (polled
# every 5 ms), fetches and verifies one token (3 parts, alg ES256, signature
# against the published JWKS), warms up, runs the measured wrk, drives the
# total past BENCH_MIN_TOKENS and reads VmRSS/VmHWM from /proc/PID/status.
# Extra runs: Portcullis with --log info (audit line per token, stdout to
# /dev/null), and a pinned variant (server on CPU 0, wrk on CPU 1).
# Servers are always killed on exit. Load goes to 127.0.0.1 only.
#
# Settings (env):
#   BENCH_THREADS=1 BENCH_CONNS=64 BENCH_DURATION=15 BENCH_WARMUP=3
#   BENCH_MIN_TOKENS=100000   tokens each primary server must have served before RSS is read
#   BENCH_MAX_TOPUP_S=120     cap on the extra load used to reach BENCH_MIN_TOKENS
#   BENCH_AUDIT_INFO=1        also run Portcullis with --log info (0 to skip)
#   BENCH_PINNED=1            also run the taskset variant (0 to skip)
#   BENCH_SKIP_BUILD=0        1: use the existing target/release/portcullis
#   BENCH_WORKDIR=/tmp/pcbench  scratch dir (wiped at start): databases, logs
#   BENCH_PEER_NODE=node      Node.js binary for the peer (oidc-provider 9 asks for Node 22 LTS+;
#                             it warns on Node 20 but works)
#   BENCH_QUIET_WAIT_S=60     before the load, wait up to this long for the machine to be idle
#                             (other processes using < 0.15 cores); then go on with a warning
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PEER_DIR="$HERE/peer/oidc-provider"
LUA="$HERE/token.lua"
CONFIG="$HERE/iam-bench.toml"
BIN="$ROOT/target/release/portcullis"

THREADS="${BENCH_THREADS:-1}"
CONNS="${BENCH_CONNS:-64}"
DURATION="${BENCH_DURATION:-15}"
WARMUP="${BENCH_WARMUP:-3}"
MIN_TOKENS="${BENCH_MIN_TOKENS:-100000}"
MAX_TOPUP_S="${BENCH_MAX_TOPUP_S:-120}"
AUDIT_INFO="${BENCH_AUDIT_INFO:-1}"
PINNED="${BENCH_PINNED:-1}"
SKIP_BUILD="${BENCH_SKIP_BUILD:-0}"
WORKDIR="${BENCH_WORKDIR:-/tmp/pcbench}"
QUIET_WAIT_S="${BENCH_QUIET_WAIT_S:-60}"
PEER_NODE="${BENCH_PEER_NODE:-node}"
QUIET_CORES=0.15

PC_PORT=19000
PC_ADMIN_PORT=19001
PEER_PORT=19100
CLIENT_ID="bench-client"
CLIENT_SECRET="bench-secret-0123456789abcdef0123456789abcdef"
BASIC="$(printf '%s:%s' "$CLIENT_ID" "$CLIENT_SECRET" | base64 -w0)"
BODY="grant_type=client_credentials&scope=read"

# ---------------------------------------------------------------- cleanup
SERVER_PIDS=()
PIDDIR=""
cleanup() {
  local pid f
  # An interrupted load run: stop its wrk (and the `timeout` around it).
  if [ -n "${WRK_JOB:-}" ]; then pkill -TERM -P "$WRK_JOB" 2>/dev/null || true; fi
  # Servers whose pid the script has not read yet (spawned, not ready).
  if [ -n "$PIDDIR" ] && [ -d "$PIDDIR" ]; then
    for f in "$PIDDIR"/*.pid; do
      [ -f "$f" ] && SERVER_PIDS+=("$(cat "$f")")
    done
  fi
  for pid in "${SERVER_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    if kill -0 "$pid" 2>/dev/null; then
      # spawn_ready.py starts each server in its own session: its pid is the
      # process-group id, so this reaches the server and nothing else.
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  for pid in "${SERVER_PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; fi
  done
  SERVER_PIDS=()
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

stop_server() { # pid
  local pid="$1" keep=() p
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && { kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; }
  for p in "${SERVER_PIDS[@]:-}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  SERVER_PIDS=("${keep[@]:-}")
  grep -lx "$pid" "$PIDDIR"/*.pid 2>/dev/null | xargs -r rm -f
}

say() { printf '%s\n' "$*"; }
hr() { say "------------------------------------------------------------------------------"; }
die() { say "ERROR: $*" >&2; exit 1; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
kv() { # KEY LINE -> value of KEY=value in LINE
  printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1
}
status_kb() { # PID FIELD
  awk -v f="$2:" '$1==f {print $2}' "/proc/$1/status"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k/1024 }'; }
CLK_TCK="$(getconf CLK_TCK)"
proc_cpu_ticks() { # PID -> utime+stime of the whole process (all threads), clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
machine_busy_ticks() { # -> "busy total": user+nice+system ticks over all CPUs since boot, and all ticks
  # irq/softirq time is left out: loopback packet processing is charged there,
  # not to any process, and it would read as "other work".
  awk '/^cpu / { b = $2 + $3 + $4; print b, b + $5 + $6 + $7 + $8 + $9 }' /proc/stat
}

# ---------------------------------------------------------------- setup
START_ALL=$(date +%s)
say "== Portcullis token benchmark (bench/iam-tokens.sh) =="
say "date:      $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
say "git:       $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$([ -z "$(git -C "$ROOT" status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] || echo ' + uncommitted changes under crates/, Cargo.toml or Cargo.lock (built as they are)')"
say "nproc:     $(nproc)"
say "cpu:       $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
say "memory:    $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
say "kernel:    $(uname -r)"

if ! command -v wrk >/dev/null 2>&1; then
  say "installing wrk (apt)..."
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
command -v node >/dev/null 2>&1 || die "node is required for the peer (oidc-provider)"
command -v python3 >/dev/null 2>&1 || die "python3 is required (bench/lib/spawn_ready.py)"
WANT_OP="$(node -p "require('$PEER_DIR/package.json').dependencies['oidc-provider']")"
HAVE_OP="$(node -p "try { require('$PEER_DIR/node_modules/oidc-provider/package.json').version } catch { '' }" 2>/dev/null || true)"
if [ "$HAVE_OP" != "$WANT_OP" ]; then
  say "installing peer dependencies (npm ci)..."
  (cd "$PEER_DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
say "wrk:       $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')"
PEER_NODE="$(command -v "$PEER_NODE")" || die "BENCH_PEER_NODE: no such node binary"
say "node:      $("$PEER_NODE" --version) ($PEER_NODE) for the peer, oidc-provider $(node -p "require('$PEER_DIR/node_modules/oidc-provider/package.json').version")"
say "rustc:     $(rustc --version 2>/dev/null || echo '?')"

rm -rf "$WORKDIR"
mkdir -p "$WORKDIR/pids"
PIDDIR="$WORKDIR/pids"

if [ "$SKIP_BUILD" != "1" ]; then
  say "building: cargo build --release -p portcullis (log: $WORKDIR/build.log)"
  b0=$(date +%s)
  if ! (cd "$ROOT" && cargo build --release -p portcullis >"$WORKDIR/build.log" 2>&1); then
    tail -30 "$WORKDIR/build.log"; die "release build failed"
  fi
  say "build:     done in $(( $(date +%s) - b0 )) s"
fi
[ -x "$BIN" ] || die "$BIN not found (build it, or unset BENCH_SKIP_BUILD)"
say "binary:    $BIN ($(stat -c %s "$BIN" | awk '{printf "%.1f MiB", $1/1048576}'))"

for p in $PC_PORT $PC_ADMIN_PORT $PEER_PORT; do
  port_free "$p" || die "port 127.0.0.1:$p is already in use"
done

WRK_ARGS=(-t"$THREADS" -c"$CONNS" --latency -s "$LUA")
say ""
say "wrk command (measured run; warm-up is the same with -d${WARMUP}s):"
say "  BENCH_TOKEN_PATH=<token path> wrk -t$THREADS -c$CONNS -d${DURATION}s --latency -s bench/token.lua <base URL>"
say "  request: POST <token path>, Authorization: Basic base64($CLIENT_ID:<secret>),"
say "           Content-Type: application/x-www-form-urlencoded, body: $BODY"
say "  Portcullis: http://127.0.0.1:$PC_PORT/oauth2/token   oidc-provider: http://127.0.0.1:$PEER_PORT/token"

# ---------------------------------------------------------------- one benchmark
# Result arrays, keyed by run label.
declare -A R_RPS R_P50 R_P99 R_NON2XX R_ERRS R_TOKENS R_RSS R_HWM R_READY R_MEASURED_REQ R_SRVTOKENS \
  R_SRVCPU R_TPCPU R_OTHER R_CONNECT

run_wrk() { # LOGFILE DURATION_S WRK_CPUS BASE TOKEN_PATH -> prints WRKRESULT line
  local log="$1" dur="$2" cpus="$3" base="$4" path="$5" pre=()
  [ -n "$cpus" ] && pre=(taskset -c "$cpus")
  BENCH_TOKEN_PATH="$path" BENCH_BASIC="$BASIC" BENCH_BODY="$BODY" \
    timeout $((dur + 20)) "${pre[@]}" wrk "${WRK_ARGS[@]}" -d"${dur}s" "$base" >"$log" 2>&1 || true
  # This function runs in a command-substitution subshell, so the children's
  # CPU time reported by `times` is wrk's (plus a negligible `timeout`).
  local cpu line
  times >"$log.times" # a builtin with a redirection runs in this shell, not a new subshell
  cpu="$(tail -1 "$log.times" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.2f", t }')"
  line="$(grep '^WRKRESULT' "$log")" || { cat "$log" >&2; return 0; }
  echo "$line wrk_cpu_s=$cpu"
}

# run_wrk in the background and `wait` for it: `wait` returns at once when a
# trapped signal arrives, so an interrupted run stops without waiting for wrk.
WRK_JOB=""
wrk_bg() { # OUTFILE ARGS... (as run_wrk); the WRKRESULT line lands in OUTFILE
  local out="$1"; shift
  run_wrk "$@" >"$out" &
  WRK_JOB=$!
  wait "$WRK_JOB" || true
  WRK_JOB=""
}

ok_count() { # WRKRESULT line -> 2xx responses
  local line="$1"
  echo $(( $(kv requests "$line") - $(kv non2xx "$line") ))
}

# bench_server LABEL BASE TOKEN_PATH READY_URL SERVER_CPUS WRK_CPUS MIN_TOKENS STDOUT -- CMD...
bench_server() {
  local label="$1" base="$2" path="$3" ready_url="$4" scpus="$5" wcpus="$6" min="$7" sout="$8"
  shift 9
  local cmd=("$@") safe="${label//[^a-zA-Z0-9]/_}"
  [ -n "$scpus" ] && cmd=(taskset -c "$scpus" "${cmd[@]}")
  hr
  say "[$label]"
  say "  server: ${cmd[*]}"
  local spawn pid ready
  spawn="$(python3 "$HERE/lib/spawn_ready.py" --url "$ready_url" --interval-ms 5 --timeout-s 30 \
            --pidfile "$PIDDIR/$safe.pid" \
            --stdout "$sout" --stderr "$WORKDIR/$safe.stderr" -- "${cmd[@]}")" || {
    say "  $spawn"; tail -20 "$WORKDIR/$safe.stderr" "$sout" 2>/dev/null || true; die "$label did not become ready"; }
  pid="$(kv PID "$spawn")"; ready="$(kv READY_MS "$spawn")"
  SERVER_PIDS+=("$pid")
  R_CONNECT[$label]="$(kv CONNECT_MS "$spawn")"
  say "  pid $pid; spawn -> first 200 from $ready_url: ${ready} ms" \
      "(first TCP connect accepted at ${R_CONNECT[$label]} ms; $(kv POLLS "$spawn") polls, 5 ms apart)"

  say "  token check:"
  timeout 20 node "$HERE/lib/check_token.mjs" "$base" "$BASIC" "$BODY" 2>&1 | sed 's/^/    /' | tee "$WORKDIR/$safe.check"
  grep -q '^    TOKEN_OK\|^TOKEN_OK' "$WORKDIR/$safe.check" || die "$label: token check failed"
  local tokens=1

  local w m
  wrk_bg "$WORKDIR/$safe.warmup.res" "$WORKDIR/$safe.warmup.wrk" "$WARMUP" "$wcpus" "$base" "$path"
  w="$(cat "$WORKDIR/$safe.warmup.res")"
  [ -n "$w" ] || die "$label: warm-up wrk run failed"
  tokens=$(( tokens + $(ok_count "$w") ))
  say "  warm-up ${WARMUP}s: $(kv requests "$w") requests, $(kv rps "$w")/s, non-2xx $(kv non2xx "$w")"
  local s0 b0 s1 b1 mb0 mb1
  s0="$(proc_cpu_ticks "$pid")"; read -r b0 mb0 <<<"$(machine_busy_ticks)"
  wrk_bg "$WORKDIR/$safe.measured.res" "$WORKDIR/$safe.measured.wrk" "$DURATION" "$wcpus" "$base" "$path"
  m="$(cat "$WORKDIR/$safe.measured.res")"
  [ -n "$m" ] || die "$label: measured wrk run failed"
  s1="$(proc_cpu_ticks "$pid")"; read -r b1 mb1 <<<"$(machine_busy_ticks)"
  # CPU use during the measured run: server, wrk, and everything else on the
  # machine (anything else busy would distort the comparison).
  local srv_cpu wrk_cpu all_cpu wall other
  srv_cpu="$(awk -v a="$s0" -v b="$s1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
  all_cpu="$(awk -v a="$b0" -v b="$b1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }')"
  wrk_cpu="$(kv wrk_cpu_s "$m")"
  wall="$(kv duration_s "$m")"
  other="$(awk -v a="$all_cpu" -v s="$srv_cpu" -v w="$wrk_cpu" 'BEGIN { o = a - s - w; if (o < 0) o = 0; printf "%.2f", o }')"
  tokens=$(( tokens + $(ok_count "$m") ))
  say "  measured ${DURATION}s (wrk output):"
  sed -n '/Thread Stats/,/Transfer/p' "$WORKDIR/$safe.measured.wrk" | sed 's/^/    /'
  say "  CPU during the measured run (${wall}s wall, $(nproc) CPUs): server ${srv_cpu} s ($(awk -v c="$srv_cpu" -v w="$wall" 'BEGIN { printf "%.2f", c / w }') cores)," \
      "wrk ${wrk_cpu} s ($(awk -v c="$wrk_cpu" -v w="$wall" 'BEGIN { printf "%.2f", c / w }') cores), everything else ${other} s;" \
      "$(awk -v n="$(ok_count "$m")" -v c="$srv_cpu" 'BEGIN { if (c > 0) printf "%.0f", n / c; else print "n/a" }') tokens per server CPU-second"

  # Top-up: keep the same load until the server has served `min` tokens.
  local rps rounds=0 remaining dur spent=0
  rps="$(kv rps "$m")"
  while [ "$tokens" -lt "$min" ] && [ "$rounds" -lt 4 ] && [ "$spent" -lt "$MAX_TOPUP_S" ]; do
    remaining=$(( min - tokens ))
    dur="$(awk -v r="$remaining" -v s="$rps" 'BEGIN { d = int(r / (s > 1 ? s : 1) * 1.10) + 2; print d }')"
    [ "$dur" -gt $(( MAX_TOPUP_S - spent )) ] && dur=$(( MAX_TOPUP_S - spent ))
    [ "$dur" -lt 1 ] && break
    local t
    wrk_bg "$WORKDIR/$safe.topup$rounds.res" "$WORKDIR/$safe.topup$rounds.wrk" "$dur" "$wcpus" "$base" "$path"
    t="$(cat "$WORKDIR/$safe.topup$rounds.res")"
    [ -n "$t" ] || die "$label: top-up wrk run failed"
    tokens=$(( tokens + $(ok_count "$t") ))
    R_NON2XX[$label]=$(( ${R_NON2XX[$label]:-0} + $(kv non2xx "$t") ))
    say "  top-up ${dur}s: $(kv requests "$t") requests at $(kv rps "$t")/s, non-2xx $(kv non2xx "$t") -> $tokens tokens so far"
    spent=$(( spent + dur )); rounds=$(( rounds + 1 ))
  done

  kill -0 "$pid" 2>/dev/null || die "$label (pid $pid) is no longer running after the load"
  local rss hwm
  rss="$(status_kb "$pid" VmRSS)"; hwm="$(status_kb "$pid" VmHWM)"
  say "  after $tokens tokens: VmRSS ${rss} kB ($(mib "$rss") MiB), VmHWM ${hwm} kB ($(mib "$hwm") MiB)"
  if [ "$tokens" -lt "$min" ]; then
    say "  NOTE: only $tokens tokens served (< $min) within the top-up cap of ${MAX_TOPUP_S}s"
  fi

  # Portcullis counts what it issued; cross-check against wrk.
  local srv=""
  if [ "$path" = "/oauth2/token" ]; then
    srv="$(curl -s --max-time 5 "$base/metrics" | awk '/^portcullis_iam_tokens_issued_total/ {s += $NF} END {if (NR) printf "%d", s}')"
    [ -n "$srv" ] && say "  server metric portcullis_iam_tokens_issued_total = $srv"
    local errs
    errs="$(curl -s --max-time 5 "$base/metrics" | grep '^portcullis_iam_token_errors_total' || true)"
    [ -n "$errs" ] && say "  server metric: $errs"
  fi

  R_RPS[$label]="$(kv rps "$m")"
  R_P50[$label]="$(kv lat_p50_ms "$m")"
  R_P99[$label]="$(kv lat_p99_ms "$m")"
  R_NON2XX[$label]=$(( ${R_NON2XX[$label]:-0} + $(kv non2xx "$w") + $(kv non2xx "$m") ))
  R_ERRS[$label]=$(( $(kv connect_err "$m") + $(kv read_err "$m") + $(kv write_err "$m") + $(kv timeout_err "$m") ))
  R_TOKENS[$label]="$tokens"
  R_RSS[$label]="$rss"; R_HWM[$label]="$hwm"; R_READY[$label]="$ready"
  R_MEASURED_REQ[$label]="$(kv requests "$m")"
  R_SRVCPU[$label]="$(awk -v c="$srv_cpu" -v w="$wall" 'BEGIN { printf "%.2f", c / w }')"
  R_TPCPU[$label]="$(awk -v n="$(ok_count "$m")" -v c="$srv_cpu" 'BEGIN { if (c > 0) printf "%.0f", n / c; else print "n/a" }')"
  R_OTHER[$label]="$(awk -v o="$other" -v w="$wall" 'BEGIN { printf "%.2f", o / w }')"
  R_SRVTOKENS[$label]="$srv"

  stop_server "$pid"
  # Anything the server logged (warn level and above for Portcullis' primary run).
  local lines
  if [ "$sout" != /dev/null ]; then
    lines=$(cat "$sout" "$WORKDIR/$safe.stderr" 2>/dev/null | wc -l)
    say "  server log: $lines lines (stdout $sout, stderr $WORKDIR/$safe.stderr)"
    if [ "$lines" -gt 0 ]; then cat "$sout" "$WORKDIR/$safe.stderr" 2>/dev/null | head -15 | cut -c1-400 | sed 's/^/    | /'; fi
  else
    lines=$(wc -l <"$WORKDIR/$safe.stderr")
    say "  server stdout -> /dev/null; stderr: $lines lines"
    if [ "$lines" -gt 0 ]; then head -15 "$WORKDIR/$safe.stderr" | cut -c1-400 | sed 's/^/    | /'; fi
  fi
}

PC_CMD=()
portcullis_cmd() { # LOGLEVEL DBFILE -> PC_CMD
  PC_CMD=("$BIN" --log-format json --log "$1" iam serve --config "$CONFIG"
    --listen "127.0.0.1:$PC_PORT" --admin-listen "127.0.0.1:$PC_ADMIN_PORT"
    --database-url "sqlite://$2")
}

# Fresh master key per run (the database is fresh too).
export PORTCULLIS_MASTER_KEY
PORTCULLIS_MASTER_KEY="$(openssl rand -base64 32)"

PC_BASE="http://127.0.0.1:$PC_PORT"
PEER_BASE="http://127.0.0.1:$PEER_PORT"
L_PC="Portcullis"
L_PEER="oidc-provider"
L_PC_INFO="Portcullis --log info"
L_PC_PIN="Portcullis pinned"
L_PEER_PIN="oidc-provider pinned"

# Other work on the machine (a compiler, a test suite) would distort both
# servers' figures: wait, bounded, for an idle machine.
busy_cores_1s() {
  local b0 t0 b1 t1
  read -r b0 t0 <<<"$(machine_busy_ticks)"; sleep 1; read -r b1 t1 <<<"$(machine_busy_ticks)"
  awk -v a="$b0" -v b="$b1" -v t="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / t }'
}
hr
q0=$(date +%s); busy="$(busy_cores_1s)"
while awk -v b="$busy" -v q="$QUIET_CORES" 'BEGIN { exit !(b >= q) }' && [ $(( $(date +%s) - q0 )) -lt "$QUIET_WAIT_S" ]; do
  say "machine busy (${busy} cores used by other processes); waiting for it to be idle..."
  sleep 4; busy="$(busy_cores_1s)"
done
if awk -v b="$busy" -v q="$QUIET_CORES" 'BEGIN { exit !(b >= q) }'; then
  say "WARNING: machine still busy after ${QUIET_WAIT_S}s (${busy} cores used by other processes); figures below are distorted"
  ps -eo pcpu,comm --sort=-pcpu | sed -n 2,4p | sed 's/^/  busy: /'
else
  say "machine idle before the load: ${busy} cores busy (1 s sample)"
fi

T_LOAD0=$(date +%s)

# 1. Portcullis, audit logging at warn (no per-token lines).
portcullis_cmd warn "$WORKDIR/portcullis.db"
bench_server "$L_PC" "$PC_BASE" /oauth2/token "$PC_BASE/readyz" "" "" "$MIN_TOKENS" \
  "$WORKDIR/portcullis.stdout" -- "${PC_CMD[@]}"

# 2. oidc-provider, one Node process.
bench_server "$L_PEER" "$PEER_BASE" /token "$PEER_BASE/.well-known/openid-configuration" "" "" "$MIN_TOKENS" \
  "$WORKDIR/oidc-provider.stdout" -- env NODE_ENV=production PEER_PORT="$PEER_PORT" "$PEER_NODE" "$PEER_DIR/server.mjs"

# 3. Portcullis with the audit log on (info), stdout to /dev/null.
if [ "$AUDIT_INFO" = "1" ]; then
  portcullis_cmd info "$WORKDIR/portcullis-info.db"
  bench_server "$L_PC_INFO" "$PC_BASE" /oauth2/token "$PC_BASE/readyz" "" "" 0 \
    /dev/null -- "${PC_CMD[@]}"
fi

# 4. Pinned: server on CPU 0, wrk on CPU 1.
if [ "$PINNED" = "1" ] && [ "$(nproc)" -ge 2 ]; then
  portcullis_cmd warn "$WORKDIR/portcullis-pinned.db"
  bench_server "$L_PC_PIN" "$PC_BASE" /oauth2/token "$PC_BASE/readyz" 0 1 0 \
    "$WORKDIR/portcullis-pinned.stdout" -- "${PC_CMD[@]}"
  bench_server "$L_PEER_PIN" "$PEER_BASE" /token "$PEER_BASE/.well-known/openid-configuration" 0 1 0 \
    "$WORKDIR/oidc-provider-pinned.stdout" -- env NODE_ENV=production PEER_PORT="$PEER_PORT" "$PEER_NODE" "$PEER_DIR/server.mjs"
fi
T_LOAD1=$(date +%s)

# ---------------------------------------------------------------- report
hr
say ""
say "RESULTS  (wrk -t$THREADS -c$CONNS -d${DURATION}s --latency after a ${WARMUP}s warm-up; nproc=$(nproc))"
say ""
fmt='%-22s %9s %7s %7s %7s %8s %8s %8s %8s %9s %10s %7s\n'
# shellcheck disable=SC2059
printf "$fmt" "server" "tokens/s" "p50 ms" "p99 ms" "non-2xx" "tokens" "RSS MiB" "peak MiB" "ready ms" "srv cores" "tok/CPU-s" "other"
# shellcheck disable=SC2059
printf "$fmt" "----------------------" "--------" "------" "------" "-------" "------" "-------" "--------" "--------" "---------" "---------" "-----"
for l in "$L_PC" "$L_PEER" "$L_PC_INFO" "$L_PC_PIN" "$L_PEER_PIN"; do
  [ -n "${R_RPS[$l]:-}" ] || continue
  # shellcheck disable=SC2059
  printf "$fmt" "$l" "${R_RPS[$l]}" "${R_P50[$l]}" "${R_P99[$l]}" "${R_NON2XX[$l]}" "${R_TOKENS[$l]}" \
    "$(mib "${R_RSS[$l]}")" "$(mib "${R_HWM[$l]}")" "${R_READY[$l]}" "${R_SRVCPU[$l]}" "${R_TPCPU[$l]}" "${R_OTHER[$l]}"
done
say ""
say "  tokens/s, p50, p99: the measured ${DURATION}s run only. non-2xx: warm-up + measured + top-up."
say "  tokens: 2xx token responses the server served in total (check + warm-up + measured + top-up);"
say "  RSS = VmRSS read after those tokens, peak = VmHWM (/proc/PID/status). 1 MiB = 1024 KiB."
say "  Portcullis runs with --log warn (audit log lines are info: off) except the '--log info' row"
say "  (one JSON audit line per token written to stdout, stdout -> /dev/null)."
say "  oidc-provider: one Node.js process (single-threaded JS; no cluster)."
say "  Unpinned rows: server and wrk share both cores. Pinned rows: server taskset -c 0, wrk taskset -c 1."
say "  srv cores: server CPU time / wall time in the measured run (/proc/PID/stat, all threads);"
say "  tok/CPU-s: tokens per server CPU-second; other: cores used by everything but server and wrk"
say "  (from /proc/stat) -- near 0 means nothing else on the machine competed for the CPUs."
[ -n "${R_SRVTOKENS[$L_PC]:-}" ] && say "  Portcullis' own counter (primary run): ${R_SRVTOKENS[$L_PC]} tokens issued; wrk+check counted ${R_TOKENS[$L_PC]}."
say ""
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
RATIO="$(ratio "${R_RPS[$L_PC]}" "${R_RPS[$L_PEER]}")"
say "ratio Portcullis / oidc-provider, tokens/s (unpinned): ${RATIO}x"
if [ -n "${R_RPS[$L_PC_PIN]:-}" ] && [ -n "${R_RPS[$L_PEER_PIN]:-}" ]; then
  say "ratio Portcullis / oidc-provider, tokens/s (pinned, 1 core each): $(ratio "${R_RPS[$L_PC_PIN]}" "${R_RPS[$L_PEER_PIN]}")x"
fi
if [ -n "${R_RPS[$L_PC_INFO]:-}" ]; then
  say "audit logging cost: --log info runs at $(ratio "${R_RPS[$L_PC_INFO]}" "${R_RPS[$L_PC]}")x the tokens/s of --log warn (${R_RPS[$L_PC_INFO]} vs ${R_RPS[$L_PC]})"
fi
say ""
say "TARGETS (primary, unpinned Portcullis run, --log warn)"
verdict() { if [ "$1" = 1 ]; then echo "MET"; else echo "NOT MET"; fi; }
t1=$(awk -v r="$RATIO" 'BEGIN { print (r + 0 >= 8) ? 1 : 0 }')
t2=$(awk -v k="${R_RSS[$L_PC]}" -v n="${R_TOKENS[$L_PC]}" -v m="$MIN_TOKENS" 'BEGIN { print (k <= 30 * 1024 && n >= m) ? 1 : 0 }')
t3=$(awk -v r="${R_READY[$L_PC]}" 'BEGIN { print (r + 0 < 200) ? 1 : 0 }')
say "  tokens/s >= 8x oidc-provider:       ${RATIO}x                     -> $(verdict "$t1")"
say "  RSS <= 30 MiB after >= $MIN_TOKENS tokens: $(mib "${R_RSS[$L_PC]}") MiB after ${R_TOKENS[$L_PC]} tokens -> $(verdict "$t2")"
say "  ready < 200 ms:                     ${R_READY[$L_PC]} ms               -> $(verdict "$t3")"
ANY_BAD=0
for l in "$L_PC" "$L_PEER" "$L_PC_INFO" "$L_PC_PIN" "$L_PEER_PIN"; do
  [ -n "${R_NON2XX[$l]:-}" ] || continue
  if [ "${R_NON2XX[$l]}" != 0 ] || [ "${R_ERRS[$l]:-0}" != 0 ]; then
    say "  WARNING: $l: ${R_NON2XX[$l]} non-2xx responses, ${R_ERRS[$l]:-0} socket errors/timeouts in the measured run"
    ANY_BAD=1
  fi
done
[ "$ANY_BAD" = 0 ] && say "  all responses 2xx, no socket errors, in every run"
NOISY=0
for l in "$L_PC" "$L_PEER" "$L_PC_INFO" "$L_PC_PIN" "$L_PEER_PIN"; do
  [ -n "${R_OTHER[$l]:-}" ] || continue
  if awk -v o="${R_OTHER[$l]}" -v q="$QUIET_CORES" 'BEGIN { exit !(o >= q) }'; then
    say "  WARNING: during '$l' other processes used ${R_OTHER[$l]} cores: that row is distorted"
    NOISY=1
  fi
done
if [ "$NOISY" = 0 ]; then
  say "  no run shared the machine with other work (other < $QUIET_CORES cores in every measured run)"
else
  say "  => the verdicts above are not reliable: run again on an idle machine"
fi
say ""
say "load phase took $(( T_LOAD1 - T_LOAD0 )) s; whole script $(( $(date +%s) - START_ALL )) s. Scratch files: $WORKDIR"
