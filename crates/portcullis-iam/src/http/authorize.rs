//! The authorization endpoint (OIDC Core §3.1.2, RFC 6749 §4.1) and the
//! sign-in and consent form posts. See [`crate::login`] for the flow.
//!
//! Before the client and its redirect URI are known to match, errors are an
//! error page and never a redirect; after, they go back to the client as
//! `error`/`error_description`/`state`/`iss` query parameters.

use super::SharedState;
use super::form::{Form, FormParams};
use super::pages;
use crate::authorize::{check_challenge, redirect_uri_matches};
use crate::crypto::random_token;
use crate::login::{
    CODE_TTL, CSRF_COOKIE, PENDING_TTL, Pending, SESSION_COOKIE, client_redirect, digest,
    digest_text,
};
use crate::model::{Client, Credential, GrantType, User, UserId};
use crate::store::{AuthCode, LoginSession};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use portcullis_core::{Secret, UnixTime};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

/// Longest `state`, `nonce` and `login_hint` we carry.
const MAX_STATE: usize = 1024;
const MAX_NONCE: usize = 512;
const MAX_HINT: usize = 64;

/// Says nothing about which of the two was wrong (no user enumeration).
const BAD_CREDENTIALS: &str = "Incorrect username or password.";
const THROTTLED: &str = "Too many failed sign-in attempts. Wait a moment, then try again.";

fn unavailable(cause: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %cause, "sign-in flow failed");
    pages::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "Temporarily unavailable",
        "The sign-in service cannot complete this request right now. Try again shortly.",
    )
}

fn bad_request(message: &str) -> Response {
    pages::error(StatusCode::BAD_REQUEST, "Invalid request", message)
}

fn expired() -> Response {
    bad_request(
        "This sign-in request is invalid or has expired. Go back to the application and start again.",
    )
}

