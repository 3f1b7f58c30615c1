#!/usr/bin/env node
// Load driver for bench/iam-login.sh: browser sign-ins, code redemptions and
// refresh grants against a running Portcullis, over real HTTP (Node's fetch).
//
//   node bench/iam-login.mjs ISSUER CLIENT_ID REDIRECT_URI USERNAME PASSWORD
//
// Env: BENCH_CONC (concurrent workers, default 8), BENCH_SECONDS (per phase, default 15).
// Phases, each for BENCH_SECONDS with BENCH_CONC workers:
//   1. logins: GET /oauth2/authorize (fresh browser: no session) -> sign-in page ->
//      POST /oauth2/login (argon2id check, session, code) -> 303 with a code.
//   2. code redemptions: codes minted through the SSO session (no password), each
//      redeemed once at the token endpoint (access + RS256 ID + refresh token).
//   3. refresh grants: each worker rotates its own refresh token in a loop.
// Prints one `RESULT phase=... ops=... seconds=... per_s=... p50_ms=... p99_ms=... errors=...`
// line per phase. Only the timed operation of each phase is counted.

import { createHash, randomBytes } from 'node:crypto';
import process from 'node:process';

const [issuer, clientId, redirectUri, username, password] = process.argv.slice(2);
if (!password) {
  console.error('usage: iam-login.mjs ISSUER CLIENT_ID REDIRECT_URI USERNAME PASSWORD');
  process.exit(2);
}
const CONC = Number(process.env.BENCH_CONC ?? 8);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);

const b64url = (b) => b.toString('base64url');
const verifier = b64url(randomBytes(32));
const challenge = b64url(createHash('sha256').update(verifier).digest());
const authorizeUrl = () => {
  const q = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    scope: 'openid profile',
    state: b64url(randomBytes(8)),
    nonce: b64url(randomBytes(8)),
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  return `${issuer}/oauth2/authorize?${q}`;
};

function keep(resp, jar) {
  for (const c of resp.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const eq = pair.indexOf('=');
    jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

function field(html, name) {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  if (!m) throw new Error(`no ${name} field`);
  return m[1];
}

function codeOf(resp) {
  if (resp.status !== 302 && resp.status !== 303) throw new Error(`status ${resp.status}`);
  const code = new URL(resp.headers.get('location')).searchParams.get('code');
  if (!code) throw new Error(`no code in ${resp.headers.get('location')}`);
  return code;
}

/** A sign-in page for a fresh browser: (jar, request, csrf). */
async function signInPage() {
  const jar = new Map();
  const page = await fetch(authorizeUrl(), { redirect: 'manual' });
  const html = await page.text();
  if (page.status !== 200) throw new Error(`authorize ${page.status}`);
  keep(page, jar);
  return { jar, request: field(html, 'request'), csrf: field(html, 'csrf') };
}

async function signIn({ jar, request, csrf }) {
  const resp = await fetch(`${issuer}/oauth2/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: {
      cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; '),
      'content-type': 'application/x-www-form-urlencoded',
    },
    body: new URLSearchParams({ request, csrf, username, password }),
  });
  keep(resp, jar);
  await resp.arrayBuffer();
  return codeOf(resp);
}

async function ssoCode(jar) {
  const resp = await fetch(authorizeUrl(), {
    redirect: 'manual',
    headers: { cookie: [...jar].map(([k, v]) => `${k}=${v}`).join('; ') },
  });
  await resp.arrayBuffer();
  return codeOf(resp);
}

async function token(form) {
  const resp = await fetch(`${issuer}/oauth2/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ client_id: clientId, ...form }),
  });
  const body = await resp.json();
  if (resp.status !== 200) throw new Error(`token ${resp.status} ${JSON.stringify(body)}`);
  return body;
}

const redeem = (code) =>
  token({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier });

/**
 * Runs `CONC` workers for SECONDS. Each worker calls `prepare()` (untimed) then
 * `op(prepared)` (timed) in a loop. Returns the figures of the timed part.
 */
async function phase(name, prepare, op) {
  const lat = [];
  let errors = 0;
  let firstError = '';
  const end = Date.now() + SECONDS * 1000;
  let busyMs = 0;
  const fail = (e) => {
    errors += 1;
    if (!firstError) firstError = String(e.message ?? e);
  };
  const worker = async (w) => {
    let out = null;
    while (Date.now() < end) {
      let state;
      try {
        state = await prepare(w, out);
      } catch (e) {
        fail(e);
        out = null;
        continue;
      }
      const t0 = performance.now();
      try {
        out = await op(state);
        const dt = performance.now() - t0;
        lat.push(dt);
        busyMs += dt;
      } catch (e) {
        fail(e);
        out = null;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONC }, (_, w) => worker(w)));
  const wall = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] : NaN);
  // Throughput of the timed operation alone: ops over the time workers spent in it.
  const perS = lat.length / (busyMs / 1000 / CONC);
  console.log(
    `RESULT phase=${name} ops=${lat.length} seconds=${wall.toFixed(1)} per_s=${perS.toFixed(1)} ` +
      `p50_ms=${pct(0.5).toFixed(2)} p99_ms=${pct(0.99).toFixed(2)} errors=${errors}` +
      (firstError ? ` first_error="${firstError.replaceAll('"', "'")}"` : ''),
  );
}

// 1. Password sign-ins: each on a fresh sign-in page (preparing it is untimed).
await phase('logins', () => signInPage(), (page) => signIn(page));

// 2. Code redemptions: one SSO session per worker mints codes (untimed).
const sessions = await Promise.all(
  Array.from({ length: CONC }, async () => {
    const page = await signInPage();
    await redeem(await signIn(page));
    return page.jar;
  }),
);
await phase('code_redemptions', (w) => ssoCode(sessions[w]), (code) => redeem(code));

// 3. Refresh grants: each worker rotates its own refresh token.
const refresh = await Promise.all(sessions.map(async (jar) => (await redeem(await ssoCode(jar))).refresh_token));
await phase(
  'refresh_grants',
  (w, out) => {
    if (out) refresh[w] = out.refresh_token;
    return w;
  },
  (w) => token({ grant_type: 'refresh_token', refresh_token: refresh[w] }),
);
