#!/usr/bin/env node
// Interop: openid-client (v6) + jose against a running Portcullis.
//
// Environment (all required):
//   PORTCULLIS_ISSUER          e.g. http://127.0.0.1:19500
//   PORTCULLIS_CLIENT_ID       secret client (scopes orders:read orders:write)
//   PORTCULLIS_CLIENT_SECRET
//   PORTCULLIS_JWT_CLIENT_ID   private_key_jwt client, same scopes/audience
//   PORTCULLIS_JWT_CLIENT_KEY  path of its EC P-256 PKCS#8 PEM private key
//   PORTCULLIS_AUDIENCE        e.g. orders-api
//
// Prints one line per step ("ok - <step>" / "not ok - <step>: <why>") and exits
// 1 on the first failure, 0 when every step passed. Talks only to the issuer.

import { readFileSync, statSync } from 'node:fs';
import process from 'node:process';

import * as client from 'openid-client';
import * as jose from 'jose';

import { CheckFailed, TIMEOUT_MS, check, describe, step, stepCount } from './lib.mjs';

const SCOPES = 'orders:read orders:write';

function sameOrigin(a, b) {
  return new URL(a).origin === new URL(b).origin;
}

function scopeSet(s) {
  return [...new Set(String(s ?? '').split(' ').filter(Boolean))].sort().join(' ');
}

