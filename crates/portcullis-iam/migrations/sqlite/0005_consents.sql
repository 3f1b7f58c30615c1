-- Consent a user gave a third-party client: the scopes approved, so that the
-- consent page is skipped while a request stays within them. Withdrawing it
-- (admin API, CLI) also revokes the user's grants to that client.
CREATE TABLE consents (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    client_id  TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    granted_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
);
