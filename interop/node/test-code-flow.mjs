#!/usr/bin/env node
// Interop: openid-client (v6) as an OpenID Connect relying party against a
// running Portcullis: discovery, authorization code + PKCE (S256) with state
// and nonce, the ID token checked by openid-client and verified with jose
// from the JWKS, refresh-token rotation and replay, userinfo, RP-initiated
// logout. The browser part (the sign-in form) is driven with plain fetch.
//
// Environment (all required):
//   PORTCULLIS_ISSUER            e.g. http://127.0.0.1:19500
//   PORTCULLIS_RP_CLIENT_ID      a public, first-party client with the code and refresh grants
//   PORTCULLIS_RP_REDIRECT_URI   one of its redirect URIs
//   PORTCULLIS_RP_LOGOUT_URI     one of its post-logout redirect URIs
//   PORTCULLIS_USERNAME, PORTCULLIS_PASSWORD   a user who may sign in
//
// Prints one line per step ("ok - <step>" / "not ok - <step>: <why>") and
// exits 1 on the first failure, 0 when every step passed.

import process from 'node:process';

import * as client from 'openid-client';
import * as jose from 'jose';

import { CheckFailed, TIMEOUT_MS, check, describe, step, stepCount } from './lib.mjs';

const SCOPE = 'openid profile email';

/** The value of a hidden form field in an HTML page. */
function field(html, name) {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  check(m, `no ${name} field in the sign-in page`);
  return m[1].replaceAll('&#34;', '"').replaceAll('&amp;', '&');
}

