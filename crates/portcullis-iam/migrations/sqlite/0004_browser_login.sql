-- Browser login (authorization-code flow, OIDC). Every secret value a
-- browser or client holds (session cookie, code, refresh token) is stored
-- only as its keyed digest (HMAC-SHA256 under the master key).

-- SSO sessions at the IAM server. `sid` is the public session id put in ID
-- tokens; the cookie value is known only by its digest.
CREATE TABLE login_sessions (
    digest     BLOB PRIMARY KEY NOT NULL,
    sid        TEXT NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    auth_time  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at   INTEGER
);
CREATE INDEX login_sessions_user ON login_sessions (user_id);
CREATE INDEX login_sessions_expiry ON login_sessions (expires_at);

-- What one authorization (a redeemed code) granted: the unit that refresh
-- tokens rotate within and that is revoked as a whole (code reuse, refresh
-- token replay, logout, user disabled). `expires_at` is the absolute end of
-- its refresh tokens.
CREATE TABLE grants (
    id         TEXT PRIMARY KEY NOT NULL,
    client_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    sid        TEXT NOT NULL,
    scope      TEXT NOT NULL,
    audiences  TEXT NOT NULL,
    auth_time  INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX grants_sid ON grants (sid);
CREATE INDEX grants_user ON grants (user_id);

-- Access tokens issued under a grant, so revoking the grant revokes them
-- (through the revocation feed, by jti).
CREATE TABLE grant_tokens (
    grant_id   TEXT NOT NULL,
    jti        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (grant_id, jti)
);

-- Authorization codes: single use (`used_at`), bound to everything below.
CREATE TABLE auth_codes (
    digest         BLOB PRIMARY KEY NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT,
    nonce          TEXT,
    scope          TEXT NOT NULL,
    audiences      TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    auth_time      INTEGER NOT NULL,
    sid            TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER,
    grant_id       TEXT
);
CREATE INDEX auth_codes_expiry ON auth_codes (expires_at);

-- Refresh tokens: rotated on every use (`rotated_at`); a rotated one used
-- again after the grace window revokes its grant (the family).
CREATE TABLE refresh_tokens (
    digest          BLOB PRIMARY KEY NOT NULL,
    grant_id        TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL,
    rotated_at      INTEGER
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

-- Failed sign-ins per key ('user:<lowercased name>' or 'ip:<address>'),
-- for throttling that survives restarts.
CREATE TABLE login_failures (
    key        TEXT PRIMARY KEY NOT NULL,
    failures   INTEGER NOT NULL,
    last_at    INTEGER NOT NULL
);
