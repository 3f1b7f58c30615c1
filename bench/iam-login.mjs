#!/usr/bin/env node
// Load driver for bench/iam-login.sh: browser sign-ins, code redemptions and
// refresh grants against a running Portcullis or oidc-provider (the peer in
// bench/peer/oidc-provider/login-server.mjs), over real HTTP (Node's fetch).
//
//   node bench/iam-login.mjs ISSUER CLIENT_ID REDIRECT_URI USERNAME PASSWORD
//
// Env: BENCH_CONC (concurrent workers, default 8), BENCH_SECONDS (per phase, default 15),
//   BENCH_KIND (portcullis | oidc-provider, default portcullis),
//   BENCH_PHASES (comma list of logins,code_redemptions,refresh_grants; default all),
//   BENCH_SERVER_PID (if set: the server's CPU time over each phase, from /proc/PID/stat,
//   is printed as server_cpu_s), BENCH_CLK_TCK (default 100), BENCH_CHECK (default 1: print
//   one TOKENS line on what a redemption and a refresh return; 0 to skip).
// Phases, each for BENCH_SECONDS with BENCH_CONC workers:
//   1. logins: authorize (fresh browser: no session) -> sign-in page (untimed), then the
//      timed part: the sign-in post (argon2id check, session) up to the 302/303 carrying a
//      code. Portcullis: POST /oauth2/login answers with the code. oidc-provider: POST
//      /interaction/UID/login -> 303 to /auth/UID -> GET it -> 303 with the code (two
//      requests, both timed).
//   2. code redemptions: codes minted through the SSO session (no password, untimed), each
//      redeemed once at the token endpoint (access + RS256 ID + refresh token), PKCE S256.
//   3. refresh grants: each worker rotates its own refresh token in a loop.
// Prints one `RESULT server=... phase=... ops=... seconds=... per_s=... p50_ms=... p99_ms=...
// errors=... [server_cpu_s=...] driver_cpu_s=... other_cores=...` line per phase. Only the
// timed operation of each phase is counted in ops, per_s and the latencies.

import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import process from 'node:process';

const [issuer, clientId, redirectUri, username, password] = process.argv.slice(2);
if (!password) {
  console.error('usage: iam-login.mjs ISSUER CLIENT_ID REDIRECT_URI USERNAME PASSWORD');
  process.exit(2);
}
const CONC = Number(process.env.BENCH_CONC ?? 8);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 15);
const KIND = process.env.BENCH_KIND ?? 'portcullis';
if (KIND !== 'portcullis' && KIND !== 'oidc-provider') {
  console.error(`BENCH_KIND: unknown server kind ${KIND}`);
  process.exit(2);
}
const PEER = KIND === 'oidc-provider';
const PHASES = new Set((process.env.BENCH_PHASES ?? 'logins,code_redemptions,refresh_grants').split(','));
const SERVER_PID = process.env.BENCH_SERVER_PID;
const CLK_TCK = Number(process.env.BENCH_CLK_TCK ?? 100);
const AUTHORIZE = PEER ? '/auth' : '/oauth2/authorize';
const TOKEN = PEER ? '/token' : '/oauth2/token';

/** user + nice + system time of all CPUs, in seconds (irq/softirq left out: loopback traffic). */
function machineBusy() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/);
  return (Number(f[1]) + Number(f[2]) + Number(f[3])) / CLK_TCK;
}
const selfCpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

