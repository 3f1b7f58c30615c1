//! The token endpoint's browser-login grants: `authorization_code` (RFC
//! 6749 §4.1.3, RFC 7636 §4.6) and `refresh_token` (§6, rotated on every
//! use, RFC 9700 §4.14), with ID tokens (OIDC Core §3.1.3). What is issued
//! is recorded in the store in the same transaction that spends the code or
//! rotates the refresh token.

use super::SharedState;
use super::error::ApiError;
use super::form::FormParams;
use super::token::{access_ttl, mint_access_token, no_store};
use crate::authorize::verify_pkce;
use crate::crypto::random_token;
use crate::login::digest;
use crate::model::{Client, Credential, GrantType, User, UserId};
use crate::store::{Grant, Issuance, RefreshOutcome};
use axum::Json;
use axum::response::{IntoResponse, Response};
use portcullis_core::jose::{
    AccessTokenClaims, Audiences, Confirmation, IdTokenClaims, SigningAlgorithm, at_hash,
};
use portcullis_core::oauth::{ErrorCode, OAuthError};
use portcullis_core::{ScopeSet, UnixTime};
use serde_json::{Map, Value, json};
use std::str::FromStr;

fn invalid_grant(why: &'static str) -> ApiError {
    OAuthError::new(ErrorCode::InvalidGrant, why).into()
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(&e)
}

/// The profile and email claims the granted scope allows (OIDC Core §5.4),
/// for ID tokens and userinfo.
pub(super) fn profile_claims(user: &User, scope: &str) -> Map<String, Value> {
    let mut m = Map::new();
    let has = |s: &str| scope.split(' ').any(|v| v == s);
    if has("profile") {
        m.insert("name".into(), user.profile.display_name.clone().into());
        m.insert("preferred_username".into(), user.username.as_str().into());
    }
    if has("email")
        && let Some(email) = &user.profile.email
    {
        m.insert("email".into(), email.clone().into());
        m.insert("email_verified".into(), user.profile.email_verified.into());
    }
    m
}

/// What a code redemption or refresh issues besides the refresh token.
struct Issue<'a> {
    client: &'a Client,
    grant: GrantType,
    user: &'a User,
    scope: &'a str,
    audiences: &'a [String],
    /// The user's roles now (RBAC).
    roles: &'a [String],
    jti: String,
    ttl: u64,
    auth_time: UnixTime,
    sid: &'a str,
    nonce: Option<&'a str>,
    now: UnixTime,
    /// The certificate the access token is bound to (RFC 8705 §3).
    cnf: Option<&'a Confirmation>,
}

/// Signs the access token and, with `openid`, the ID token (RS256), and
/// writes the token response.
fn respond(s: &SharedState, i: Issue<'_>, refresh: Option<&str>) -> Result<Response, ApiError> {
    let claims = AccessTokenClaims {
        iss: s.issuer.to_string(),
        sub: i.user.id.to_string(),
        aud: Audiences::from_vec(i.audiences.to_vec()),
        exp: i.now + i.ttl,
        iat: i.now,
        nbf: i.now,
        jti: i.jti,
        client_id: i.client.id.to_string(),
        scope: (!i.scope.is_empty()).then(|| i.scope.to_owned()),
        act: None,
        roles: i.roles.to_vec(),
        cnf: i.cnf.cloned(),
    };
    let access = mint_access_token(s, i.grant, &claims, i.now)?;
    let mut body = json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": i.ttl,
    });
    let obj = body.as_object_mut().ok_or_else(|| internal("token body"))?;
    if !i.scope.is_empty() {
        obj.insert("scope".into(), i.scope.into());
    }
    if i.scope.split(' ').any(|v| v == "openid") {
        let snapshot = s.keys.snapshot();
        let key = snapshot
            .signer_for(SigningAlgorithm::Rs256, i.now)
            .ok_or_else(|| internal("no active RS256 key for ID tokens"))?;
        let id = IdTokenClaims {
            iss: s.issuer.to_string(),
            sub: i.user.id.to_string(),
            aud: i.client.id.to_string(),
            exp: i.now + s.login.id_token_ttl,
            iat: i.now,
            auth_time: i.auth_time,
            nonce: i.nonce.map(str::to_owned),
            azp: i.client.id.to_string(),
            at_hash: Some(at_hash(key.alg(), &access)),
            sid: Some(i.sid.to_owned()),
            amr: vec!["pwd".into()],
            profile: profile_claims(i.user, i.scope),
        };
        let mut header = Map::new();
        header.insert("typ".into(), "JWT".into());
        let id_token = key.sign_with_header(header, &id).map_err(internal)?;
        obj.insert("id_token".into(), id_token.into());
    }
    if let Some(r) = refresh {
        obj.insert("refresh_token".into(), r.into());
    }
    Ok(no_store(Json(body).into_response()))
}