/// A redirect (`302` from GET, `303` from a form post), never cached.
fn redirect(status: StatusCode, location: &str) -> Response {
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    match HeaderValue::from_str(location) {
        Ok(v) => {
            h.insert(header::LOCATION, v);
        }
        Err(_) => return bad_request("The redirect URI cannot be used."),
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn set_cookie(resp: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// An error sent back to the client.
fn client_error(
    s: &SharedState,
    p: &Pending,
    status: StatusCode,
    code: &str,
    why: &str,
) -> Response {
    let to = client_redirect(
        &p.redirect_uri,
        &[("error", code), ("error_description", why)],
        p.state.as_deref(),
        s.issuer.as_str(),
    );
    redirect(status, &to)
}

async fn enabled_client(
    s: &SharedState,
    id: Option<&str>,
) -> Result<Option<Arc<Client>>, Response> {
    let Some(id) = id.and_then(|i| portcullis_core::ClientId::from_str(i).ok()) else {
        return Ok(None);
    };
    let client = s.clients.get(&id).await.map_err(|e| unavailable(&e))?;
    Ok(client.filter(|c| c.enabled && c.grant_types.contains(&GrantType::AuthorizationCode)))
}

/// The browser's live SSO session and its (enabled) user.
async fn current_session(
    s: &SharedState,
    headers: &HeaderMap,
) -> Result<Option<(LoginSession, User)>, Response> {
    let Some(cookie) = s.cookies.get(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let key = digest(s.clients.master(), "session", cookie);
    let now = s.clock.now();
    let Some(sess) = s
        .store
        .get_session(&key, now)
        .await
        .map_err(|e| unavailable(&e))?
    else {
        return Ok(None);
    };
    let Ok(uid) = UserId::from_str(&sess.user_id) else {
        return Ok(None);
    };
    let user = s.users.get(&uid).await.map_err(|e| unavailable(&e))?;
    Ok(user.filter(|u| u.enabled).map(|u| (sess, u)))
}

/// Checks everything after the client and redirect URI: returns the
/// pending request (without its CSRF binding) and whether `prompt=login`
/// forces a new sign-in, or the error for the client.
fn check_request(
    s: &SharedState,
    client: &Client,
    q: &FormParams,
    redirect_uri: &str,
    now: UnixTime,
) -> Result<(Pending, bool), (&'static str, String)> {
    let invalid = |why: &str| ("invalid_request", why.to_owned());
    match q.get("response_type") {
        Some("code") => {}
        None => return Err(invalid("response_type is missing")),
        Some(_) => {
            return Err((
                "unsupported_response_type",
                "only response_type=code is supported".into(),
            ));
        }
    }
    if q.get("request").is_some() {
        return Err((
            "request_not_supported",
            "request objects are not supported".into(),
        ));
    }
    if q.get("request_uri").is_some() {
        return Err((
            "request_uri_not_supported",
            "request_uri is not supported".into(),
        ));
    }
    if q.get("response_mode").is_some_and(|m| m != "query") {
        return Err(invalid("only response_mode=query is supported"));
    }
    let scope = crate::grant::resolve_scope(client, q.get("scope")).map_err(|e| {
        (
            "invalid_scope",
            e.error_description.unwrap_or_default().to_string(),
        )
    })?;
    let audiences = if q.get("resource").is_none() && client.default_audiences.is_empty() {
        // An OIDC-only client: its access tokens are for userinfo here.
        vec![s.issuer.to_string()]
    } else {
        crate::grant::resolve_audience(client, q.get_all("resource"))
            .map_err(|e| {
                (
                    "invalid_target",
                    e.error_description.unwrap_or_default().to_string(),
                )
            })?
            .iter()
            .map(|a| a.to_string())
            .collect()
    };
    let public = matches!(client.credential, Credential::None);
    let code_challenge = check_challenge(
        q.get("code_challenge"),
        q.get("code_challenge_method"),
        public || client.login.require_pkce,
    )
    .map_err(|e| invalid(&e.to_string()))?;
    let mut prompt_none = false;
    let mut prompt_login = false;
    let mut prompt_consent = false;
    if let Some(prompt) = q.get("prompt") {
        for p in prompt.split(' ') {
            match p {
                "none" => prompt_none = true,
                "login" => prompt_login = true,
                "consent" => prompt_consent = true,
                _ => return Err(invalid("prompt must be none, login or consent")),
            }
        }
        if prompt_none && (prompt_login || prompt_consent) {
            return Err(invalid("prompt=none cannot be combined with other values"));
        }
    }
    let mut min_auth_time = None;
    if let Some(max_age) = q.get("max_age") {
        let max_age: u64 = max_age
            .parse()
            .map_err(|_| invalid("max_age must be a non-negative integer"))?;
        min_auth_time = Some(now.saturating_sub(max_age));
    }
    if prompt_login {
        min_auth_time = Some(now);
    }
    let state = q.get("state").map(str::to_owned);
    if state.as_ref().is_some_and(|v| v.len() > MAX_STATE) {
        return Err(invalid("state is too long"));
    }
    let nonce = q.get("nonce").map(str::to_owned);
    if nonce.as_ref().is_some_and(|v| v.len() > MAX_NONCE) {
        return Err(invalid("nonce is too long"));
    }
    let login_hint = q
        .get("login_hint")
        .filter(|h| h.len() <= MAX_HINT && !h.chars().any(char::is_control))
        .map(str::to_owned);
    let pending = Pending {
        client_id: client.id.to_string(),
        redirect_uri: redirect_uri.to_owned(),
        state,
        nonce,
        scope: scope.to_string(),
        audiences,
        code_challenge,
        min_auth_time,
        prompt_none,
        prompt_consent,
        login_hint,
        csrf: String::new(),
        exp: now + PENDING_TTL,
    };
    Ok((pending, prompt_login))
}

/// `GET /oauth2/authorize`.
pub async fn authorize(
    State(s): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let q = match FormParams::parse(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(q) => q,
        Err(e) => {
            let why = e.error.error_description.unwrap_or_default();
            return bad_request(&format!("The authorization request is malformed: {why}"));
        }
    };
    let client = match enabled_client(&s, q.get("client_id")).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return bad_request(
                "The application that sent you here is unknown or may not sign people in.",
            );
        }
        Err(resp) => return resp,
    };
    let Some(redirect_uri) = q.get("redirect_uri") else {
        return bad_request("The request does not say where to return to (redirect_uri).");
    };
    if !client
        .login
        .redirect_uris
        .iter()
        .any(|r| redirect_uri_matches(r, redirect_uri))
    {
        return bad_request(
            "The return address (redirect_uri) is not registered for this application.",
        );
    }
    let now = s.clock.now();
    let (mut pending, force_login) = match check_request(&s, &client, &q, redirect_uri, now) {
        Ok(p) => p,
        Err((code, why)) => {
            let state = q.get("state").filter(|v| v.len() <= MAX_STATE);
            let to = client_redirect(
                redirect_uri,
                &[("error", code), ("error_description", &why)],
                state,
                s.issuer.as_str(),
            );
            return redirect(StatusCode::FOUND, &to);
        }
    };
    let (csrf, new_cookie) = match s.cookies.get(&headers, CSRF_COOKIE) {
        Some(c) => (c.to_owned(), None),
        None => match random_token(32) {
            Ok(c) => (c.clone(), Some(c)),
            Err(e) => return unavailable(&e),
        },
    };
    pending.csrf = digest_text(s.clients.master(), "csrf", &csrf);
    let session = if force_login {
        None
    } else {
        match current_session(&s, &headers).await {
            Ok(sess) => sess,
            Err(resp) => return resp,
        }
    };
    let mut resp = proceed(&s, &client, &pending, session, StatusCode::FOUND).await;
    if let Some(c) = new_cookie {
        set_cookie(&mut resp, &s.cookies.set(CSRF_COOKIE, &c, None));
    }
    resp
}

/// The next step for a checked request: code, consent page, sign-in page,
/// or (with `prompt=none`) an error for the client.
async fn proceed(
    s: &SharedState,
    client: &Client,
    p: &Pending,
    session: Option<(LoginSession, User)>,
    status: StatusCode,
) -> Response {
    let sealed = match p.seal(s.clients.master()) {
        Ok(v) => v,
        Err(e) => return unavailable(&e),
    };
    match session {
        Some((sess, user)) if p.accepts_auth_time(sess.auth_time) => {
            if !p.prompt_consent {
                // First-party clients need no consent; a third-party one
                // needs an approval that covers the requested scopes.
                let approved = client.login.first_party
                    || match s.store.consent(user.id.as_str(), &p.client_id).await {
                        Ok(c) => c.is_some_and(|c| c.covers(&p.scope)),
                        Err(e) => return unavailable(&e),
                    };
                if approved {
                    return issue_code(s, p, &sess, status).await;
                }
            }
            if p.prompt_none {
                return client_error(
                    s,
                    p,
                    status,
                    "consent_required",
                    "the user must approve this application",
                );
            }
            let scopes: Vec<&str> = p.scope.split(' ').filter(|v| !v.is_empty()).collect();
            pages::consent(&pages::Consent {
                action: &s.issuer.join(super::paths::CONSENT),
                client_name: &client.name,
                user: &user.profile.display_name,
                scopes: &scopes,
                request: &sealed,
                csrf: &p.csrf,
            })
        }
        _ if p.prompt_none => client_error(s, p, status, "login_required", "the user must sign in"),
        _ => pages::login(&pages::Login {
            action: &s.issuer.join(super::paths::LOGIN),
            client_name: &client.name,
            request: &sealed,
            csrf: &p.csrf,
            username: p.login_hint.as_deref().unwrap_or(""),
            error: None,
        }),
    }
}

/// Stores a code for the request and session and redirects to the client.
async fn issue_code(
    s: &SharedState,
    p: &Pending,
    sess: &LoginSession,
    status: StatusCode,
) -> Response {
    let code = match random_token(32) {
        Ok(c) => c,
        Err(e) => return unavailable(&e),
    };
    let now = s.clock.now();
    let row = AuthCode {
        client_id: p.client_id.clone(),
        redirect_uri: p.redirect_uri.clone(),
        code_challenge: p.code_challenge.clone(),
        nonce: p.nonce.clone(),
        scope: p.scope.clone(),
        audiences: p.audiences.clone(),
        user_id: sess.user_id.clone(),
        auth_time: sess.auth_time,
        sid: sess.sid.clone(),
        expires_at: now + CODE_TTL,
        used: false,
    };
    let key = digest(s.clients.master(), "code", &code);
    if let Err(e) = s.store.insert_code(&key, &row, now).await {
        return unavailable(&e);
    }
    let to = client_redirect(
        &p.redirect_uri,
        &[("code", &code)],
        p.state.as_deref(),
        s.issuer.as_str(),
    );
    redirect(status, &to)
}

/// Opens the sealed request of a form post and checks it came from this
/// browser (CSRF) and its client may still sign people in.
async fn open_form(
    s: &SharedState,
    form: &FormParams,
    headers: &HeaderMap,
) -> Result<(Pending, Arc<Client>), Response> {
    let now = s.clock.now();
    let master = s.clients.master();
    let Some(p) = form
        .get("request")
        .and_then(|r| Pending::open(master, r, now))
    else {
        return Err(expired());
    };
    let cookie = s.cookies.get(headers, CSRF_COOKIE).unwrap_or("");
    let cookie_digest = digest_text(master, "csrf", cookie);
    if cookie.is_empty() || !p.csrf_matches(&cookie_digest, form.get("csrf").unwrap_or("")) {
        return Err(pages::error(
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was not sent from the browser that opened it. Go back to the application and start again.",
        ));
    }
    match enabled_client(s, Some(&p.client_id)).await? {
        Some(c) => Ok((p, c)),
        None => Err(bad_request(
            "The application is no longer allowed to sign people in.",
        )),
    }
}

/// The body of a page's form post. A body the form extractor refuses (wrong
/// content type, too large, repeated or non-UTF-8 parameters) gets an HTML
/// error page with the same status, not the JSON error API clients get.
pub struct PageForm(FormParams, HeaderMap);

impl axum::extract::FromRequest<SharedState> for PageForm {
    type Rejection = Response;

    async fn from_request(
        req: axum::extract::Request,
        state: &SharedState,
    ) -> Result<Self, Response> {
        match Form::from_request(req, state).await {
            Ok(Form(form, headers)) => Ok(Self(form, headers)),
            Err(e) => Err(pages::error(
                e.status.unwrap_or(StatusCode::BAD_REQUEST),
                "Request refused",
                e.error
                    .error_description
                    .as_deref()
                    .unwrap_or("The form could not be read."),
            )),
        }
    }
}

/// `POST /oauth2/login`: the sign-in form.
pub async fn login(
    State(s): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    PageForm(form, headers): PageForm,
) -> Response {
    let (p, client) = match open_form(&s, &form, &headers).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let username = form.get("username").unwrap_or("");
    let password = Secret::new(form.get("password").unwrap_or("").to_owned());
    let again = |error: &str| {
        pages::login(&pages::Login {
            action: &s.issuer.join(super::paths::LOGIN),
            client_name: &client.name,
            request: form.get("request").unwrap_or(""),
            csrf: &p.csrf,
            username,
            error: Some(error),
        })
    };
    let ip = peer.ip().to_string();
    match crate::throttle::check(&s, username, &ip).await {
        Ok(true) => {}
        Ok(false) => {
            crate::audit::login_throttled(username, &ip);
            metrics::counter!(crate::metrics::names::LOGINS, "result" => "throttled").increment(1);
            let mut r = again(THROTTLED);
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            return r;
        }
        Err(e) => return unavailable(&e),
    }
    let user = match s.users.verify_password(username, &password).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            crate::audit::login_failed(username, &ip, &p.client_id);
            metrics::counter!(crate::metrics::names::LOGINS, "result" => "failed").increment(1);
            if let Err(e) = crate::throttle::failed(&s, username, &ip).await {
                return unavailable(&e);
            }
            return again(BAD_CREDENTIALS);
        }
        Err(e) => return unavailable(&e),
    };
    if let Err(e) = crate::throttle::succeeded(&s, username).await {
        return unavailable(&e);
    }
    let (cookie, sid) = match (random_token(32), random_token(16)) {
        (Ok(c), Ok(sid)) => (c, sid),
        (Err(e), _) | (_, Err(e)) => return unavailable(&e),
    };
    let now = s.clock.now();
    let sess = LoginSession {
        sid,
        user_id: user.id.to_string(),
        auth_time: now,
        expires_at: now + s.login.session_ttl,
    };
    let key = digest(s.clients.master(), "session", &cookie);
    if let Err(e) = s.store.create_session(&key, &sess, now).await {
        return unavailable(&e);
    }
    // Another user's session in this browser ends here (the same user's
    // stays: re-authenticating must not revoke other clients' grants).
    match current_session(&s, &headers).await {
        Ok(Some((old, _))) if old.user_id != sess.user_id => {
            if let Err(e) = s.store.end_session(&old.sid, now).await {
                return unavailable(&e);
            }
        }
        Ok(_) => {}
        Err(resp) => return resp,
    }
    crate::audit::login_succeeded(user.id.as_str(), &ip, &p.client_id, &sess.sid);
    metrics::counter!(crate::metrics::names::LOGINS, "result" => "succeeded").increment(1);
    let mut resp = proceed(&s, &client, &p, Some((sess, user)), StatusCode::SEE_OTHER).await;
    set_cookie(
        &mut resp,
        &s.cookies
            .set(SESSION_COOKIE, &cookie, Some(s.login.session_ttl)),
    );
    resp
}

