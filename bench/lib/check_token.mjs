// Fetch one client-credentials token from an authorization server and check
// it is a real ES256 JWT: three dot-separated parts, header alg ES256 and
// typ at+jwt, signature valid under a key from the server's published JWKS
// (found through its discovery document), aud bench-api, scope read.
//
//   node check_token.mjs ISSUER_BASE_URL BASIC_B64 [BODY]
//
// Prints the token response, the decoded header and claims, and `TOKEN_OK`;
// exits 1 with `TOKEN_BAD: why` otherwise.
import * as crypto from 'node:crypto';

const [base, basic, body = 'grant_type=client_credentials&scope=read'] = process.argv.slice(2);
const b64json = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
const bad = (why) => { console.log(`TOKEN_BAD: ${why}`); process.exit(1); };

const limit = () => ({ signal: AbortSignal.timeout(5000) }); // no request may hang
const disco = await (await fetch(`${base}/.well-known/openid-configuration`, limit())).json();
const res = await fetch(disco.token_endpoint, {
  method: 'POST',
  headers: {
    authorization: `Basic ${basic}`,
    'content-type': 'application/x-www-form-urlencoded',
    accept: 'application/json',
  },
  body,
  ...limit(),
});
const text = await res.text();
console.log(`token_endpoint ${disco.token_endpoint} -> HTTP ${res.status}`);
console.log(`response: ${text.length > 200 ? `${text.slice(0, 200)}...` : text}`);
if (res.status !== 200) bad(`HTTP ${res.status}`);
const tok = JSON.parse(text);
const parts = String(tok.access_token).split('.');
if (parts.length !== 3) bad(`access_token has ${parts.length} dot-separated parts, want 3`);
const header = b64json(parts[0]);
const claims = b64json(parts[1]);
console.log(`header: ${JSON.stringify(header)}`);
console.log(`claims: ${JSON.stringify(claims)}`);
if (header.alg !== 'ES256') bad(`header alg ${header.alg}, want ES256`);
if (String(header.typ).toLowerCase() !== 'at+jwt') bad(`header typ ${header.typ}, want at+jwt`);
const jwks = await (await fetch(disco.jwks_uri, limit())).json();
const jwk = jwks.keys.find((k) => k.kid === header.kid) ?? (jwks.keys.length === 1 ? jwks.keys[0] : undefined);
if (!jwk) bad(`no JWKS key with kid ${header.kid}`);
const ok = crypto.verify(
  'sha256',
  Buffer.from(`${parts[0]}.${parts[1]}`),
  { key: crypto.createPublicKey({ key: jwk, format: 'jwk' }), dsaEncoding: 'ieee-p1363' },
  Buffer.from(parts[2], 'base64url'),
);
if (!ok) bad('ES256 signature does not verify against the published JWKS');
const aud = [].concat(claims.aud);
if (!aud.includes('bench-api')) bad(`aud ${JSON.stringify(claims.aud)} lacks bench-api`);
if (claims.scope !== 'read') bad(`scope ${claims.scope}, want read`);
console.log(`TOKEN_OK alg=ES256 typ=${header.typ} sig=valid(kid ${header.kid}) aud=${JSON.stringify(claims.aud)} scope=${claims.scope} iss=${claims.iss}`);
