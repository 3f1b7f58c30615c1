//! UserInfo (OIDC Core §5.3) and RP-initiated logout (OIDC RP-Initiated
//! Logout 1.0: `id_token_hint` required, registered
//! `post_logout_redirect_uri` only).

use super::SharedState;
use super::code_grant::profile_claims;
use super::form::FormParams;
use super::pages;
use super::token::{active_claims, no_store};
use crate::login::{SESSION_COOKIE, client_redirect, digest};
use crate::model::UserId;
use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::str::FromStr;

/// A Bearer error (RFC 6750 §3).
fn bearer_error(status: StatusCode, code: &'static str, why: &'static str) -> Response {
    let challenge = format!("Bearer error=\"{code}\", error_description=\"{why}\"");
    let mut resp = (
        status,
        Json(json!({"error": code, "error_description": why})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    no_store(resp)
}

/// `GET|POST /oauth2/userinfo` with `Authorization: Bearer`.
pub async fn userinfo(State(s): State<SharedState>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let Some(token) = token else {
        let mut r = bearer_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request",
            "a Bearer token is required",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let invalid = || {
        bearer_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "the access token is invalid, expired or revoked",
        )
    };
    let claims = match active_claims(&s, token).await {
        Ok(Some(c)) => c,
        Ok(None) => return invalid(),
        Err(e) => return e.into_response(),
    };
    let scope = claims.scope.unwrap_or_default();
    if !scope.split(' ').any(|v| v == "openid") {
        return bearer_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "the openid scope is required",
        );
    }
    let user = match UserId::from_str(&claims.sub) {
        Ok(id) => s.users.get(&id).await,
        Err(_) => return invalid(),
    };
    let user = match user {
        Ok(Some(u)) if u.enabled => u,
        Ok(_) => return invalid(),
        Err(e) => return super::error::ApiError::from(e).into_response(),
    };
    let mut body = profile_claims(&user, &scope);
    body.insert("sub".into(), user.id.to_string().into());
    no_store(Json(Value::Object(body)).into_response())
}

/// The claims of an ID token we signed (expired ones too: a hint may be
/// old), or `None`.
fn id_token_hint(s: &SharedState, token: &str) -> Option<Value> {
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header, jwk::JwkSet};
    let header = decode_header(token).ok()?;
    if header.alg != jsonwebtoken::Algorithm::RS256 || header.typ.as_deref() != Some("JWT") {
        return None;
    }
    let set: JwkSet = serde_json::from_str(s.keys.snapshot().jwks_json()).ok()?;
    let key = DecodingKey::from_jwk(set.find(&header.kid?)?).ok()?;
    let mut v = Validation::new(jsonwebtoken::Algorithm::RS256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.set_issuer(&[s.issuer.as_str()]);
    v.set_required_spec_claims(&["iss", "sub", "aud"]);
    decode::<Value>(token, &key, &v).ok().map(|d| d.claims)
}

/// `GET /oauth2/logout` (the `end_session_endpoint`).
pub async fn end_session(
    State(s): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let bad = |why: &str| pages::error(StatusCode::BAD_REQUEST, "Cannot sign out", why);
    let q = match FormParams::parse(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(q) => q,
        Err(_) => return bad("The sign-out request is malformed."),
    };
    let Some(hint) = q.get("id_token_hint").and_then(|t| id_token_hint(&s, t)) else {
        return bad("The sign-out request must carry a valid id_token_hint.");
    };
    let Some(client_id) = hint["aud"].as_str() else {
        return bad("The sign-out request must carry a valid id_token_hint.");
    };
    if q.get("client_id").is_some_and(|c| c != client_id) {
        return bad("client_id does not match the id_token_hint.");
    }
    let client = match portcullis_core::ClientId::from_str(client_id) {
        Ok(id) => s.clients.get(&id).await.ok().flatten(),
        Err(_) => None,
    };
    let Some(client) = client else {
        return bad("The application that asked to sign you out is unknown.");
    };
    let back = q.get("post_logout_redirect_uri");
    if let Some(uri) = back
        && !client
            .login
            .post_logout_redirect_uris
            .iter()
            .any(|r| r == uri)
    {
        return bad(
            "The return address (post_logout_redirect_uri) is not registered for this application.",
        );
    }
    // End the browser's session, or the one the hint names.
    let now = s.clock.now();
    let mut sid = hint["sid"].as_str().map(str::to_owned);
    if let Some(cookie) = s.cookies.get(&headers, SESSION_COOKIE) {
        let key = digest(s.clients.master(), "session", cookie);
        match s.store.get_session(&key, now).await {
            Ok(Some(sess)) => sid = Some(sess.sid),
            Ok(None) => {}
            Err(e) => return super::error::ApiError::from(e).into_response(),
        }
    }
    if let Some(sid) = &sid {
        if let Err(e) = s.store.end_session(sid, now).await {
            return super::error::ApiError::from(e).into_response();
        }
        crate::audit::logout(hint["sub"].as_str().unwrap_or("-"), sid, client_id);
    }
    let mut resp = match back {
        Some(uri) => {
            let to = client_redirect(uri, &[], q.get("state"), s.issuer.as_str());
            let mut r = StatusCode::FOUND.into_response();
            match HeaderValue::from_str(&to) {
                Ok(v) => {
                    r.headers_mut().insert(header::LOCATION, v);
                    no_store(r)
                }
                Err(_) => return bad("The return address cannot be used."),
            }
        }
        None => pages::message("Signed out", "You are signed out."),
    };
    if let Ok(v) = HeaderValue::from_str(&s.cookies.set(SESSION_COOKIE, "", Some(0))) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}
