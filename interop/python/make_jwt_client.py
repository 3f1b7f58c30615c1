#!/usr/bin/env python3
"""Registers a private_key_jwt client at a running Portcullis, for running the
interop scripts by hand (the Rust harness creates its own).

Generates an EC P-256 key, writes it as PKCS#8 PEM, and POSTs its public JWK
(kid = RFC 7638 thumbprint, alg ES256) to the admin API.

usage: make_jwt_client.py ADMIN_URL ADMIN_TOKEN_FILE CLIENT_ID KEY_OUT.pem
Prints the shell exports for PORTCULLIS_JWT_CLIENT_ID / PORTCULLIS_JWT_CLIENT_KEY.
"""

import base64
import hashlib
import json
import os
import sys
import urllib.error
import urllib.request

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    admin_url, token_file, client_id, key_out = sys.argv[1:]
    with open(token_file) as f:
        admin_token = f.read().strip()

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)

    nums = key.public_key().public_numbers()
    x = b64u(nums.x.to_bytes(32, "big"))
    y = b64u(nums.y.to_bytes(32, "big"))
    # RFC 7638 §3.2: required members only, lexicographic order, no whitespace.
    canonical = json.dumps({"crv": "P-256", "kty": "EC", "x": x, "y": y},
                           separators=(",", ":"), sort_keys=True)
    kid = b64u(hashlib.sha256(canonical.encode()).digest())
    jwk = {"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid,
           "alg": "ES256", "use": "sig"}

    body = json.dumps({
        "client_id": client_id,
        "allowed_scopes": ["orders:read", "orders:write"],
        "allowed_audiences": ["orders-api"],
        "default_audiences": ["orders-api"],
        "jwks": {"keys": [jwk]},
    }).encode()
    req = urllib.request.Request(
        admin_url.rstrip("/") + "/admin/clients", data=body, method="POST",
        headers={"Authorization": f"Bearer {admin_token}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        print(f"admin API refused the client: HTTP {e.code}: {e.read().decode(errors='replace')}",
              file=sys.stderr)
        return 1
    print(f"export PORTCULLIS_JWT_CLIENT_ID='{client_id}'")
    print(f"export PORTCULLIS_JWT_CLIENT_KEY='{os.path.abspath(key_out)}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
