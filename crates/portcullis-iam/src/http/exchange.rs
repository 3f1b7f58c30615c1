//! The token endpoint's token-exchange grant (RFC 8693 §2): a service
//! presents the access token it received and gets one for a downstream
//! audience, carrying the original subject and an `act` claim naming it.
//! The decision is [`crate::exchange::decide`]; this is the wire.

use super::SharedState;
use super::error::ApiError;
use super::form::FormParams;
use super::token::{access_ttl, active_claims, mint_access_token, no_store};
use crate::crypto::random_token;
use crate::exchange::{ACCESS_TOKEN_TYPE, JWT_TYPE, decide};
use crate::model::{Client, GrantType};
use axum::Json;
use axum::response::{IntoResponse, Response};
use portcullis_core::jose::{AccessTokenClaims, Audiences, Confirmation};
use portcullis_core::oauth::OAuthError;
use serde_json::json;

fn invalid(why: &'static str) -> ApiError {
    OAuthError::invalid_request(why).into()
}

/// Whether a `*_token_type` names a token we can read.
fn readable(token_type: &str) -> bool {
    token_type == ACCESS_TOKEN_TYPE || token_type == JWT_TYPE
}

/// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`.
pub(super) async fn token_exchange(
    s: &SharedState,
    client: &Client,
    form: &FormParams,
    cnf: Option<&Confirmation>,
) -> Result<Response, ApiError> {
    let subject_token = form
        .get("subject_token")
        .ok_or_else(|| invalid("subject_token is missing"))?;
    let subject_type = form
        .get("subject_token_type")
        .ok_or_else(|| invalid("subject_token_type is missing"))?;
    if !readable(subject_type) {
        return Err(invalid(
            "subject_token_type must be urn:ietf:params:oauth:token-type:access_token or :jwt",
        ));
    }
    if form
        .get("requested_token_type")
        .is_some_and(|t| t != ACCESS_TOKEN_TYPE)
    {
        return Err(invalid("only access tokens are issued by exchange"));
    }
    // The actor is the authenticated client. An actor token, if sent, must
    // be one of ours held by that same client (RFC 8693 §2.1).
    match (form.get("actor_token"), form.get("actor_token_type")) {
        (None, None) => {}
        (Some(_), None) => return Err(invalid("actor_token_type is missing")),
        (None, Some(_)) => return Err(invalid("actor_token_type without actor_token")),
        (Some(token), Some(t)) => {
            if !readable(t) {
                return Err(invalid("actor_token_type is not supported"));
            }
            let actor = active_claims(s, token)
                .await?
                .ok_or_else(|| invalid("the actor token is invalid, expired or revoked"))?;
            if actor.client_id != client.id.as_str() {
                return Err(invalid(
                    "the actor token was not issued to the authenticated client",
                ));
            }
        }
    }
    let subject = active_claims(s, subject_token)
        .await?
        .ok_or_else(|| invalid("the subject token is invalid, expired or revoked"))?;
    let targets: Vec<&str> = form
        .get_all("audience")
        .chain(form.get_all("resource"))
        .collect();
    let decision = decide(
        &s.exchange,
        client.id.as_str(),
        &subject,
        &targets,
        form.get("scope"),
    )?;
    let now = s.clock.now();
    // Never outlives the token it was exchanged for.
    let ttl = access_ttl(s, client).min(subject.exp.saturating_sub(now));
    if ttl == 0 {
        return Err(invalid("the subject token has expired"));
    }
    let jti = random_token(16).map_err(|e| ApiError::internal(&e))?;
    let claims = AccessTokenClaims {
        iss: s.issuer.to_string(),
        sub: subject.sub.clone(),
        aud: Audiences::from_vec(decision.audiences),
        exp: now + ttl,
        iat: now,
        nbf: now,
        jti,
        client_id: client.id.to_string(),
        scope: (!decision.scope.is_empty()).then(|| decision.scope.clone()),
        act: Some(decision.act),
        // The subject's roles travel with it.
        roles: subject
            .extra
            .get("roles")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        cnf: cnf.cloned(),
    };
    let token = mint_access_token(s, GrantType::TokenExchange, &claims, now)?;
    crate::audit::token_exchanged(
        client.id.as_str(),
        &subject.sub,
        &subject.jti,
        &claims.jti,
        &claims.aud.to_vec().join(" "),
    );
    let mut body = json!({
        "access_token": token,
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": ttl,
    });
    if let (false, Some(obj)) = (decision.scope.is_empty(), body.as_object_mut()) {
        obj.insert("scope".into(), decision.scope.into());
    }
    Ok(no_store(Json(body).into_response()))
}
