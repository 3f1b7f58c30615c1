//! Token (RFC 6749 §4.4), introspection (RFC 7662) and revocation (RFC 7009)
//! endpoints, and the revocation feed for offline validators.

use super::SharedState;
use super::error::ApiError;
use super::form::Form;
use crate::client_auth::AuthMethod;
use crate::crypto::random_token;
use crate::model::{Client, GrantType, RevocationKind};
use crate::store::NewRevocation;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use portcullis_ca::PeerCertificate;
use portcullis_core::UnixTime;
use portcullis_core::jose::{AccessTokenClaims, Audiences, Confirmation, TokenClaims};
use portcullis_core::oauth::{ErrorCode, OAuthError};
use serde::Deserialize;
use serde_json::json;
use std::fmt::Write as _;
use std::str::FromStr;

use crate::metrics::names;

pub(super) fn no_store(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// The token response (RFC 6749 §5.1), written in one buffer of the right
/// size. The token is base64url segments and dots and scope tokens exclude
/// `"` and `\` (RFC 6749 §3.3), so neither needs escaping; the scope goes
/// through serde_json anyway, which costs nothing on the short string.
fn token_response(access_token: &str, expires_in: u64, scope: &str) -> Response {
    debug_assert!(
        access_token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    );
    let mut body = String::with_capacity(access_token.len() + scope.len() + 96);
    body.push_str(r#"{"access_token":""#);
    body.push_str(access_token);
    body.push_str(r#"","token_type":"Bearer","expires_in":"#);
    let _ = write!(body, "{expires_in}");
    if !scope.is_empty() {
        body.push_str(r#","scope":"#);
        body.push_str(&serde_json::Value::from(scope).to_string());
    }
    body.push('}');
    let mut resp = Response::new(axum::body::Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(resp)
}

/// The TLS client certificate of the request's connection, if any.
pub(super) type Peer = Option<Extension<PeerCertificate>>;

/// `POST /oauth2/token`.
pub async fn token(
    State(s): State<SharedState>,
    peer: Peer,
    Form(form, headers): Form,
) -> Response {
    match issue(&s, &headers, &form, peer.as_deref()).await {
        Ok(r) => r,
        Err((client_id, e)) => {
            metrics::counter!(names::TOKEN_ERRORS, "error" => e.error.error.as_str()).increment(1);
            let reason = e.error.error_description.as_deref().unwrap_or("");
            crate::audit::token_refused(client_id.as_deref(), e.error.error.as_str(), reason);
            e.into_response()
        }
    }
}

type Refusal = (Option<String>, ApiError);

async fn issue(
    s: &SharedState,
    headers: &HeaderMap,
    form: &super::form::FormParams,
    peer: Option<&PeerCertificate>,
) -> Result<Response, Refusal> {
    let anon = |e: ApiError| (None, e);
    let Some(grant_type) = form.get("grant_type") else {
        return Err(anon(
            OAuthError::invalid_request("grant_type is missing").into(),
        ));
    };
    let authed = s
        .auth
        .authenticate("token", headers, form, peer)
        .await
        .map_err(anon)?;
    let client = authed.client;
    let named = |e: OAuthError| (Some(client.id.to_string()), ApiError::from(e));
    let grant = GrantType::parse(grant_type).ok_or_else(|| {
        named(OAuthError::new(
            ErrorCode::UnsupportedGrantType,
            format!(
                "grant_type {:?} is not supported",
                super::form::truncate(grant_type)
            ),
        ))
    })?;
    if authed.method == AuthMethod::None
        && !matches!(
            grant,
            GrantType::AuthorizationCode | GrantType::RefreshToken
        )
    {
        // A public client proves nothing: only the code grants bind it (PKCE).
        return Err(named(OAuthError::invalid_client(format!(
            "a public client cannot use the {} grant",
            grant.as_str()
        ))));
    }
    if !client.grant_types.contains(&grant) {
        return Err(named(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            format!("this client may not use the {} grant", grant.as_str()),
        )));
    }
    let client_named = |e: ApiError| (Some(client.id.to_string()), e);
    let bind = binding(&client, authed.method, peer).map_err(named)?;
    match grant {
        GrantType::ClientCredentials => client_credentials(s, &client, form, bind.as_ref())
            .await
            .map_err(client_named),
        GrantType::AuthorizationCode => {
            super::code_grant::authorization_code(s, &client, form, bind.as_ref())
                .await
                .map_err(client_named)
        }
        GrantType::RefreshToken => {
            super::code_grant::refresh_token(s, &client, form, bind.as_ref())
                .await
                .map_err(client_named)
        }
        GrantType::TokenExchange => {
            super::exchange::token_exchange(s, &client, form, bind.as_ref())
                .await
                .map_err(client_named)
        }
    }
}

/// The certificate the access token is bound to (RFC 8705 §3): the one the
/// client authenticated with, or, for a client registered with
/// `tls_client_certificate_bound_access_tokens`, the one it presented
/// (which it then must).
fn binding(
    client: &Client,
    method: AuthMethod,
    peer: Option<&PeerCertificate>,
) -> Result<Option<Confirmation>, OAuthError> {
    match peer {
        Some(p) if method.is_certificate() || client.tls_bound_tokens => Ok(Some(Confirmation {
            x5t_s256: p.x5t_s256().to_owned(),
        })),
        None if client.tls_bound_tokens => Err(OAuthError::invalid_request(
            "this client's tokens are bound to its TLS client certificate: \
             connect with it (RFC 8705 §3)",
        )),
        _ => Ok(None),
    }
}

/// The access-token lifetime for a client.
pub(super) fn access_ttl(s: &SharedState, client: &Client) -> u64 {
    client
        .access_token_ttl
        .unwrap_or(s.access_token_ttl)
        .min(s.max_access_token_ttl)
}

/// Signs an access token (`at+jwt`) with the access-token chain's active
/// key, counts it and writes the audit line: every grant mints here.
pub(super) fn mint_access_token(
    s: &SharedState,
    grant: GrantType,
    claims: &AccessTokenClaims,
    now: UnixTime,
) -> Result<String, ApiError> {
    let snapshot = s.keys.snapshot();
    let key = snapshot
        .signer(now)
        .ok_or_else(|| ApiError::internal(&"no active signing key"))?;
    let token = key
        .sign_access_token(claims)
        .map_err(|e| ApiError::internal(&e))?;
    metrics::counter!(names::TOKENS_ISSUED, "grant" => grant.as_str(), "alg" => key.alg().as_str())
        .increment(1);
    crate::audit::token_issued(
        &claims.client_id,
        grant.as_str(),
        &claims.jti,
        claims.scope.as_deref().unwrap_or(""),
        &claims.aud.to_vec().join(" "),
        claims.exp,
    );
    Ok(token)
}

async fn client_credentials(
    s: &SharedState,
    client: &Client,
    form: &super::form::FormParams,
    cnf: Option<&Confirmation>,
) -> Result<Response, ApiError> {
    let scope = crate::grant::resolve_scope(client, form.get("scope"))?;
    // Roles: a scope some role grants needs a role the client holds; asked
    // for explicitly it is refused, among the defaults it is left out.
    let held = s.roles.for_client(client.id.as_str()).await?;
    let asked = scope.to_string();
    let scope = match (form.get("scope"), held.refused(&asked)) {
        (Some(_), Some(bad)) => {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!(
                    "scope {:?} needs a role this client does not hold",
                    super::form::truncate(bad)
                ),
            )
            .into());
        }
        (None, Some(_)) => portcullis_core::ScopeSet::from_str(&held.filter(&asked))
            .map_err(|e| ApiError::internal(&e))?,
        (_, None) => scope,
    };
    let aud = crate::grant::resolve_audience(client, form.get_all("resource"))?;
    let now = s.clock.now();
    let ttl = access_ttl(s, client);
    let jti = random_token(16).map_err(|e| ApiError::internal(&e))?;
    let scope_str = scope.to_string();
    let claims = AccessTokenClaims {
        iss: s.issuer.to_string(),
        sub: client.id.to_string(),
        aud: Audiences::from_vec(aud.iter().map(|a| a.to_string()).collect()),
        exp: now + ttl,
        iat: now,
        nbf: now,
        jti,
        client_id: client.id.to_string(),
        scope: (!scope_str.is_empty()).then(|| scope_str.clone()),
        act: None,
        roles: held.roles,
        cnf: cnf.cloned(),
    };
    let access_token = mint_access_token(s, GrantType::ClientCredentials, &claims, now)?;
    Ok(token_response(&access_token, ttl, &scope_str))
}

/// Verifies one of our tokens and checks it is neither revoked nor held by a
/// disabled or deleted client.
pub(super) async fn active_claims(
    s: &SharedState,
    token: &str,
) -> Result<Option<TokenClaims>, ApiError> {
    let now = s.clock.now();
    let Ok(claims) = s.keys.snapshot().verifier().verify(token, now) else {
        return Ok(None);
    };
    let holder = match claims.client_id.parse() {
        Ok(id) => s.clients.get(&id).await?,
        Err(_) => None,
    };
    if !holder.is_some_and(|c| c.enabled) {
        return Ok(None);
    }
    if s.store
        .is_revoked(&claims.jti, &claims.client_id, claims.iat)
        .await?
    {
        return Ok(None);
    }
    Ok(Some(claims))
}

/// `POST /oauth2/introspect` (RFC 7662): authenticated clients only.
pub async fn introspect(
    State(s): State<SharedState>,
    peer: Peer,
    Form(form, headers): Form,
) -> Result<Response, ApiError> {
    s.auth
        .authenticate("introspect", &headers, &form, peer.as_deref())
        .await?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let (body, active) = match active_claims(&s, token).await? {
        None => (json!({ "active": false }), "false"),
        Some(c) => {
            let mut body = json!({
                "active": true,
                "token_type": "Bearer",
                "client_id": c.client_id,
                "sub": c.sub,
                "aud": c.aud,
                "iss": c.iss,
                "exp": c.exp,
                "iat": c.iat,
                "nbf": c.nbf,
                "jti": c.jti,
            });
            // RFC 7662 §2.2: `scope` is a string when present; absent, never null.
            if let Some(obj) = body.as_object_mut() {
                if let Some(scope) = c.scope {
                    obj.insert("scope".into(), scope.into());
                }
                // RFC 8705 §3.2: the certificate a bound token is bound to.
                if let Some(cnf) = c.extra.get("cnf") {
                    obj.insert("cnf".into(), cnf.clone());
                }
            }
            (body, "true")
        }
    };
    metrics::counter!(names::INTROSPECTIONS, "active" => active).increment(1);
    Ok(no_store(Json(body).into_response()))
}

/// `POST /oauth2/revoke` (RFC 7009). Unknown, invalid and expired tokens
/// get 200: there is nothing left to revoke (§2.2).
pub async fn revoke(
    State(s): State<SharedState>,
    peer: Peer,
    Form(form, headers): Form,
) -> Result<Response, ApiError> {
    let caller = s
        .auth
        .authenticate("revoke", &headers, &form, peer.as_deref())
        .await?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let now = s.clock.now();
    if let Ok(claims) = s.keys.snapshot().verifier().verify(token, now) {
        if claims.client_id != caller.client.id.as_str() {
            // §2.1: the token must have been issued to the requesting client.
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the token was not issued to this client",
            )
            .into());
        }
        s.store
            .add_revocation(&NewRevocation {
                kind: RevocationKind::Jti,
                subject: claims.jti.clone(),
                issued_before: None,
                expires_at: claims.exp,
                revoked_at: now,
            })
            .await?;
        metrics::counter!(names::REVOCATIONS).increment(1);
        crate::audit::token_revoked(caller.client.id.as_str(), &claims.jti);
    } else {
        // A refresh token: revoking it revokes its grant (RFC 7009 §2.1),
        // with every access token issued under it.
        let key = crate::login::digest(s.clients.master(), "refresh", token);
        if let Some(g) = s.store.refresh_grant(&key).await? {
            if g.client_id != caller.client.id.as_str() {
                return Err(OAuthError::new(
                    ErrorCode::UnauthorizedClient,
                    "the token was not issued to this client",
                )
                .into());
            }
            if s.store.revoke_grant(&g.id, now).await? {
                metrics::counter!(names::REVOCATIONS).increment(1);
                crate::audit::grant_revoked(caller.client.id.as_str(), "refresh token revoked");
            }
        }
    }
    Ok(no_store(StatusCode::OK.into_response()))
}

