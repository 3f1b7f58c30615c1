// Peer for the Portcullis token benchmark (bench/iam-tokens.sh).
//
// panva/oidc-provider configured as close as it gets to bench/iam-bench.toml:
// one confidential client `bench-client` (client_secret_basic), the
// client_credentials grant only, scope `read`, audience `bench-api`, and
// ES256-signed JWT access tokens (typ at+jwt) from a P-256 key generated at
// start. One Node process (Node is single-threaded; no cluster module).
//
// Settings (env): PEER_PORT (default 19100), PEER_HOST (default 127.0.0.1).
//
// Note on storage: JWT-format access tokens are not persisted by
// oidc-provider (models/formats/jwt.js returns no payload to upsert), so the
// default in-memory adapter sees no writes on this path; the client is static
// configuration. The adapter's "development-only" start-up notice is therefore
// irrelevant for this benchmark and is silenced with the rest of the console.

import * as crypto from 'node:crypto';
import Provider, { errors } from 'oidc-provider';

const host = process.env.PEER_HOST || '127.0.0.1';
const port = Number(process.env.PEER_PORT || 19100);
const issuer = `http://${host}:${port}`;

const CLIENT_ID = 'bench-client';
const CLIENT_SECRET = 'bench-secret-0123456789abcdef0123456789abcdef';
// oidc-provider requires a resource indicator to be an absolute URI (RFC 8707),
// so the indicator is a URN; the token's `aud` is plain `bench-api`, as with
// Portcullis.
const RESOURCE = 'urn:bench-api';
const AUDIENCE = 'bench-api';

// Fresh ES256 signing key for this run (private JWK, as oidc-provider wants).
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingJwk = {
  ...privateKey.export({ format: 'jwk' }),
  kid: crypto.randomBytes(8).toString('hex'),
  alg: 'ES256',
  use: 'sig',
};

// oidc-provider prints start-up notices through console.info/console.warn
// (helpers/attention.js). Keep the benchmark output clean; errors still show.
if (process.env.PEER_VERBOSE !== '1') {
  console.info = () => {};
  console.warn = () => {};
  console.log = () => {};
}

const configuration = {
  clients: [
    {
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      scope: 'read',
    },
  ],
  clientDefaults: {
    grant_types: ['client_credentials'],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
  },
  jwks: { keys: [signingJwk] },
  scopes: ['read'],
  // Only what the client-credentials path needs; no interactive flows.
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: false },
    revocation: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // A request without `resource` still targets urn:bench-api (and so gets a JWT).
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, resourceIndicator) => {
        if (resourceIndicator !== RESOURCE) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: 'read',
          audience: AUDIENCE,
          accessTokenTTL: 600, // Portcullis default lifetime (expires_in 600)
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
  enabledJWA: {
    idTokenSigningAlgValues: ['ES256'],
  },
  ttl: {
    ClientCredentials: 600,
  },
  cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
  // Not behind a proxy.
  proxy: false,
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;

// Surface server errors (a benchmark that silently 500s is worthless).
provider.on('server_error', (_ctx, err) => {
  process.stderr.write(`server_error: ${err && err.stack ? err.stack : err}\n`);
});

const server = provider.listen(port, host, () => {
  process.stderr.write(`oidc-provider ${issuer} listening (pid ${process.pid})\n`);
});
server.keepAliveTimeout = 65_000;

const stop = () => {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