async fn enabled_user(s: &SharedState, id: &str) -> Result<Option<User>, ApiError> {
    let Ok(id) = UserId::from_str(id) else {
        return Ok(None);
    };
    Ok(s.users.get(&id).await?.filter(|u| u.enabled))
}

/// A new refresh token for `client`, if it has the grant: (token, digest,
/// idle expiry).
fn new_refresh(
    s: &SharedState,
    client: &Client,
    now: UnixTime,
) -> Result<Option<(String, Vec<u8>, UnixTime)>, ApiError> {
    if !client.grant_types.contains(&GrantType::RefreshToken) {
        return Ok(None);
    }
    let token = random_token(32).map_err(internal)?;
    let key = digest(s.clients.master(), "refresh", &token);
    Ok(Some((token, key, now + s.login.refresh_idle_ttl)))
}

/// Makes sure the ID-token chain has its key before a grant is spent: on a
/// first start the server serves before it made that key (see
/// [`crate::keys::KeyRing::ensure_chains`]).
async fn id_token_key(s: &SharedState) -> Result<(), ApiError> {
    s.keys.ensure_chains().await.map_err(internal)
}

/// `grant_type=authorization_code`.
pub(super) async fn authorization_code(
    s: &SharedState,
    client: &Client,
    form: &FormParams,
    cnf: Option<&Confirmation>,
) -> Result<Response, ApiError> {
    let code = form
        .get("code")
        .ok_or_else(|| OAuthError::invalid_request("code is missing"))?;
    id_token_key(s).await?;
    let now = s.clock.now();
    let key = digest(s.clients.master(), "code", code);
    let Some(row) = s.store.get_code(&key).await? else {
        return Err(invalid_grant("the code is invalid or expired"));
    };
    if row.used {
        // RFC 6749 §4.1.2: a code used twice revokes what it was used for.
        if s.store.revoke_code_grant(&key, now).await? {
            crate::audit::grant_revoked(client.id.as_str(), "authorization code reused");
        }
        return Err(invalid_grant(
            "the code was already used; the tokens issued for it are revoked",
        ));
    }
    if row.expires_at <= now {
        return Err(invalid_grant("the code is invalid or expired"));
    }
    if row.client_id != client.id.as_str() {
        return Err(invalid_grant("the code was issued to another client"));
    }
    if form.get("redirect_uri") != Some(row.redirect_uri.as_str()) {
        return Err(invalid_grant(
            "redirect_uri does not match the authorization request",
        ));
    }
    match (&row.code_challenge, form.get("code_verifier")) {
        (Some(c), Some(v)) if verify_pkce(c, v) => {}
        (Some(_), Some(_)) => {
            return Err(invalid_grant(
                "code_verifier does not match the code_challenge",
            ));
        }
        (Some(_), None) => return Err(invalid_grant("code_verifier is missing")),
        (None, Some(_)) => {
            return Err(invalid_grant(
                "code_verifier sent, but the authorization request had no code_challenge",
            ));
        }
        (None, None) => {}
    }
    let Some(user) = enabled_user(s, &row.user_id).await? else {
        return Err(invalid_grant("the user can no longer sign in"));
    };
    // Roles: scopes some role grants only for holders of such a role.
    let held = s.roles.for_user(&user).await?;
    let scope = held.filter(&row.scope);
    let ttl = access_ttl(s, client);
    let jti = random_token(16).map_err(internal)?;
    let refresh = new_refresh(s, client, now)?;
    let grant = Grant {
        id: random_token(16).map_err(internal)?,
        client_id: client.id.to_string(),
        user_id: row.user_id.clone(),
        sid: row.sid.clone(),
        scope: scope.clone(),
        audiences: row.audiences.clone(),
        auth_time: row.auth_time,
        expires_at: now + s.login.refresh_max_ttl,
        // A public client's refresh tokens are bound to its certificate
        // (RFC 8705 §4); a confidential client's are bound to it anyway.
        cnf_x5t: cnf
            .filter(|_| matches!(client.credential, Credential::None))
            .map(|c| c.x5t_s256.clone()),
    };
    let issued = Issuance {
        access_jti: jti.clone(),
        access_exp: now + ttl,
        refresh: refresh.as_ref().map(|(_, d, exp)| (d.clone(), *exp)),
    };
    if !s.store.redeem_code(&key, &grant, &issued, now).await? {
        // Redeemed concurrently (or expired this instant): a replay.
        s.store.revoke_code_grant(&key, now).await?;
        crate::audit::grant_revoked(client.id.as_str(), "authorization code reused");
        return Err(invalid_grant(
            "the code was already used; the tokens issued for it are revoked",
        ));
    }
    let issue = Issue {
        client,
        grant: GrantType::AuthorizationCode,
        user: &user,
        scope: &scope,
        audiences: &row.audiences,
        roles: &held.roles,
        jti,
        ttl,
        auth_time: row.auth_time,
        sid: &row.sid,
        nonce: row.nonce.as_deref(),
        now,
        cnf,
    };
    respond(s, issue, refresh.as_ref().map(|(t, _, _)| t.as_str()))
}

