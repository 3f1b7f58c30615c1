#!/usr/bin/env python3
"""Interop: authlib (requests OAuth2Session) + PyJWT against a running Portcullis.

Environment (all required):
  PORTCULLIS_ISSUER          e.g. http://127.0.0.1:19500
  PORTCULLIS_CLIENT_ID       secret client (scopes orders:read orders:write)
  PORTCULLIS_CLIENT_SECRET
  PORTCULLIS_JWT_CLIENT_ID   private_key_jwt client, same scopes/audience
  PORTCULLIS_JWT_CLIENT_KEY  path of its EC P-256 PKCS#8 PEM private key
  PORTCULLIS_AUDIENCE        e.g. orders-api

Prints one line per step ("ok - <step>" / "not ok - <step>: <why>") and exits
1 on the first failure, 0 when every step passed. Talks only to the issuer.
"""

import os
import sys
import time
import traceback
from urllib.parse import urlsplit

import jwt
import requests
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from joserfc.jwk import ECKey

TIMEOUT = 10
SCOPES = "orders:read orders:write"
STEP_COUNT = 0


class CheckFailed(Exception):
    pass


def check(cond, why):
    if not cond:
        raise CheckFailed(why)


def step(name, fn):
    """Runs one step; prints ok/not ok; exits on the first failure."""
    global STEP_COUNT
    STEP_COUNT += 1
    try:
        result = fn()
    except CheckFailed as e:
        fail(name, str(e))
    except OAuthError as e:
        fail(name, f"OAuth error {e.error!r}: {e.description}")
    except requests.RequestException as e:
        fail(name, f"HTTP failure: {e!r}")
    except Exception as e:  # a library refused something: show where
        tb = traceback.extract_tb(e.__traceback__)[-1]
        fail(name, f"{type(e).__name__}: {e} (at {tb.filename}:{tb.lineno})")
    print(f"ok - {name}", flush=True)
    return result


def fail(name, why):
    why = " ".join(str(why).split())  # keep it on one line
    print(f"not ok - {name}: {why}", flush=True)
    print(f"# {STEP_COUNT - 1} step(s) passed before the failure", flush=True)
    sys.exit(1)


def env():
    names = [
        "PORTCULLIS_ISSUER",
        "PORTCULLIS_CLIENT_ID",
        "PORTCULLIS_CLIENT_SECRET",
        "PORTCULLIS_JWT_CLIENT_ID",
        "PORTCULLIS_JWT_CLIENT_KEY",
        "PORTCULLIS_AUDIENCE",
    ]
    missing = [n for n in names if not os.environ.get(n)]
    check(not missing, f"missing environment variable(s): {', '.join(missing)}")
    e = {n: os.environ[n] for n in names}
    check(os.path.isfile(e["PORTCULLIS_JWT_CLIENT_KEY"]),
          f"PORTCULLIS_JWT_CLIENT_KEY={e['PORTCULLIS_JWT_CLIENT_KEY']} is not a file")
    return e


def origin(url):
    p = urlsplit(url)
    return (p.scheme, p.hostname, p.port)


def get_json(url):
    resp = requests.get(url, timeout=TIMEOUT, headers={"Accept": "application/json"})
    check(resp.status_code == 200, f"GET {url}: HTTP {resp.status_code}: {resp.text[:200]}")
    ctype = resp.headers.get("Content-Type", "")
    check(ctype.startswith("application/json"), f"GET {url}: Content-Type {ctype!r}")
    body = resp.json()
    check(isinstance(body, dict), f"GET {url}: body is not a JSON object")
    return body


