-- Browser-login settings of clients (authorization-code flow, OIDC).
-- A public client (token_endpoint_auth_method "none") has no credential
-- columns set and public = 1. Lists are JSON arrays of strings.
ALTER TABLE clients ADD COLUMN public INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN post_logout_redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE clients ADD COLUMN first_party INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN require_pkce INTEGER NOT NULL DEFAULT 1;