async function main() {
  const env = await step('environment', () => {
    const names = [
      'PORTCULLIS_ISSUER',
      'PORTCULLIS_CLIENT_ID',
      'PORTCULLIS_CLIENT_SECRET',
      'PORTCULLIS_JWT_CLIENT_ID',
      'PORTCULLIS_JWT_CLIENT_KEY',
      'PORTCULLIS_AUDIENCE',
    ];
    const missing = names.filter((n) => !process.env[n]);
    check(missing.length === 0, `missing environment variable(s): ${missing.join(', ')}`);
    const keyPath = process.env.PORTCULLIS_JWT_CLIENT_KEY;
    let isFile = false;
    try {
      isFile = statSync(keyPath).isFile();
    } catch {}
    check(isFile, `PORTCULLIS_JWT_CLIENT_KEY=${keyPath} is not a file`);
    return Object.fromEntries(names.map((n) => [n, process.env[n]]));
  });
  const issuer = env.PORTCULLIS_ISSUER;
  const audience = env.PORTCULLIS_AUDIENCE;
  const clientId = env.PORTCULLIS_CLIENT_ID;
  const clientSecret = env.PORTCULLIS_CLIENT_SECRET;
  const jwtClientId = env.PORTCULLIS_JWT_CLIENT_ID;

  const discoveryOptions = (algorithm) => ({
    algorithm,
    timeout: TIMEOUT_MS / 1000,
    // http on loopback: the issuer is not https.
    execute: [client.allowInsecureRequests],
  });

  // ---- discovery ----------------------------------------------------------
  // openid-client checks that the discovered issuer equals the URL it was given
  // (RFC 8414 §3.3 / OIDC Discovery §4.3) and refuses the metadata otherwise.
  const basic = await step('discovery: openid-configuration via openid-client, issuer exact, endpoints present', async () => {
    const config = await client.discovery(
      new URL(issuer),
      clientId,
      undefined,
      client.ClientSecretBasic(clientSecret),
      discoveryOptions('oidc'),
    );
    const md = config.serverMetadata();
    check(md.issuer === issuer, `issuer ${JSON.stringify(md.issuer)} != PORTCULLIS_ISSUER ${JSON.stringify(issuer)}`);
    for (const key of ['token_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint']) {
      check(typeof md[key] === 'string' && md[key], `metadata has no ${key}`);
      check(sameOrigin(md[key], issuer), `${key} ${md[key]} is not on the issuer's origin`);
    }
    for (const m of ['client_secret_basic', 'client_secret_post', 'private_key_jwt']) {
      check((md.token_endpoint_auth_methods_supported ?? []).includes(m), `token_endpoint_auth_methods_supported lacks ${m}`);
    }
    check((md.grant_types_supported ?? []).includes('client_credentials'), 'grant_types_supported lacks client_credentials');
    return config;
  });
  const md = basic.serverMetadata();

  await step('discovery: RFC 8414 oauth-authorization-server via openid-client agrees', async () => {
    const config = await client.discovery(new URL(issuer), clientId, undefined, client.None(), discoveryOptions('oauth2'));
    const other = config.serverMetadata();
    check(other.issuer === issuer, `issuer ${JSON.stringify(other.issuer)} != ${JSON.stringify(issuer)}`);
    for (const key of ['token_endpoint', 'jwks_uri', 'introspection_endpoint', 'revocation_endpoint']) {
      check(other[key] === md[key], `${key} ${other[key]} != ${md[key]}`);
    }
  });

  const jwks = jose.createRemoteJWKSet(new URL(md.jwks_uri), { timeoutDuration: TIMEOUT_MS });

  // ---- helpers ------------------------------------------------------------
  function checkTokenResponse(tok, wantScope) {
    check(typeof tok.access_token === 'string' && tok.access_token, 'no access_token in token response');
    check(String(tok.token_type).toLowerCase() === 'bearer', `token_type ${JSON.stringify(tok.token_type)}, expected bearer`);
    check(Number.isInteger(tok.expires_in) && tok.expires_in > 0, `expires_in ${JSON.stringify(tok.expires_in)} is not a positive integer`);
    check(tok.refresh_token === undefined, 'refresh_token issued for client_credentials (RFC 6749 §4.4.3: SHOULD NOT)');
    if (tok.scope !== undefined) {
      check(scopeSet(tok.scope) === scopeSet(wantScope), `response scope ${JSON.stringify(tok.scope)}, expected ${JSON.stringify(wantScope)}`);
    }
  }

  async function verifyAccessToken(token, wantClient, wantScope) {
    const header = jose.decodeProtectedHeader(token);
    check(header.kid, 'header has no kid');
    const { payload, protectedHeader } = await jose.jwtVerify(token, jwks, {
      issuer,
      audience,
      algorithms: ['ES256'],
      typ: 'at+jwt', // RFC 9068 §2.1
      requiredClaims: ['iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti'],
    });
    check(protectedHeader.typ === 'at+jwt', `header typ ${JSON.stringify(protectedHeader.typ)}, expected at+jwt`);
    check(payload.client_id === wantClient, `client_id claim ${JSON.stringify(payload.client_id)}, expected ${JSON.stringify(wantClient)}`);
    check(payload.sub === wantClient, `sub claim ${JSON.stringify(payload.sub)}, expected ${JSON.stringify(wantClient)} (RFC 9068 §2.2)`);
    check(scopeSet(payload.scope) === scopeSet(wantScope), `scope claim ${JSON.stringify(payload.scope)}, expected ${JSON.stringify(wantScope)}`);
    return payload;
  }

  // A configuration for the same server with another client / auth method.
  function configFor(id, auth) {
    const config = new client.Configuration(md, id, undefined, auth);
    client.allowInsecureRequests(config);
    config.timeout = TIMEOUT_MS / 1000;
    return config;
  }

  // ---- client_secret_basic --------------------------------------------------
  const tokBasic = await step('token: clientCredentialsGrant with ClientSecretBasic', async () => {
    const tok = await client.clientCredentialsGrant(basic, { scope: SCOPES });
    checkTokenResponse(tok, SCOPES);
    return tok;
  });
  const claimsBasic = await step('verify: ClientSecretBasic token (jose jwtVerify, remote JWKS, ES256, at+jwt)', () =>
    verifyAccessToken(tokBasic.access_token, clientId, SCOPES));

  // ---- client_secret_post ---------------------------------------------------
  const post = configFor(clientId, client.ClientSecretPost(clientSecret));
  const tokPost = await step('token: clientCredentialsGrant with ClientSecretPost', async () => {
    const tok = await client.clientCredentialsGrant(post, { scope: SCOPES });
    checkTokenResponse(tok, SCOPES);
    return tok;
  });
  await step('verify: ClientSecretPost token (jose jwtVerify, remote JWKS, ES256, at+jwt)', () =>
    verifyAccessToken(tokPost.access_token, clientId, SCOPES));

  // ---- resource indicator (RFC 8707) ---------------------------------------
  await step(`token: resource=${audience} scope=orders:write, verified`, async () => {
    const tok = await client.clientCredentialsGrant(basic, { scope: 'orders:write', resource: audience });
    checkTokenResponse(tok, 'orders:write');
    const claims = await verifyAccessToken(tok.access_token, clientId, 'orders:write');
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    check(aud.length === 1 && aud[0] === audience, `aud ${JSON.stringify(claims.aud)}, expected exactly ${JSON.stringify(audience)}`);
  });

  // ---- private_key_jwt (RFC 7523) ------------------------------------------
  const privateKey = await step('private_key_jwt: import the PEM key (jose importPKCS8) and compute its RFC 7638 kid', async () => {
    const pem = readFileSync(env.PORTCULLIS_JWT_CLIENT_KEY, 'utf8');
    const key = await jose.importPKCS8(pem, 'ES256', { extractable: true });
    const jwk = await jose.exportJWK(key);
    check(jwk.kty === 'EC' && jwk.crv === 'P-256', `key is ${jwk.kty}/${jwk.crv}, expected EC/P-256`);
    const kid = await jose.calculateJwkThumbprint({ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y }, 'sha256');
    return { key, kid };
  });
  const jwtConfig = configFor(jwtClientId, client.PrivateKeyJwt(privateKey));

  const tokJwt = await step('token: clientCredentialsGrant with PrivateKeyJwt, verified', async () => {
    const tok = await client.clientCredentialsGrant(jwtConfig, { scope: SCOPES });
    checkTokenResponse(tok, SCOPES);
    await verifyAccessToken(tok.access_token, jwtClientId, SCOPES);
    return tok;
  });

  await step('token: PrivateKeyJwt second request (fresh assertion)', async () => {
    const tok = await client.clientCredentialsGrant(jwtConfig, { scope: 'orders:read' });
    checkTokenResponse(tok, 'orders:read');
  });

  // ---- introspection (RFC 7662) --------------------------------------------
  async function introspect(config, token) {
    const body = await client.tokenIntrospection(config, token, { token_type_hint: 'access_token' });
    check(typeof body.active === 'boolean', `introspection response has no boolean active: ${JSON.stringify(body)}`);
    return body;
  }

  await step('introspect: ClientSecretBasic token is active with client_id and scope', async () => {
    const body = await introspect(basic, tokBasic.access_token);
    check(body.active === true, `active is ${body.active}, expected true`);
    check(body.client_id === clientId, `client_id ${JSON.stringify(body.client_id)}, expected ${JSON.stringify(clientId)}`);
    check(scopeSet(body.scope) === scopeSet(SCOPES), `scope ${JSON.stringify(body.scope)}, expected ${JSON.stringify(SCOPES)}`);
    if (body.exp !== undefined) {
      check(body.exp === claimsBasic.exp, `exp ${body.exp} != token exp ${claimsBasic.exp}`);
    }
  });

  await step('introspect: PrivateKeyJwt token, authenticated with PrivateKeyJwt', async () => {
    const body = await introspect(jwtConfig, tokJwt.access_token);
    check(body.active === true, `active is ${body.active}, expected true`);
    check(body.client_id === jwtClientId, `client_id ${JSON.stringify(body.client_id)}, expected ${JSON.stringify(jwtClientId)}`);
  });

  // ---- revocation (RFC 7009) -----------------------------------------------
  await step('revoke: ClientSecretBasic token via tokenRevocation', () =>
    client.tokenRevocation(basic, tokBasic.access_token, { token_type_hint: 'access_token' }));

  await step('introspect: revoked token is inactive', async () => {
    const body = await introspect(basic, tokBasic.access_token);
    check(body.active === false, `active is ${body.active} after revocation, expected false`);
  });

  await step('introspect: a token not revoked stays active', async () => {
    const body = await introspect(post, tokPost.access_token);
    check(body.active === true, 'a token that was not revoked became inactive too');
  });

  // ---- errors ---------------------------------------------------------------
  // The OAuth error code of a failed token request. openid-client throws
  // ResponseBodyError for an error body, and WWWAuthenticateChallengeError when
  // a 401 carries WWW-Authenticate (RFC 6749 §5.2 requires it for Basic auth);
  // the body of the latter is still unread on err.response.
  async function oauthErrorOf(promise) {
    let tok;
    try {
      tok = await promise;
    } catch (err) {
      if (err instanceof client.ResponseBodyError) return { error: err.error, status: err.status };
      if (err instanceof client.WWWAuthenticateChallengeError) {
        const body = await err.response.json().catch(() => ({}));
        return { error: body.error, status: err.status, challenges: err.cause };
      }
      throw err;
    }
    throw new CheckFailed(`a token was issued: scope ${JSON.stringify(tok.scope)}`);
  }

  await step('error: disallowed scope gives invalid_scope', async () => {
    const { error, status } = await oauthErrorOf(client.clientCredentialsGrant(basic, { scope: 'orders:admin' }));
    check(error === 'invalid_scope', `error ${JSON.stringify(error)} (HTTP ${status}), expected invalid_scope (RFC 6749 §5.2)`);
  });

  await step('error: wrong client secret gives invalid_client', async () => {
    const bad = configFor(clientId, client.ClientSecretBasic(`${clientSecret}-wrong`));
    const { error, status, challenges } = await oauthErrorOf(client.clientCredentialsGrant(bad, { scope: SCOPES }));
    check(error === 'invalid_client', `error ${JSON.stringify(error)} (HTTP ${status}), expected invalid_client (RFC 6749 §5.2)`);
    check(status === 401, `HTTP ${status}, expected 401 for a failed Basic authentication (RFC 6749 §5.2)`);
    check((challenges ?? []).some((c) => c.scheme === 'basic'), 'no WWW-Authenticate: Basic challenge on the 401 (RFC 6749 §5.2)');
  });

  console.log(`# all ${stepCount()} steps passed`);
}

main().then(
  () => process.exit(0),
  async (err) => {
    console.log(`not ok - unexpected: ${await describe(err)}`);
    process.exit(1);
  },
);