/** utime + stime of the server process (all threads), in seconds. */
function serverCpu() {
  if (!SERVER_PID) return NaN;
  const stat = readFileSync(`/proc/${SERVER_PID}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

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
  return `${issuer}${AUTHORIZE}?${q}`;
};

function keep(resp, jar) {
  for (const c of resp.headers.getSetCookie()) {
    const [pair] = c.split(';');
    const eq = pair.indexOf('=');
    jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

const cookies = (jar) => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');

function field(html, name) {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  if (!m) throw new Error(`no ${name} field`);
  return m[1];
}

function codeOf(resp) {
  if (resp.status !== 302 && resp.status !== 303) throw new Error(`status ${resp.status}`);
  const code = new URL(resp.headers.get('location'), issuer).searchParams.get('code');
  if (!code) throw new Error(`no code in ${resp.headers.get('location')}`);
  return code;
}

/** oidc-provider: authorize -> 303 to its interaction -> the sign-in form. */
async function peerSignInPage() {
  const jar = new Map();
  const auth = await fetch(authorizeUrl(), { redirect: 'manual' });
  await auth.arrayBuffer();
  if (auth.status !== 303 && auth.status !== 302) throw new Error(`authorize ${auth.status}`);
  keep(auth, jar);
  const page = await fetch(new URL(auth.headers.get('location'), issuer), {
    redirect: 'manual',
    headers: { cookie: cookies(jar) },
  });
  const html = await page.text();
  if (page.status !== 200) throw new Error(`interaction ${page.status}`);
  keep(page, jar);
  const m = html.match(/<form method="post" action="([^"]+)"/);
  if (!m) throw new Error('no sign-in form');
  return { jar, action: new URL(m[1], issuer) };
}

/** oidc-provider: the sign-in post, then the resumed authorization that returns the code. */
async function peerSignIn({ jar, action }) {
  const resp = await fetch(action, {
    method: 'POST',
    redirect: 'manual',
    headers: { cookie: cookies(jar), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ username, password }),
  });
  keep(resp, jar);
  await resp.arrayBuffer();
  if (resp.status !== 303) throw new Error(`sign-in ${resp.status}`);
  const resume = await fetch(new URL(resp.headers.get('location'), issuer), {
    redirect: 'manual',
    headers: { cookie: cookies(jar) },
  });
  keep(resume, jar);
  await resume.arrayBuffer();
  return codeOf(resume);
}

/** A sign-in page for a fresh browser: (jar, request, csrf). */
async function signInPage() {
  if (PEER) return peerSignInPage();
  const jar = new Map();
  const page = await fetch(authorizeUrl(), { redirect: 'manual' });
  const html = await page.text();
  if (page.status !== 200) throw new Error(`authorize ${page.status}`);
  keep(page, jar);
  return { jar, request: field(html, 'request'), csrf: field(html, 'csrf') };
}

async function signIn(page) {
  if (PEER) return peerSignIn(page);
  const { jar, request, csrf } = page;
  const resp = await fetch(`${issuer}/oauth2/login`, {
    method: 'POST',
    redirect: 'manual',
    headers: {
      cookie: cookies(jar),
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
    headers: { cookie: cookies(jar) },
  });
  keep(resp, jar);
  await resp.arrayBuffer();
  return codeOf(resp);
}

async function token(form) {
  const resp = await fetch(`${issuer}${TOKEN}`, {
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
  if (!PHASES.has(name)) return;
  const cpu0 = serverCpu();
  const busy0 = machineBusy();
  const self0 = selfCpu();
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
  const cpu = serverCpu() - cpu0;
  const driverCpu = selfCpu() - self0;
  // Cores used by everything but the server and this driver over the phase.
  const other = (machineBusy() - busy0 - (Number.isNaN(cpu) ? 0 : cpu) - driverCpu) / wall;
  lat.sort((a, b) => a - b);
  const pct = (p) => (lat.length ? lat[Math.min(lat.length - 1, Math.floor(lat.length * p))] : NaN);
  // Throughput of the timed operation alone: ops over the time workers spent in it.
  const perS = lat.length / (busyMs / 1000 / CONC);
  console.log(
    `RESULT server=${KIND} phase=${name} ops=${lat.length} seconds=${wall.toFixed(1)} per_s=${perS.toFixed(1)} ` +
      `p50_ms=${pct(0.5).toFixed(2)} p99_ms=${pct(0.99).toFixed(2)} errors=${errors}` +
      (Number.isNaN(cpu) ? '' : ` server_cpu_s=${cpu.toFixed(2)}`) +
      ` driver_cpu_s=${driverCpu.toFixed(2)} other_cores=${Math.max(0, other).toFixed(2)}` +
      (firstError ? ` first_error="${firstError.replaceAll('"', "'")}"` : ''),
  );
}

// What each server issues (untimed, one sign-in): token formats and rotation.
if (process.env.BENCH_CHECK !== '0') {
  const hdr = (jwt) => {
    const parts = String(jwt ?? '').split('.');
    if (parts.length !== 3) return { alg: 'opaque' };
    return JSON.parse(Buffer.from(parts[0], 'base64url').toString());
  };
  const claims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString());
  const t = await redeem(await signIn(await signInPage()));
  const r = await token({ grant_type: 'refresh_token', refresh_token: t.refresh_token });
  const at = hdr(t.access_token);
  const id = hdr(t.id_token);
  const idc = t.id_token ? claims(t.id_token) : {};
  console.log(
    `TOKENS server=${KIND} access_token=${at.alg === 'opaque' ? 'opaque' : `JWT/${at.alg}/${at.typ}`} ` +
      `id_token=${id.alg} id_token_profile=${'preferred_username' in idc ? 'yes' : 'no'} ` +
      `refresh_token=${t.refresh_token ? 'yes' : 'no'} rotated=${r.refresh_token && r.refresh_token !== t.refresh_token ? 'yes' : 'no'} ` +
      `id_token_on_refresh=${r.id_token ? 'yes' : 'no'} scope="${t.scope}"`,
  );
}

// 1. Password sign-ins: each on a fresh sign-in page (preparing it is untimed).
await phase('logins', () => signInPage(), (page) => signIn(page));

if (!PHASES.has('code_redemptions') && !PHASES.has('refresh_grants')) process.exit(0);

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