/// Query of the revocation feed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    since: Option<i64>,
    limit: Option<u32>,
}

/// `GET /oauth2/revocations?since=N`: revoked-but-unexpired tokens (by
/// `jti`) and clients (by `client_id` + `issued_before`), after cursor N.
/// Resource servers that validate tokens offline poll this.
pub async fn revocations(
    State(s): State<SharedState>,
    q: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|_| {
        OAuthError::invalid_request("query must be since=<non-negative integer>&limit=<1..10000>")
    })?;
    let since = q.since.unwrap_or(0);
    if since < 0 {
        return Err(OAuthError::invalid_request("since must be a non-negative integer").into());
    }
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    let now = s.clock.now();
    let entries = s.store.revocations_since(since, now, limit).await?;
    let cursor = entries.last().map_or(since, |e| e.seq);
    let more = entries.len() as u32 == limit;
    Ok(no_store(
        Json(json!({ "cursor": cursor, "more": more, "now": now, "revocations": entries }))
            .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(resp: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn token_response_is_the_rfc_6749_shape() {
        let resp = token_response("aGVhZA.Ym9keQ.c2ln-_", 300, "read write:all");
        assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            body_json(resp).await,
            json!({"access_token": "aGVhZA.Ym9keQ.c2ln-_", "token_type": "Bearer",
                   "expires_in": 300, "scope": "read write:all"})
        );
        let resp = token_response("a.b.c", 60, "");
        assert_eq!(
            body_json(resp).await,
            json!({"access_token": "a.b.c", "token_type": "Bearer", "expires_in": 60})
        );
    }
}
