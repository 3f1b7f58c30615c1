# Sourced by run.sh and callgrind.sh: the gateway configuration both measure.
# Needs BIN, WORKDIR, GW_PORT, GW_ADMIN_PORT and UP_PORT set.

# new_api_key: a key for the consumer "bench" from `portcullis apikeys create`;
# sets API_KEY (sent by the load generator) and API_DIGEST (the gateway
# stores only the digest), and KEYOUT (the command's whole output).
new_api_key() {
  KEYOUT="$("$BIN" apikeys create --consumer bench)"
  API_KEY="$(printf '%s\n' "$KEYOUT" | awk '/^ *pak_/ {print $1; exit}')"
  API_DIGEST="$(printf '%s\n' "$KEYOUT" | sed -n 's/^digest = "\(sha256:[0-9a-f]*\)"$/\1/p' | head -1)"
}

# gateway_config [IAM_PORT]: gateway.toml on stdout, with the routes /open
# (anonymous) and /key (API key), and /jwt (a JWT of the IAM on IAM_PORT,
# audience "gateway") when IAM_PORT is given.
gateway_config() {
  local iam_port="${1:-}"
  cat <<EOF
listen = "127.0.0.1:$GW_PORT"
admin_listen = "127.0.0.1:$GW_ADMIN_PORT"
signing_key_file = "$WORKDIR/gw-key.pem"

[limits]
max_header_bytes = 16384
max_body_bytes = 1048576

[timeouts]
request_ms = 5000

[[upstreams]]
name = "echo"
targets = ["127.0.0.1:$UP_PORT"]

[[consumers]]
name = "bench"
scopes = ["read"]
[[consumers.api_keys]]
digest = "$API_DIGEST"

[[authenticators]]
name = "keys"
type = "api_key"

[[routes]]
name = "open"
path_prefix = "/open"
upstream = "echo"
auth = ["anonymous"]

[[routes]]
name = "key"
path_prefix = "/key"
upstream = "echo"
auth = ["keys"]
EOF
  [ -n "$iam_port" ] || return 0
  cat <<EOF

[[authenticators]]
name = "iam"
type = "jwt"
issuer = "http://127.0.0.1:$iam_port"
audience = "gateway"

[[routes]]
name = "jwt"
path_prefix = "/jwt"
upstream = "echo"
auth = ["iam"]
EOF
}
