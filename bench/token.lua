-- wrk script for bench/iam-tokens.sh: every request is an OAuth 2.0
-- client-credentials token request authenticated with client_secret_basic.
--
--   BENCH_TOKEN_PATH   request path (default /oauth2/token; oidc-provider: /token)
--   BENCH_BASIC        base64(client_id:secret) (default: bench-client's)
--   BENCH_BODY         form body (default grant_type=client_credentials&scope=read)
--
-- done() prints one machine-readable line, `WRKRESULT k=v ...`, for the
-- driver script; wrk's own human-readable report is printed above it.

local path = os.getenv("BENCH_TOKEN_PATH") or "/oauth2/token"
local basic = os.getenv("BENCH_BASIC")
  -- base64("bench-client:bench-secret-0123456789abcdef0123456789abcdef")
  or "YmVuY2gtY2xpZW50OmJlbmNoLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZg=="
local body = os.getenv("BENCH_BODY") or "grant_type=client_credentials&scope=read"

wrk.method = "POST"
wrk.path = path
wrk.body = body
wrk.headers["Authorization"] = "Basic " .. basic
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"

-- No request() function: wrk then sends this fixed request (Host header
-- added by wrk) without calling into Lua per request.

done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "WRKRESULT requests=%d duration_s=%.3f rps=%.1f non2xx=%d connect_err=%d read_err=%d write_err=%d timeout_err=%d " ..
    "lat_mean_ms=%.3f lat_p50_ms=%.3f lat_p90_ms=%.3f lat_p99_ms=%.3f lat_max_ms=%.3f\n",
    summary.requests, secs, summary.requests / secs, e.status, e.connect, e.read, e.write, e.timeout,
    latency.mean / 1000, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
