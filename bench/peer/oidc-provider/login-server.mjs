// Peer for the Portcullis browser-login benchmark (bench/iam-login.sh).
//
// panva/oidc-provider (the version pinned in package.json, as for server.mjs)
// set up like the benchmark's Portcullis client:
//   - one public client `bench-web` (token_endpoint_auth_method none), the
//     authorization_code and refresh_token grants, response type `code`,
//     PKCE S256 (oidc-provider requires PKCE for public clients), scopes
//     `openid profile`;
//   - ID tokens RS256 (fresh 2048-bit RSA key, as Portcullis), with `name` and
//     `preferred_username` in the ID token for `profile` (conformIdTokenClaims
//     off), as Portcullis does;
//   - access tokens ES256-signed JWTs (fresh P-256 key), through a default
//     resource indicator `urn:bench-login` (RFC 8707), as Portcullis signs its
//     access tokens with ES256;
//   - refresh tokens issued for every code redemption (Portcullis needs no
//     offline_access scope) and rotated on every use (rotateRefreshToken);
//   - a minimal interaction handler instead of the built-in dev interactions:
//     GET /interaction/:uid renders a sign-in form; POST /interaction/:uid/login
//     verifies the password against an argon2id hash with the `argon2` npm
//     package (pinned in package.json) and finishes the login; consent is
//     skipped for this first-party client by a grant made on first use in
//     loadExistingGrant (Portcullis: `first_party: true`).
//
// oidc-provider has no password hashing of its own: the account lookup here is
// the benchmark's. The hash it verifies is PEER_PASSWORD_HASH (a PHC string; the
// benchmark passes Portcullis' own stored hash of the same password, so the
// argon2id parameters are identical by construction) or, without it, a hash of
// PEER_PASSWORD made at start with PEER_ARGON2 ("m=19456,t=2,p=1" by default).
//
// Storage: oidc-provider's default in-memory adapter (sessions, interactions,
// codes, grants, refresh tokens live in the Node heap); Portcullis writes them
// to SQLite. One Node process, single-threaded JS; the argon2 verifications
// run on libuv's thread pool (UV_THREADPOOL_SIZE, default 4).
//
// Settings (env): PEER_PORT (default 19710), PEER_HOST (default 127.0.0.1),
// PEER_REDIRECT_URI (default http://127.0.0.1/callback), PEER_USERNAME (default
// bench), PEER_PASSWORD, PEER_PASSWORD_HASH, PEER_ARGON2, PEER_VERBOSE=1.

import * as crypto from 'node:crypto';
import * as http from 'node:http';
import argon2 from 'argon2';
import Provider, { errors } from 'oidc-provider';

const host = process.env.PEER_HOST || '127.0.0.1';
const port = Number(process.env.PEER_PORT || 19710);
const issuer = `http://${host}:${port}`;
const REDIRECT = process.env.PEER_REDIRECT_URI || 'http://127.0.0.1/callback';
const USERNAME = process.env.PEER_USERNAME || 'bench';
const ACCOUNT_ID = 'bench-account-0001';
const CLIENT_ID = 'bench-web';
const RESOURCE = 'urn:bench-login';

if (process.env.PEER_VERBOSE !== '1') {
  console.info = () => {};
  console.warn = () => {};
  console.log = () => {};
}

// ---------------------------------------------------------------- password
function argonOptions(spec) {
  const o = Object.fromEntries(spec.split(',').map((kv) => kv.split('=')));
  return {
    type: argon2.argon2id,
    memoryCost: Number(o.m),
    timeCost: Number(o.t),
    parallelism: Number(o.p),
  };
}
let passwordHash = process.env.PEER_PASSWORD_HASH || '';
if (!passwordHash) {
  if (!process.env.PEER_PASSWORD) {
    process.stderr.write('PEER_PASSWORD or PEER_PASSWORD_HASH is required\n');
    process.exit(2);
  }
  passwordHash = await argon2.hash(process.env.PEER_PASSWORD, argonOptions(process.env.PEER_ARGON2 || 'm=19456,t=2,p=1'));
}
if (!passwordHash.startsWith('$argon2id$')) {
  process.stderr.write(`not an argon2id PHC string: ${passwordHash}\n`);
  process.exit(2);
}
if (process.env.PEER_PASSWORD && !(await argon2.verify(passwordHash, process.env.PEER_PASSWORD))) {
  process.stderr.write('PEER_PASSWORD does not match PEER_PASSWORD_HASH\n');
  process.exit(2);
}
// A hash of nothing in particular with the same parameters, verified for an
// unknown user so that both paths cost one argon2id computation.
const paramsOf = (phc) => phc.split('$')[3];
const dummyHash = await argon2.hash(crypto.randomBytes(16).toString('hex'), argonOptions(paramsOf(passwordHash)));