/// `POST /oauth2/consent`: the consent form.
pub async fn consent(State(s): State<SharedState>, PageForm(form, headers): PageForm) -> Response {
    let (p, client) = match open_form(&s, &form, &headers).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let session = match current_session(&s, &headers).await {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let Some((sess, user)) = session.filter(|(sess, _)| p.accepts_auth_time(sess.auth_time)) else {
        // Signed out (or too long ago) meanwhile: sign in again.
        return proceed(&s, &client, &p, None, StatusCode::SEE_OTHER).await;
    };
    match form.get("decision") {
        Some("allow") => {
            // Remembered, with what was approved before: the next request
            // within these scopes skips the page.
            let before = match s.store.consent(user.id.as_str(), &p.client_id).await {
                Ok(c) => c.map(|c| c.scope).unwrap_or_default(),
                Err(e) => return unavailable(&e),
            };
            let mut scopes: Vec<&str> = before
                .split(' ')
                .chain(p.scope.split(' '))
                .filter(|v| !v.is_empty())
                .collect();
            scopes.sort_unstable();
            scopes.dedup();
            let consent = crate::store::Consent {
                user_id: user.id.to_string(),
                client_id: p.client_id.clone(),
                scope: scopes.join(" "),
                granted_at: s.clock.now(),
            };
            if let Err(e) = s.store.save_consent(&consent).await {
                return unavailable(&e);
            }
            crate::audit::consent_given(user.id.as_str(), &p.client_id, &p.scope);
            issue_code(&s, &p, &sess, StatusCode::SEE_OTHER).await
        }
        Some("deny") => client_error(
            &s,
            &p,
            StatusCode::SEE_OTHER,
            "access_denied",
            "the user declined",
        ),
        _ => bad_request("Choose Allow or Deny."),
    }
}