/// `grant_type=refresh_token`.
pub(super) async fn refresh_token(
    s: &SharedState,
    client: &Client,
    form: &FormParams,
    cnf: Option<&Confirmation>,
) -> Result<Response, ApiError> {
    let presented = form
        .get("refresh_token")
        .ok_or_else(|| OAuthError::invalid_request("refresh_token is missing"))?;
    id_token_key(s).await?;
    let now = s.clock.now();
    let key = digest(s.clients.master(), "refresh", presented);
    // A public client's grant may be bound to a certificate (RFC 8705 §4):
    // checked before the token is spent, like a narrower scope (RFC 6749
    // §6), which is never a wider one.
    let public = matches!(client.credential, Credential::None);
    let before = if public || form.get("scope").is_some() {
        let Some(g) = s.store.refresh_grant(&key).await? else {
            return Err(invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ));
        };
        if g.cnf_x5t
            .as_deref()
            .is_some_and(|bound| cnf.is_none_or(|c| c.x5t_s256 != bound))
        {
            return Err(invalid_grant(
                "the refresh token is bound to another TLS client certificate",
            ));
        }
        Some(g)
    } else {
        None
    };
    let scope = match (form.get("scope"), before) {
        (Some(v), Some(g)) => {
            let req = ScopeSet::from_str(v).map_err(|e| {
                OAuthError::new(ErrorCode::InvalidScope, format!("malformed scope: {e}"))
            })?;
            let granted = ScopeSet::from_str(&g.scope).unwrap_or_default();
            if req.difference(&granted).next().is_some() {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    "the requested scope exceeds the one originally granted",
                )
                .into());
            }
            Some(req.to_string())
        }
        _ => None,
    };
    let ttl = access_ttl(s, client);
    let jti = random_token(16).map_err(internal)?;
    let Some((token, new_key, idle_exp)) = new_refresh(s, client, now)? else {
        return Err(invalid_grant(
            "the refresh token is invalid, expired or revoked",
        ));
    };
    let issued = Issuance {
        access_jti: jti.clone(),
        access_exp: now + ttl,
        refresh: Some((new_key, idle_exp)),
    };
    let grace = s.login.refresh_reuse_grace;
    let grant = match s
        .store
        .rotate_refresh(&key, client.id.as_str(), &issued, grace, now)
        .await?
    {
        RefreshOutcome::Rotated(g) => g,
        RefreshOutcome::Invalid => {
            return Err(invalid_grant(
                "the refresh token is invalid, expired or revoked",
            ));
        }
        RefreshOutcome::Replayed { .. } => {
            crate::audit::grant_revoked(client.id.as_str(), "refresh token reused");
            return Err(invalid_grant(
                "the refresh token was already used; every token of its grant is revoked",
            ));
        }
    };
    let Some(user) = enabled_user(s, &grant.user_id).await? else {
        s.store.revoke_grant(&grant.id, now).await?;
        return Err(invalid_grant("the user can no longer sign in"));
    };
    let held = s.roles.for_user(&user).await?;
    let scope = held.filter(&scope.unwrap_or_else(|| grant.scope.clone()));
    let issue = Issue {
        client,
        grant: GrantType::RefreshToken,
        user: &user,
        scope: &scope,
        audiences: &grant.audiences,
        roles: &held.roles,
        jti,
        ttl,
        auth_time: grant.auth_time,
        sid: &grant.sid,
        nonce: None,
        now,
        cnf,
    };
    respond(s, issue, Some(&token))
}
