-- Mutual-TLS client authentication and certificate-bound tokens (RFC 8705).
-- tls_auth: the certificate credential as JSON, e.g.
--   {"method": "tls_client_auth", "tls_client_auth_subject_dn": "CN=billing"}
--   {"method": "self_signed_tls_client_auth", "x5t#S256": ["..."]}
-- A certificate client has no other credential column set.
ALTER TABLE clients ADD COLUMN tls_auth TEXT;
ALTER TABLE clients ADD COLUMN tls_bound_tokens INTEGER NOT NULL DEFAULT 0;
-- x5t#S256 of the certificate a public client's refresh tokens are bound to.
ALTER TABLE grants ADD COLUMN cnf_x5t TEXT;
