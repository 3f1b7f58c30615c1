-- People who log in; `id` is their OIDC `sub` (opaque, random, never reused).
-- `username` is stored lowercased and is unique regardless of case.
-- `password_hash` is an argon2id PHC string, NULL when the user has no
-- password login. `roles` and `groups` are JSON arrays of strings.
CREATE TABLE users (
    id             TEXT PRIMARY KEY NOT NULL,
    username       TEXT NOT NULL UNIQUE COLLATE NOCASE,
    email          TEXT,
    email_verified INTEGER NOT NULL DEFAULT 0,
    display_name   TEXT NOT NULL,
    password_hash  TEXT,
    roles          TEXT NOT NULL DEFAULT '[]',
    groups         TEXT NOT NULL DEFAULT '[]',
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