def main():
    e = step("environment", env)
    issuer = e["PORTCULLIS_ISSUER"]
    audience = e["PORTCULLIS_AUDIENCE"]
    client_id = e["PORTCULLIS_CLIENT_ID"]
    client_secret = e["PORTCULLIS_CLIENT_SECRET"]
    jwt_client_id = e["PORTCULLIS_JWT_CLIENT_ID"]

    # ---- discovery -------------------------------------------------------
    def discovery():
        # RFC 8414 §3: /.well-known/oauth-authorization-server, issuer without path.
        md = get_json(issuer.rstrip("/") + "/.well-known/oauth-authorization-server")
        check(md.get("issuer") == issuer,
              f"issuer {md.get('issuer')!r} != PORTCULLIS_ISSUER {issuer!r} (RFC 8414 §3.3)")
        for key in ("token_endpoint", "jwks_uri", "introspection_endpoint",
                    "revocation_endpoint"):
            check(isinstance(md.get(key), str) and md[key], f"metadata has no {key}")
            # Everything this script talks to must be on the issuer's origin.
            check(origin(md[key]) == origin(issuer),
                  f"{key} {md[key]!r} is not on the issuer's origin")
        for method in ("client_secret_basic", "client_secret_post", "private_key_jwt"):
            check(method in md.get("token_endpoint_auth_methods_supported", []),
                  f"token_endpoint_auth_methods_supported lacks {method}")
        check("client_credentials" in md.get("grant_types_supported", []),
              "grant_types_supported lacks client_credentials")
        return md

    md = step("discovery: RFC 8414 metadata, issuer exact, endpoints present", discovery)

    def authlib_validate():
        # authlib's RFC 8414 validator, key by key. response_types_supported is
        # checked on its own below: Portcullis has no authorization endpoint
        # and sends [] there, which authlib's validator rejects as "required"
        # (see interop/README.md, known differences).
        meta = AuthorizationServerMetadata(md)
        for key in AuthorizationServerMetadata.REGISTRY_KEYS:
            if key == "response_types_supported":
                continue
            getattr(meta, f"validate_{key}")()
        check(isinstance(md.get("response_types_supported"), list),
              "response_types_supported is not a JSON array (RFC 8414 §2: REQUIRED)")

    step("discovery: metadata passes authlib's RFC 8414 validation", authlib_validate)

    def oidc_discovery():
        oidc = get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
        check(oidc.get("issuer") == issuer,
              f"openid-configuration issuer {oidc.get('issuer')!r} != {issuer!r}")
        for key in ("token_endpoint", "jwks_uri", "introspection_endpoint",
                    "revocation_endpoint"):
            check(oidc.get(key) == md.get(key),
                  f"openid-configuration {key} {oidc.get(key)!r} != {md.get(key)!r}")

    step("discovery: openid-configuration agrees", oidc_discovery)

    token_endpoint = md["token_endpoint"]
    jwks = jwt.PyJWKClient(md["jwks_uri"], cache_keys=True, timeout=TIMEOUT)

    # ---- helpers ---------------------------------------------------------
    def check_token_response(tok, want_scope):
        check("access_token" in tok, f"no access_token in token response: {dict(tok)}")
        check(str(tok.get("token_type", "")).lower() == "bearer",
              f"token_type {tok.get('token_type')!r}, expected Bearer")
        check(isinstance(tok.get("expires_in"), int) and tok["expires_in"] > 0,
              f"expires_in {tok.get('expires_in')!r} is not a positive integer")
        check("refresh_token" not in tok,
              "refresh_token issued for client_credentials (RFC 6749 §4.4.3: SHOULD NOT)")
        if want_scope is not None and "scope" in tok:
            check(set(tok["scope"].split()) == set(want_scope.split()),
                  f"response scope {tok['scope']!r}, expected {want_scope!r}")

    def verify_access_token(token, want_client, want_scope):
        header = jwt.get_unverified_header(token)
        check(header.get("typ") == "at+jwt",
              f"header typ {header.get('typ')!r}, expected 'at+jwt' (RFC 9068 §2.1)")
        check(header.get("kid"), "header has no kid")
        check(header.get("alg") == "ES256", f"header alg {header.get('alg')!r}, expected ES256")
        signing_key = jwks.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            signing_key.key,
            algorithms=["ES256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"],
                     "verify_signature": True},
        )
        check(claims.get("client_id") == want_client,
              f"client_id claim {claims.get('client_id')!r}, expected {want_client!r}")
        check(claims.get("sub") == want_client,
              f"sub claim {claims.get('sub')!r}, expected {want_client!r} (RFC 9068 §2.2)")
        aud = claims["aud"]
        check(aud == audience or (isinstance(aud, list) and audience in aud),
              f"aud {aud!r} does not contain {audience!r}")
        check(set(claims.get("scope", "").split()) == set(want_scope.split()),
              f"scope claim {claims.get('scope')!r}, expected {want_scope!r}")
        now = time.time()
        check(claims["exp"] > now, "token already expired")
        check(claims["iat"] <= now + 60, "iat is in the future")
        return claims

    def secret_session(method, secret=None):
        return OAuth2Session(
            client_id=client_id,
            client_secret=client_secret if secret is None else secret,
            token_endpoint_auth_method=method,
            revocation_endpoint_auth_method=method,
            default_timeout=TIMEOUT,
        )

    # ---- client_secret_basic ---------------------------------------------
    basic = secret_session("client_secret_basic")

    def token_basic():
        tok = basic.fetch_token(token_endpoint, grant_type="client_credentials", scope=SCOPES)
        check_token_response(tok, SCOPES)
        return tok

    tok_basic = step("token: client_credentials with client_secret_basic", token_basic)
    claims_basic = step("verify: client_secret_basic token (PyJWKClient, ES256, at+jwt)",
                        lambda: verify_access_token(tok_basic["access_token"], client_id, SCOPES))

    # ---- client_secret_post ----------------------------------------------
    post = secret_session("client_secret_post")

    def token_post():
        tok = post.fetch_token(token_endpoint, grant_type="client_credentials", scope=SCOPES)
        check_token_response(tok, SCOPES)
        return tok

    tok_post = step("token: client_credentials with client_secret_post", token_post)
    step("verify: client_secret_post token (PyJWKClient, ES256, at+jwt)",
         lambda: verify_access_token(tok_post["access_token"], client_id, SCOPES))

    # ---- resource indicator (RFC 8707) -----------------------------------
    def token_resource():
        tok = basic.fetch_token(token_endpoint, grant_type="client_credentials",
                                scope="orders:write", resource=audience)
        check_token_response(tok, "orders:write")
        claims = verify_access_token(tok["access_token"], client_id, "orders:write")
        check(claims["aud"] == audience or claims["aud"] == [audience],
              f"aud {claims['aud']!r}, expected exactly {audience!r}")

    step(f"token: resource={audience} scope=orders:write, verified", token_resource)

    # ---- private_key_jwt (RFC 7523) --------------------------------------
    def load_key():
        with open(e["PORTCULLIS_JWT_CLIENT_KEY"], "rb") as f:
            key = ECKey.import_key(f.read())
        check(key.as_dict().get("crv") == "P-256", "key is not an EC P-256 key")
        return key

    jwt_key = step("private_key_jwt: load the PEM key", load_key)
    jwt_session = OAuth2Session(
        client_id=jwt_client_id,
        client_secret=jwt_key,
        token_endpoint_auth_method="private_key_jwt",
        revocation_endpoint_auth_method="private_key_jwt",
        default_timeout=TIMEOUT,
    )
    # aud = the token endpoint for every request (RFC 7523 §3), kid = RFC 7638
    # thumbprint, as registered.
    jwt_session.register_client_auth_method(
        PrivateKeyJWT(token_endpoint, alg="ES256", headers={"kid": jwt_key.thumbprint()}))

    def token_jwt():
        tok = jwt_session.fetch_token(token_endpoint, grant_type="client_credentials",
                                      scope=SCOPES)
        check_token_response(tok, SCOPES)
        verify_access_token(tok["access_token"], jwt_client_id, SCOPES)
        return tok

    tok_jwt = step("token: client_credentials with private_key_jwt (authlib PrivateKeyJWT), verified",
                   token_jwt)

    def assertion_replay_is_fresh():
        # A second request signs a fresh assertion (new jti): must also work.
        tok = jwt_session.fetch_token(token_endpoint, grant_type="client_credentials",
                                      scope="orders:read")
        check_token_response(tok, "orders:read")

    step("token: private_key_jwt second request (fresh assertion)", assertion_replay_is_fresh)

    # ---- introspection (RFC 7662) ----------------------------------------
    introspection_endpoint = md["introspection_endpoint"]
    revocation_endpoint = md["revocation_endpoint"]

    def introspect(session, token):
        resp = session.introspect_token(introspection_endpoint, token=token,
                                        token_type_hint="access_token")
        check(resp.status_code == 200,
              f"introspection HTTP {resp.status_code}: {resp.text[:200]}")
        body = resp.json()
        check(isinstance(body, dict) and isinstance(body.get("active"), bool),
              f"introspection response has no boolean active: {resp.text[:200]}")
        return body

    def introspect_active():
        body = introspect(basic, tok_basic["access_token"])
        check(body["active"] is True, f"active is {body['active']!r}, expected true")
        check(body.get("client_id") == client_id,
              f"client_id {body.get('client_id')!r}, expected {client_id!r}")
        check(set(body.get("scope", "").split()) == set(SCOPES.split()),
              f"scope {body.get('scope')!r}, expected {SCOPES!r}")
        if "exp" in body:
            check(body["exp"] == claims_basic["exp"],
                  f"exp {body['exp']!r} != token exp {claims_basic['exp']!r}")

    step("introspect: client_secret_basic token is active with client_id and scope",
         introspect_active)

    def introspect_jwt_client():
        body = introspect(jwt_session, tok_jwt["access_token"])
        check(body["active"] is True, f"active is {body['active']!r}, expected true")
        check(body.get("client_id") == jwt_client_id,
              f"client_id {body.get('client_id')!r}, expected {jwt_client_id!r}")

    step("introspect: private_key_jwt token, authenticated with private_key_jwt",
         introspect_jwt_client)

    # ---- revocation (RFC 7009) -------------------------------------------
    def revoke():
        resp = basic.revoke_token(revocation_endpoint, token=tok_basic["access_token"],
                                  token_type_hint="access_token")
        check(resp.status_code == 200,
              f"revocation HTTP {resp.status_code}, expected 200 (RFC 7009 §2.2): "
              f"{resp.text[:200]}")

    step("revoke: client_secret_basic token via authlib revoke_token", revoke)

    def introspect_inactive():
        body = introspect(basic, tok_basic["access_token"])
        check(body["active"] is False,
              f"active is {body['active']!r} after revocation, expected false")

    step("introspect: revoked token is inactive", introspect_inactive)

    def other_token_still_active():
        body = introspect(post, tok_post["access_token"])
        check(body["active"] is True,
              "a token that was not revoked became inactive too")

    step("introspect: a token not revoked stays active", other_token_still_active)

    # ---- errors ----------------------------------------------------------
    def disallowed_scope():
        try:
            tok = basic.fetch_token(token_endpoint, grant_type="client_credentials",
                                    scope="orders:admin")
        except OAuthError as err:
            check(err.error == "invalid_scope",
                  f"error {err.error!r}, expected 'invalid_scope' (RFC 6749 §5.2)")
            return
        raise CheckFailed(f"a token was issued for a disallowed scope: {dict(tok)}")

    step("error: disallowed scope gives invalid_scope", disallowed_scope)

    def wrong_secret():
        bad = secret_session("client_secret_basic", secret=client_secret + "-wrong")
        try:
            tok = bad.fetch_token(token_endpoint, grant_type="client_credentials", scope=SCOPES)
        except OAuthError as err:
            check(err.error == "invalid_client",
                  f"error {err.error!r}, expected 'invalid_client' (RFC 6749 §5.2)")
            return
        raise CheckFailed(f"a token was issued with a wrong secret: {dict(tok)}")

    step("error: wrong client secret gives invalid_client", wrong_secret)

    print(f"# all {STEP_COUNT} steps passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