/** Cookies set by a response, as "name=value" pairs for the next request. */
function cookies(resp, jar) {
  for (const c of resp.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const eq = pair.indexOf('=');
    jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

async function main() {
  const env = await step('environment', () => {
    const names = [
      'PORTCULLIS_ISSUER',
      'PORTCULLIS_RP_CLIENT_ID',
      'PORTCULLIS_RP_REDIRECT_URI',
      'PORTCULLIS_RP_LOGOUT_URI',
      'PORTCULLIS_USERNAME',
      'PORTCULLIS_PASSWORD',
    ];
    const missing = names.filter((n) => !process.env[n]);
    check(missing.length === 0, `missing environment variable(s): ${missing.join(', ')}`);
    return Object.fromEntries(names.map((n) => [n, process.env[n]]));
  });
  const issuer = env.PORTCULLIS_ISSUER;
  const redirectUri = env.PORTCULLIS_RP_REDIRECT_URI;

  const config = await step('discovery: code flow, PKCE S256 and RS256 ID tokens advertised', async () => {
    const c = await client.discovery(
      new URL(issuer),
      env.PORTCULLIS_RP_CLIENT_ID,
      undefined,
      client.None(),
      { timeout: TIMEOUT_MS / 1000, execute: [client.allowInsecureRequests] },
    );
    const md = c.serverMetadata();
    check(md.authorization_endpoint, 'no authorization_endpoint');
    check(md.response_types_supported?.includes('code'), 'response_type code not listed');
    check(md.code_challenge_methods_supported?.includes('S256'), 'S256 not listed');
    check(!md.code_challenge_methods_supported?.includes('plain'), 'plain is listed');
    check(md.id_token_signing_alg_values_supported?.includes('RS256'), 'RS256 not listed');
    check(md.token_endpoint_auth_methods_supported?.includes('none'), 'auth method none not listed');
    return c;
  });

  const verifier = client.randomPKCECodeVerifier();
  const challenge = await client.calculatePKCECodeChallenge(verifier);
  const state = client.randomState();
  const nonce = client.randomNonce();
  const authUrl = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri,
    scope: SCOPE,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
    nonce,
  });

  const jar = new Map();
  const callback = await step('browser: sign-in page, form post, redirect back with code, state and iss', async () => {
    const page = await fetch(authUrl, { redirect: 'manual' });
    const html = await page.text();
    check(page.status === 200, `authorization endpoint answered ${page.status}: ${html.slice(0, 200)}`);
    check(page.headers.get('x-frame-options') === 'DENY', 'the sign-in page may be framed');
    check(/frame-ancestors 'none'/.test(page.headers.get('content-security-policy') ?? ''), 'no CSP frame-ancestors');
    const cookie = cookies(page, jar);
    const action = new URL(html.match(/<form method="post" action="([^"]+)"/)[1], issuer);
    const form = new URLSearchParams({
      request: field(html, 'request'),
      csrf: field(html, 'csrf'),
      username: env.PORTCULLIS_USERNAME,
      password: env.PORTCULLIS_PASSWORD,
    });
    const done = await fetch(action, {
      method: 'POST',
      redirect: 'manual',
      headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' },
      body: form,
    });
    cookies(done, jar);
    check([302, 303].includes(done.status), `sign-in answered ${done.status}: ${(await done.text()).slice(0, 200)}`);
    const loc = new URL(done.headers.get('location'));
    check(loc.href.startsWith(redirectUri), `redirected to ${loc.href}, not the redirect URI`);
    check(loc.searchParams.get('iss') === issuer, `iss ${loc.searchParams.get('iss')} in the response (RFC 9207)`);
    return loc;
  });

  const tokens = await step('openid-client: code redeemed with the PKCE verifier; state, nonce, iss and ID token checked', async () => {
    const t = await client.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
      idTokenExpected: true,
    });
    check(t.access_token && t.id_token && t.refresh_token, `missing tokens: ${Object.keys(t)}`);
    check(t.token_type.toLowerCase() === 'bearer', `token_type ${t.token_type}`);
    return t;
  });
  const claims = tokens.claims();

  await step('jose: the ID token verifies against the JWKS (RS256), with at_hash, auth_time, sid', async () => {
    const jwks = jose.createRemoteJWKSet(new URL(config.serverMetadata().jwks_uri));
    const { payload, protectedHeader } = await jose.jwtVerify(tokens.id_token, jwks, {
      issuer,
      audience: env.PORTCULLIS_RP_CLIENT_ID,
      algorithms: ['RS256'],
    });
    check(protectedHeader.alg === 'RS256', `alg ${protectedHeader.alg}`);
    check(payload.nonce === nonce, 'nonce not carried');
    check(typeof payload.auth_time === 'number', 'no auth_time');
    check(typeof payload.at_hash === 'string', 'no at_hash');
    check(payload.sub === claims.sub, 'sub differs');
  });

  const refreshed = await step('refresh: a new access token and a rotated refresh token', async () => {
    const t = await client.refreshTokenGrant(config, tokens.refresh_token);
    check(t.access_token && t.access_token !== tokens.access_token, 'no new access token');
    check(t.refresh_token && t.refresh_token !== tokens.refresh_token, 'the refresh token was not rotated');
    return t;
  });

  await step('userinfo: the subject of the ID token, with profile and email claims', async () => {
    const info = await client.fetchUserInfo(config, refreshed.access_token, claims.sub);
    check(info.sub === claims.sub, `sub ${info.sub}`);
    check(info.preferred_username === env.PORTCULLIS_USERNAME, `preferred_username ${info.preferred_username}`);
    check(typeof info.email === 'string', 'no email claim with the email scope');
  });

  await step('logout: end_session with id_token_hint returns to the registered URI', async () => {
    const url = client.buildEndSessionUrl(config, {
      id_token_hint: tokens.id_token,
      post_logout_redirect_uri: env.PORTCULLIS_RP_LOGOUT_URI,
      state: 'bye',
    });
    const cookie = [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const r = await fetch(url, { redirect: 'manual', headers: { cookie } });
    check([302, 303].includes(r.status), `end_session answered ${r.status}`);
    const loc = new URL(r.headers.get('location'));
    check(loc.href.startsWith(env.PORTCULLIS_RP_LOGOUT_URI), `redirected to ${loc.href}`);
    check(loc.searchParams.get('state') === 'bye', 'state not returned');
  });

  await step('after logout: the session\'s refresh token is refused', async () => {
    try {
      await client.refreshTokenGrant(config, refreshed.refresh_token);
    } catch (err) {
      check(err instanceof client.ResponseBodyError, await describe(err));
      check(err.error === 'invalid_grant', `error ${err.error}`);
      return;
    }
    throw new CheckFailed('a refresh token of the ended session still worked');
  });

  await step('replay: the first, rotated refresh token is refused', async () => {
    try {
      await client.refreshTokenGrant(config, tokens.refresh_token);
    } catch (err) {
      check(err instanceof client.ResponseBodyError && err.error === 'invalid_grant', await describe(err));
      return;
    }
    throw new CheckFailed('a rotated refresh token still worked');
  });

  console.log(`# all ${stepCount()} steps passed`);
}

main().catch(async (err) => {
  console.log(`not ok - unexpected: ${await describe(err)}`);
  process.exit(1);
});
