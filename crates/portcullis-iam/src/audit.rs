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

/// A person signed in with a password.
pub fn login_succeeded(user_id: &str, ip: &str, client_id: &str, sid: &str) {
    tracing::info!(target: TARGET, event = "login_succeeded", user_id, ip, client_id, sid);
}

/// A sign-in failed (unknown user, wrong password, disabled: not told apart).
pub fn login_failed(username: &str, ip: &str, client_id: &str) {
    let username: String = username
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    tracing::warn!(target: TARGET, event = "login_failed", username, ip, client_id);
}

/// A sign-in was refused by the throttle (lockout).
pub fn login_throttled(username: &str, ip: &str) {
    let username: String = username
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    tracing::warn!(target: TARGET, event = "login_locked_out", username, ip);
}

/// A user approved a third-party client.
pub fn consent_given(user_id: &str, client_id: &str, scope: &str) {
    tracing::info!(target: TARGET, event = "consent_given", user_id, client_id, scope);
}

/// A role was created, updated or deleted.
pub fn role_changed(name: &str, action: &'static str) {
    tracing::info!(target: TARGET, event = "role_changed", role = name, action);
}

/// A token was exchanged (RFC 8693): who acted, for whom, from which token
/// to which (by `jti`), for which audience.
pub fn token_exchanged(actor: &str, sub: &str, from_jti: &str, jti: &str, aud: &str) {
    tracing::info!(target: TARGET, event = "token_exchanged", actor, sub, from_jti, jti, aud);
}

/// A user's consent to a client was withdrawn (and its grants revoked).
pub fn consent_revoked(user_id: &str, client_id: &str, actor: &str) {
    tracing::info!(target: TARGET, event = "consent_revoked", user_id, client_id, actor);
}

/// An SSO session ended (RP-initiated logout).
pub fn logout(user_id: &str, sid: &str, client_id: &str) {
    tracing::info!(target: TARGET, event = "logout", user_id, sid, client_id);
}

/// A grant was revoked: a replayed code or refresh token, or a refresh
/// token revoked by its client (counted by reason).
pub fn grant_revoked(client_id: &str, reason: &'static str) {
    metrics::counter!(crate::metrics::names::REPLAYS, "reason" => reason).increment(1);
    tracing::warn!(target: TARGET, event = "grant_revoked", client_id, reason);
}