async function authenticate(username, password) {
  const known = username === USERNAME;
  const ok = await argon2.verify(known ? passwordHash : dummyHash, String(password ?? ''));
  return known && ok ? ACCOUNT_ID : undefined;
}

// ---------------------------------------------------------------- keys
const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const jwk = (key, alg) => ({
  ...key.export({ format: 'jwk' }),
  kid: crypto.randomBytes(8).toString('hex'),
  alg,
  use: 'sig',
});

// ---------------------------------------------------------------- provider
const configuration = {
  clients: [
    {
      client_id: CLIENT_ID,
      token_endpoint_auth_method: 'none',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      redirect_uris: [REDIRECT],
      scope: 'openid profile',
      id_token_signed_response_alg: 'RS256',
    },
  ],
  jwks: { keys: [jwk(rsa, 'RS256'), jwk(ec, 'ES256')] },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
  },
  conformIdTokenClaims: false,
  async findAccount(_ctx, sub) {
    if (sub !== ACCOUNT_ID) return undefined;
    return {
      accountId: ACCOUNT_ID,
      async claims() {
        return { sub: ACCOUNT_ID, name: USERNAME, preferred_username: USERNAME };
      },
    };
  },
  // First-party client: no consent screen; the grant is made on first use.
  async loadExistingGrant(ctx) {
    const { Grant } = ctx.oidc.provider;
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return Grant.find(grantId);
    if (ctx.oidc.client.clientId !== CLIENT_ID || !ctx.oidc.session.accountId) return undefined;
    const grant = new Grant({ clientId: CLIENT_ID, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid profile');
    grant.addResourceScope(RESOURCE, 'openid profile');
    await grant.save();
    return grant;
  },
  // Portcullis issues a refresh token with every code redemption for a client
  // that has the refresh_token grant (no offline_access scope needed) ...
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  // ... and rotates it on every use.
  rotateRefreshToken: true,
  features: {
    devInteractions: { enabled: false },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: 'openid profile',
          audience: RESOURCE,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  enabledJWA: {
    idTokenSigningAlgValues: ['RS256'],
  },
  // Portcullis' defaults: access 600 s, ID token 300 s, refresh idle 1 day,
  // session 8 h.
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    IdToken: 300,
    RefreshToken: 86_400,
    Interaction: 600,
    Session: 8 * 3600,
    Grant: 30 * 86_400,
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  proxy: false,
};

const provider = new Provider(issuer, configuration);
provider.on('server_error', (_ctx, err) => {
  process.stderr.write(`server_error: ${err && err.stack ? err.stack : err}\n`);
});
const callback = provider.callback();

// ---------------------------------------------------------------- interactions
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function readForm(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > 16 * 1024) {
        reject(new Error('body too large'));
        req.destroy();
      } else chunks.push(c);
    });
    req.on('end', () => resolve(new URLSearchParams(Buffer.concat(chunks).toString('utf8'))));
    req.on('error', reject);
  });
}

function send(res, status, type, body) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch\n');
  const { prompt } = details;
  if (req.method === 'GET' && !action) {
    if (prompt.name !== 'login') {
      // consent (never reached for bench-web: loadExistingGrant made the grant)
      return send(res, 400, 'text/plain', `unsupported prompt ${prompt.name}\n`);
    }
    const page =
      '<!doctype html><title>Sign in</title>' +
      `<form method="post" action="/interaction/${esc(uid)}/login">` +
      '<input name="username" autocomplete="username">' +
      '<input name="password" type="password" autocomplete="current-password">' +
      '<button>Sign in</button></form>\n';
    return send(res, 200, 'text/html; charset=utf-8', page);
  }
  if (req.method === 'POST' && action === 'login' && prompt.name === 'login') {
    const form = await readForm(req);
    const accountId = await authenticate(form.get('username'), form.get('password'));
    if (!accountId) return send(res, 401, 'text/plain', 'invalid username or password\n');
    return provider.interactionFinished(req, res, { login: { accountId, amr: ['pwd'] } }, { mergeWithLastSubmission: false });
  }
  return send(res, 400, 'text/plain', 'unexpected interaction request\n');
}

const server = http.createServer((req, res) => {
  const m = req.url.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?(?:\?.*)?$/);
  if (!m) return callback(req, res);
  interaction(req, res, m[1], m[2]).catch((err) => {
    if (err instanceof errors.SessionNotFound) return send(res, 400, 'text/plain', 'interaction expired\n');
    process.stderr.write(`interaction error: ${err && err.stack ? err.stack : err}\n`);
    if (!res.headersSent) send(res, 500, 'text/plain', 'error\n');
  });
});
server.keepAliveTimeout = 65_000;
server.listen(port, host, () => {
  process.stderr.write(`oidc-provider (login peer) ${issuer} listening (pid ${process.pid})\n`);
});

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
