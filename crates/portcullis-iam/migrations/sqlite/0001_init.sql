-- Clients of the authorization server. Lists are JSON arrays of strings.
CREATE TABLE clients (
    id                TEXT PRIMARY KEY NOT NULL,
    name              TEXT NOT NULL,
    secret_digest     BLOB,
    jwks              TEXT,
    jwks_uri          TEXT,
    grant_types       TEXT NOT NULL,
    allowed_scopes    TEXT NOT NULL,
    default_scopes    TEXT NOT NULL,
    allowed_audiences TEXT NOT NULL,
    default_audiences TEXT NOT NULL,
    access_token_ttl  INTEGER,
    enabled           INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

-- Token signing keys. private_key is AES-256-GCM ciphertext (nonce || ct || tag).
CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    alg         TEXT NOT NULL,
    private_key BLOB NOT NULL,
    public_jwk  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    activate_at INTEGER NOT NULL
);

-- jti values of private_key_jwt assertions, single-use until they expire.
CREATE TABLE used_assertions (
    client_id  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX used_assertions_expiry ON used_assertions (expires_at);

-- Revocation feed: kind 'jti' (one token) or 'client' (every token of the
-- client issued at or before issued_before). Entries live until expires_at.
CREATE TABLE revocations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    subject       TEXT NOT NULL,
    issued_before INTEGER,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER NOT NULL
);
CREATE INDEX revocations_subject ON revocations (kind, subject);
CREATE INDEX revocations_expiry ON revocations (expires_at);
