//! Audit events: one structured log line per security-relevant event, on the
//! `portcullis::audit` target. Never a secret, never a token: tokens are
//! named by their `jti`.

use portcullis_core::jose::SigningAlgorithm;

const TARGET: &str = "portcullis::audit";

/// A token was issued.
pub fn token_issued(client_id: &str, grant: &str, jti: &str, scope: &str, aud: &str, exp: u64) {
    tracing::info!(target: TARGET, event = "token_issued", client_id, grant, jti, scope, aud, exp);
}

/// A token request was refused.
pub fn token_refused(client_id: Option<&str>, error: &str, reason: &str) {
    tracing::warn!(
        target: TARGET, event = "token_refused", client_id = client_id.unwrap_or("-"), error, reason
    );
}

/// Client authentication failed at some endpoint.
pub fn client_auth_failed(endpoint: &str, client_id: Option<&str>, method: &str, reason: &str) {
    tracing::warn!(
        target: TARGET, event = "client_auth_failed", endpoint,
        client_id = client_id.unwrap_or("-"), method, reason
    );
}

/// A token was revoked.
pub fn token_revoked(by_client: &str, jti: &str) {
    tracing::info!(target: TARGET, event = "token_revoked", client_id = by_client, jti);
}

/// A client was created, changed, deleted or had its secret rotated.
pub fn client_changed(action: &str, client_id: &str, actor: &str) {
    tracing::info!(target: TARGET, event = "client_changed", action, client_id, actor);
}

/// A signing key was created.
pub fn key_created(kid: &str, alg: SigningAlgorithm, activate_at: u64) {
    tracing::info!(target: TARGET, event = "key_created", kid, alg = alg.as_str(), activate_at);
}

/// A user was created, changed, disabled, deleted, had a password set, or
/// was applied from the config file. Never the password or its hash.
pub fn user_changed(action: &str, user_id: &str, username: &str, actor: &str) {
    tracing::info!(target: TARGET, event = "user_changed", action, user_id, username, actor);
}

/// An admin request was refused for a bad token.
pub fn admin_auth_failed(path: &str) {
    tracing::warn!(target: TARGET, event = "admin_auth_failed", path);
}
