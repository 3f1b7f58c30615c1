-- The PostgreSQL schema: the same tables as the SQLite migrations 0001-0005,
-- in one step. Times are Unix seconds (BIGINT); lists are JSON arrays of
-- strings stored as text; every secret a browser or client holds (session
-- cookie, code, refresh token) is stored only as its keyed digest.

-- Clients of the authorization server. A public client (auth method "none")
-- has no credential column set and public = TRUE.
CREATE TABLE clients (
    id                        TEXT PRIMARY KEY,
    name                      TEXT NOT NULL,
    secret_digest             BYTEA,
    jwks                      TEXT,
    jwks_uri                  TEXT,
    grant_types               TEXT NOT NULL,
    allowed_scopes            TEXT NOT NULL,
    default_scopes            TEXT NOT NULL,
    allowed_audiences         TEXT NOT NULL,
    default_audiences         TEXT NOT NULL,
    access_token_ttl          BIGINT,
    enabled                   BOOLEAN NOT NULL,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL,
    public                    BOOLEAN NOT NULL DEFAULT FALSE,
    redirect_uris             TEXT NOT NULL DEFAULT '[]',
    post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]',
    first_party               BOOLEAN NOT NULL DEFAULT FALSE,
    require_pkce              BOOLEAN NOT NULL DEFAULT TRUE
);

-- Token signing keys. private_key is AES-256-GCM ciphertext (nonce || ct || tag).
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_key BYTEA NOT NULL,
    public_jwk  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    activate_at BIGINT NOT NULL
);

-- jti values of private_key_jwt assertions, single-use until they expire.
CREATE TABLE used_assertions (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX used_assertions_expiry ON used_assertions (expires_at);

-- Revocation feed: kind 'jti' (one token) or 'client' (every token of the
-- client issued at or before issued_before). Entries live until expires_at.
-- Readers page by seq; writers take an advisory lock before inserting, so
-- that seq order is commit order and no reader skips a late commit.
CREATE TABLE revocations (
    seq           BIGSERIAL PRIMARY KEY,
    kind          TEXT NOT NULL,
    subject       TEXT NOT NULL,
    issued_before BIGINT,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT NOT NULL
);
CREATE INDEX revocations_subject ON revocations (kind, subject);
CREATE INDEX revocations_expiry ON revocations (expires_at);

-- People who log in; `id` is their OIDC `sub`. `username` is stored
-- lowercased (the application lowercases it), so plain UNIQUE is
-- case-insensitive in effect.
CREATE TABLE users (
    id             TEXT PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    email          TEXT,
    email_verified BOOLEAN NOT NULL DEFAULT FALSE,
    display_name   TEXT NOT NULL,
    password_hash  TEXT,
    roles          TEXT NOT NULL DEFAULT '[]',
    groups         TEXT NOT NULL DEFAULT '[]',
    enabled        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);

-- SSO sessions at the IAM server (`sid` goes into ID tokens).
CREATE TABLE login_sessions (
    digest     BYTEA PRIMARY KEY,
    sid        TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    auth_time  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    ended_at   BIGINT
);
CREATE INDEX login_sessions_user ON login_sessions (user_id);
CREATE INDEX login_sessions_expiry ON login_sessions (expires_at);

-- What one redeemed code granted: the family its refresh tokens rotate in,
-- revoked as a whole. `expires_at` is the absolute end of its refresh tokens.
CREATE TABLE grants (
    id         TEXT PRIMARY KEY,
    client_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    sid        TEXT NOT NULL,
    scope      TEXT NOT NULL,
    audiences  TEXT NOT NULL,
    auth_time  BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX grants_sid ON grants (sid);
CREATE INDEX grants_user ON grants (user_id);
CREATE INDEX grants_expiry ON grants (expires_at);

-- Access tokens issued under a grant, so revoking the grant revokes them.
CREATE TABLE grant_tokens (
    grant_id   TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (grant_id, jti)
);
CREATE INDEX grant_tokens_expiry ON grant_tokens (expires_at);

-- Authorization codes: single use (`used_at`), bound to everything below.
CREATE TABLE auth_codes (
    digest         BYTEA PRIMARY KEY,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT,
    nonce          TEXT,
    scope          TEXT NOT NULL,
    audiences      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    auth_time      BIGINT NOT NULL,
    sid            TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    grant_id       TEXT
);
CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);

-- Refresh tokens: rotated on every use (`rotated_at`); a rotated one used
-- again after the grace window revokes its grant (the family).
CREATE TABLE refresh_tokens (
    digest          BYTEA PRIMARY KEY,
    grant_id        TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    idle_expires_at BIGINT NOT NULL,
    rotated_at      BIGINT
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

-- Failed sign-ins per key ('user:<name>' or 'ip:<address>').
CREATE TABLE login_failures (
    key      TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    last_at  BIGINT NOT NULL
);

-- Consent a user gave a third-party client (the scopes approved).
CREATE TABLE consents (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
