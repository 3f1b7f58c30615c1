//! Backend-for-frontend mode: the gateway logs browsers in at an OpenID
//! provider (code flow with PKCE, `state` and `nonce`), keeps the tokens in a
//! server-side session, and gives the browser only an opaque cookie.
//!
//! - `GET {prefix}/login?return_to=/path` sends the browser to the provider.
//! - `GET {prefix}/callback` checks the login (cookie-bound `state`, `iss`,
//!   the ID token and its `nonce`), redeems the code and starts a session.
//! - `GET {prefix}/session` says who is logged in — never a token.
//! - `POST {prefix}/logout` ends the session here, revokes its refresh token
//!   and sends the browser to the provider's `end_session_endpoint`.
//!
//! Routes with the `session` authenticator forward the session's access
//! token (refreshed once per session however many requests race to it) and
//! never the browser's `Cookie` header. State-changing calls need the anti-
//! CSRF header or a same-origin `Sec-Fetch-Site`/`Origin`.

pub mod oidc;
pub mod redis_store;
pub mod store;

use crate::config::BffConfig;
use crate::pipeline::authn::{AuthnError, Identity};
use crate::pipeline::proxy::Body;
use crate::pipeline::{full, now};
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use oidc::{OidcError, Provider, TokenResponse};
use portcullis_core::Secret;
use portcullis_core::crypto::{MasterKey, random_token};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use store::{PendingLogin, SessionRow, SessionStore};

/// The header a page sends on state-changing calls, carrying the
/// `csrf_token` of `{prefix}/session`.
pub const CSRF_HEADER: &str = "x-portcullis-csrf";
/// How long a login may take, from `/login` to `/callback`.
const LOGIN_TTL: u64 = 600;
/// How long a session read from the SQLite store is trusted before it is
/// re-read. The Redis store, shared by several gateways, is read at every
/// request instead (one `HGETALL`), so a logout at one gateway is refused
/// at the others at once.
const SESSION_CACHE_TTL: Duration = Duration::from_secs(5);
/// How long one gateway may hold a session's cluster-wide refresh lock.
const REFRESH_LOCK: Duration = Duration::from_secs(10);
/// Another gateway's refresh is awaited this often...
const REFRESH_WAIT: Duration = Duration::from_millis(100);
/// ...this many times (a little longer than [`REFRESH_LOCK`]).
const REFRESH_WAIT_ROUNDS: u32 = 110;
/// `last_seen` is written at most this often (half the idle timeout if
/// that is shorter).
const TOUCH_EVERY: u64 = 60;

/// A local path safe to redirect to: no scheme, no `//host`, no backslash
/// tricks, no control characters.
pub fn is_local_path(p: &str) -> bool {
    p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && p.len() <= 2048
        && !p.chars().any(|c| c.is_control() || c == '\\')
}

fn sha256(b: &[u8]) -> [u8; 32] {
    crate::pipeline::authn::sha256(&[b])
}

/// Why the BFF could not start.
#[derive(Debug, thiserror::Error)]
pub enum BffError {
    /// The session store.
    #[error(transparent)]
    Store(#[from] store::SessionStoreError),
    /// The sealing key.
    #[error("bff session key: {0}")]
    Key(String),
}

/// The tokens of a session, sealed in its row.
#[derive(Clone, Serialize, Deserialize)]
struct Tokens {
    access: String,
    refresh: Option<String>,
    id: Option<String>,
    /// The row's clear fields the gateway decides on, sealed with the
    /// tokens: a store (Redis) that edits them ends the session instead.
    who: Who,
}

/// Who a session is for, as sealed at login.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Who {
    subject: String,
    scope: String,
    profile: String,
}

impl Who {
    fn of(row: &SessionRow) -> Self {
        Self {
            subject: row.subject.clone(),
            scope: row.scope.clone(),
            profile: row.profile.clone(),
        }
    }
}

/// A session as requests use it.
struct Live {
    row: SessionRow,
    tokens: Tokens,
    bearer: HeaderValue,
}

/// The BFF: provider, sessions, cookies.
pub struct Bff {
    cfg: BffConfig,
    provider: Provider,
    store: Arc<dyn SessionStore>,
    seal: MasterKey,
    sessions: moka::future::Cache<[u8; 32], Arc<Live>>,
    /// Whether `sessions` is used (not with a shared store).
    cache: bool,
    /// The `[redis]` the store uses, if it does (a reload with another one
    /// restarts the BFF).
    redis: Option<portcullis_redis::RedisConfig>,
    refreshing: moka::sync::Cache<[u8; 32], Arc<tokio::sync::Mutex<()>>>,
    session_cookie: &'static str,
    login_cookie: &'static str,
    purge: tokio::task::JoinHandle<()>,
}

impl Drop for Bff {
    fn drop(&mut self) {
        self.purge.abort();
    }
}

fn sealing_key(cfg: &BffConfig) -> Result<MasterKey, BffError> {
    let bad = |e: portcullis_core::crypto::CryptoError| BffError::Key(e.to_string());
    if let Some(k) = &cfg.session_key {
        return MasterKey::from_base64(k).map_err(bad);
    }
    let Some(file) = &cfg.session_key_file else {
        tracing::warn!(
            "bff: no session_key_env or session_key_file: sessions do not survive a restart"
        );
        return MasterKey::from_base64(&MasterKey::generate_base64().map_err(bad)?).map_err(bad);
    };
    match std::fs::read_to_string(file) {
        Ok(text) => MasterKey::from_base64(&Secret::new(text.trim())).map_err(bad),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = MasterKey::generate_base64().map_err(bad)?;
            std::fs::write(file, format!("{}\n", k.expose()))
                .map_err(|e| BffError::Key(format!("{file}: {e}")))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600));
            }
            MasterKey::from_base64(&k).map_err(bad)
        }
        Err(e) => Err(BffError::Key(format!("{file}: {e}"))),
    }
}

impl Bff {
    /// Opens the session store and prepares the provider (its metadata is
    /// fetched on first use, so the gateway starts while the provider is
    /// still starting).
    /// `redis` is the gateway's, used with `session_store = "redis"`.
    pub async fn start(
        cfg: BffConfig,
        redis: Option<&portcullis_redis::Redis>,
    ) -> Result<Arc<Self>, BffError> {
        let store = store::open(&cfg.session_store, redis, cfg.session_idle).await?;
        let cache = store.cacheable();
        let redis = (cfg.session_store == store::REDIS)
            .then(|| redis.map(|r| r.config().clone()))
            .flatten();
        let seal = sealing_key(&cfg)?;
        let (session_cookie, login_cookie) = if cfg.secure_cookies {
            ("__Host-portcullis_bff", "__Host-portcullis_bff_login")
        } else {
            ("portcullis_bff", "portcullis_bff_login")
        };
        let purge = {
            let store = store.clone();
            let idle = cfg.session_idle;
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    match store.purge(now(), idle, 1000).await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(rows = n, "bff: purged expired sessions"),
                        Err(e) => tracing::warn!(error = %e, "bff: purge failed"),
                    }
                }
            })
        };
        Ok(Arc::new(Self {
            provider: Provider::new(cfg.clone()),
            cfg,
            store,
            seal,
            sessions: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(SESSION_CACHE_TTL)
                .build(),
            cache,
            redis,
            refreshing: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
            session_cookie,
            login_cookie,
            purge,
        }))
    }

    /// Its configuration (a reload keeps the BFF if this is unchanged).
    pub fn config(&self) -> &BffConfig {
        &self.cfg
    }

    /// The `[redis]` its session store uses, if any.
    pub fn redis_config(&self) -> Option<&portcullis_redis::RedisConfig> {
        self.redis.as_ref()
    }

    /// Whether `path` (normalized) is one of the BFF's endpoints.
    pub fn owns(&self, path: &str) -> bool {
        path.strip_prefix(self.cfg.path_prefix.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    // ------------------------------------------------------------ endpoints

    /// Answers a request to one of the BFF's endpoints.
    pub async fn endpoint(&self, parts: &Parts, path: &str) -> Response<Body> {
        let rest = &path[self.cfg.path_prefix.len()..];
        let m = &parts.method;
        let resp = match rest {
            "/login" if m == Method::GET => self.login(parts).await,
            "/callback" if m == Method::GET => self.callback(parts).await,
            "/session" if m == Method::GET => self.session_info(parts).await,
            "/logout" if m == Method::POST => self.logout(parts).await,
            "/login" | "/callback" | "/session" => method_not_allowed("GET"),
            "/logout" => method_not_allowed("POST"),
            _ => json_error(StatusCode::NOT_FOUND, "not_found", "no such BFF endpoint"),
        };
        no_store(resp)
    }

    async fn login(&self, parts: &Parts) -> Response<Body> {
        let return_to = crate::pipeline::authn::query_param(parts, "return_to")
            .map(|c| c.into_owned())
            .unwrap_or_else(|| self.cfg.after_login.clone());
        if !is_local_path(&return_to) {
            return page(
                StatusCode::BAD_REQUEST,
                "Cannot sign in",
                "return_to must be a path on this site.",
            );
        }
        let meta = match self.provider.metadata().await {
            Ok(m) => m,
            Err(e) => return provider_down(&e),
        };
        let fresh = || random_token(32).map_err(|_| ());
        let (Ok(cookie), Ok(state), Ok(nonce), Ok(verifier)) = (fresh(), fresh(), fresh(), fresh())
        else {
            return internal();
        };
        let challenge = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()))
        };
        let key = sha256(cookie.as_bytes());
        let Ok(sealed) = self.seal.seal(&key, verifier.as_bytes()) else {
            return internal();
        };
        let pending = PendingLogin {
            state: state.clone(),
            nonce: nonce.clone(),
            verifier: sealed,
            return_to,
            expires_at: now() + LOGIN_TTL,
        };
        if let Err(e) = self.store.put_login(&key, &pending).await {
            tracing::error!(error = %e, "bff: cannot record a login");
            return store_down();
        }
        let scope = self.cfg.scopes.join(" ");
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", &self.cfg.client_id)
            .append_pair("redirect_uri", &self.cfg.redirect_uri)
            .append_pair("scope", &scope)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        for r in &self.cfg.resources {
            q.append_pair("resource", r);
        }
        let sep = if meta.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!("{}{sep}{}", meta.authorization_endpoint, q.finish());
        let mut r = redirect(StatusCode::FOUND, &location);
        self.set_cookie(&mut r, self.login_cookie, &cookie, LOGIN_TTL);
        r
    }

    async fn callback(&self, parts: &Parts) -> Response<Body> {
        let bad = |why: &str| page(StatusCode::BAD_REQUEST, "Sign-in failed", why);
        let q = |name: &str| crate::pipeline::authn::query_param(parts, name);
        // The login must have started in this browser: its cookie names the
        // pending login, which is spent whatever happens next.
        let Some(cookie) = cookie(parts, self.login_cookie) else {
            return bad("This sign-in did not start in this browser. Please start again.");
        };
        let key = sha256(cookie.as_bytes());
        let pending = match self.store.take_login(&key).await {
            Ok(Some(p)) => p,
            Ok(None) => return bad("This sign-in is no longer valid. Please start again."),
            Err(e) => {
                tracing::error!(error = %e, "bff: cannot read a login");
                return store_down();
            }
        };
        let mut r = self.finish_login(parts, &key, pending, q).await;
        self.set_cookie(&mut r, self.login_cookie, "", 0);
        r
    }

    async fn finish_login<'a>(
        &self,
        parts: &'a Parts,
        key: &[u8; 32],
        pending: PendingLogin,
        q: impl Fn(&str) -> Option<std::borrow::Cow<'a, str>>,
    ) -> Response<Body> {
        let bad = |why: &str| page(StatusCode::BAD_REQUEST, "Sign-in failed", why);
        if pending.expires_at <= now() {
            return bad("This sign-in took too long. Please start again.");
        }
        let state = q("state").unwrap_or_default();
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(state.as_bytes(), pending.state.as_bytes()).into();
        if !same {
            tracing::warn!("bff: callback state does not match the login of this browser");
            return bad(
                "The sign-in response does not belong to this sign-in. Please start again.",
            );
        }
        // RFC 9207: the response names its issuer; a mix-up is refused.
        if let Some(iss) = q("iss")
            && iss.trim_end_matches('/') != self.cfg.issuer
        {
            return bad("The sign-in response came from another issuer.");
        }
        if let Some(error) = q("error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return page(
                StatusCode::FORBIDDEN,
                "Sign-in did not complete",
                &format!("The identity provider answered {code}."),
            );
        }
        let Some(code) = q("code") else {
            return bad("The sign-in response carries no code.");
        };
        let Ok(verifier) = self.seal.open(key, &pending.verifier) else {
            return internal();
        };
        let verifier = String::from_utf8_lossy(&verifier).into_owned();
        let grant = self
            .provider
            .token(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &self.cfg.redirect_uri),
                ("code_verifier", &verifier),
            ])
            .await;
        let tokens = match grant {
            Ok(t) => t,
            Err(OidcError::Refused { error }) => {
                tracing::warn!(%error, "bff: the provider refused the code");
                return bad("The sign-in could not be completed. Please start again.");
            }
            Err(e) => return provider_down(&e),
        };
        let Some(id_token) = tokens.id_token.clone() else {
            return bad("The identity provider sent no ID token.");
        };
        let claims = match self
            .provider
            .verify_id_token(&id_token, Some(&pending.nonce))
            .await
        {
            Ok(c) => c,
            Err(e @ OidcError::Unavailable(_)) => return provider_down(&e),
            Err(e) => {
                tracing::warn!(error = %e, "bff: ID token refused");
                return bad("The sign-in could not be verified. Please start again.");
            }
        };
        let Some(subject) = claims.get("sub").and_then(Value::as_str) else {
            return bad("The ID token names no subject.");
        };
        let mut profile = serde_json::Map::new();
        for k in ["name", "preferred_username", "email", "roles", "groups"] {
            if let Some(v) = claims.get(k) {
                profile.insert(k.into(), v.clone());
            }
        }
        // A fresh session id at every login (no fixation); an older session
        // of this browser ends.
        if let Some(old) = cookie(parts, self.session_cookie) {
            self.end(&sha256(old.as_bytes())).await;
        }
        let (Ok(session), Ok(csrf)) = (random_token(32), random_token(32)) else {
            return internal();
        };
        let skey = sha256(session.as_bytes());
        let t = now();
        let mut row = SessionRow {
            subject: subject.to_owned(),
            profile: Value::Object(profile).to_string(),
            scope: tokens
                .scope
                .clone()
                .unwrap_or_else(|| self.cfg.scopes.join(" ")),
            tokens: Vec::new(),
            access_expires_at: t + tokens.expires_in.unwrap_or(300),
            csrf,
            created_at: t,
            last_seen: t,
            expires_at: t + self.cfg.session_max,
            version: 0,
        };
        let Some(sealed) = self.seal_tokens(&skey, &tokens, Who::of(&row), None) else {
            return internal();
        };
        row.tokens = sealed;
        if let Err(e) = self.store.create(&skey, &row).await {
            tracing::error!(error = %e, "bff: cannot create a session");
            return store_down();
        }
        tracing::info!(target: "audit", event = "bff_login", sub = %row.subject, "session started");
        let mut r = redirect(StatusCode::SEE_OTHER, &pending.return_to);
        self.set_cookie(&mut r, self.session_cookie, &session, self.cfg.session_max);
        r
    }

    async fn session_info(&self, parts: &Parts) -> Response<Body> {
        let live = match self.current(parts).await {
            Ok(Some((_, live))) => live,
            Ok(None) | Err(AuthnError::Invalid { .. }) | Err(AuthnError::Missing) => {
                let mut r =
                    json_response(StatusCode::UNAUTHORIZED, json!({"authenticated": false}));
                if cookie(parts, self.session_cookie).is_some() {
                    self.set_cookie(&mut r, self.session_cookie, "", 0);
                }
                return r;
            }
            Err(_) => return store_down(),
        };
        let row = &live.row;
        let mut body = serde_json::from_str::<serde_json::Map<String, Value>>(&row.profile)
            .unwrap_or_default();
        body.insert("authenticated".into(), true.into());
        body.insert("sub".into(), row.subject.clone().into());
        body.insert("scope".into(), row.scope.clone().into());
        body.insert("session_expires_at".into(), row.expires_at.into());
        body.insert("csrf_token".into(), row.csrf.clone().into());
        body.insert("csrf_header".into(), CSRF_HEADER.into());
        json_response(StatusCode::OK, Value::Object(body))
    }

    async fn logout(&self, parts: &Parts) -> Response<Body> {
        let after = self
            .cfg
            .post_logout_redirect_uri
            .clone()
            .unwrap_or_else(|| self.cfg.after_login.clone());
        let current = self.current(parts).await;
        let (key, live) = match current {
            Ok(Some(kl)) => kl,
            Ok(None) | Err(AuthnError::Invalid { .. }) | Err(AuthnError::Missing) => {
                let mut r = redirect(StatusCode::SEE_OTHER, &after);
                self.set_cookie(&mut r, self.session_cookie, "", 0);
                return r;
            }
            Err(_) => return store_down(),
        };
        if !self.csrf_ok(parts, &live.row) {
            return csrf_refused();
        }
        self.end(&key).await;
        tracing::info!(target: "audit", event = "bff_logout", sub = %live.row.subject, "session ended");
        if let Some(refresh) = live.tokens.refresh.clone() {
            match self.provider.revoke(&refresh, "refresh_token").await {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "bff: could not revoke the refresh token"),
            }
        }
        // RP-initiated logout ends the provider's session too.
        let location = match (self.provider.metadata().await, &live.tokens.id) {
            (Ok(m), Some(id)) if m.end_session_endpoint.is_some() => {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("id_token_hint", id)
                    .append_pair("client_id", &self.cfg.client_id);
                if let Some(p) = &self.cfg.post_logout_redirect_uri {
                    q.append_pair("post_logout_redirect_uri", p);
                }
                let ep = m.end_session_endpoint.clone().unwrap_or_default();
                let sep = if ep.contains('?') { '&' } else { '?' };
                format!("{ep}{sep}{}", q.finish())
            }
            _ => after,
        };
        let mut r = redirect(StatusCode::SEE_OTHER, &location);
        self.set_cookie(&mut r, self.session_cookie, "", 0);
        r
    }

    // ------------------------------------------------------------- sessions

    async fn end(&self, key: &[u8; 32]) {
        self.sessions.invalidate(key).await;
        if let Err(e) = self.store.delete(key).await {
            tracing::error!(error = %e, "bff: cannot delete a session");
        }
    }

    fn seal_tokens(
        &self,
        key: &[u8; 32],
        t: &TokenResponse,
        who: Who,
        previous: Option<&Tokens>,
    ) -> Option<Vec<u8>> {
        let tokens = Tokens {
            access: t.access_token.clone(),
            // A provider that does not rotate keeps the old refresh token
            // valid (RFC 6749 §6); an ID token is optional on refresh.
            refresh: t
                .refresh_token
                .clone()
                .or_else(|| previous.and_then(|p| p.refresh.clone())),
            id: t
                .id_token
                .clone()
                .or_else(|| previous.and_then(|p| p.id.clone())),
            who,
        };
        let json = serde_json::to_vec(&tokens).ok()?;
        self.seal.seal(key, &json).ok()
    }

    fn open_row(&self, key: &[u8; 32], row: SessionRow) -> Option<Live> {
        let plain = self.seal.open(key, &row.tokens).ok()?;
        let tokens: Tokens = serde_json::from_slice(&plain).ok()?;
        if tokens.who != Who::of(&row) {
            tracing::warn!("bff: a stored session does not match what was sealed; ended");
            return None;
        }
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", tokens.access)).ok()?;
        bearer.set_sensitive(true);
        Some(Live {
            row,
            tokens,
            bearer,
        })
    }

    async fn load(&self, key: &[u8; 32]) -> Result<Option<Arc<Live>>, AuthnError> {
        let row = self.store.get(key).await.map_err(|e| {
            tracing::error!(error = %e, "bff: cannot read a session");
            AuthnError::Unavailable
        })?;
        let Some(row) = row else { return Ok(None) };
        match self.open_row(key, row) {
            Some(live) => {
                let live = Arc::new(live);
                if self.cache {
                    self.sessions.insert(*key, live.clone()).await;
                }
                Ok(Some(live))
            }
            None => {
                // Sealed with another key (a restart without a persistent
                // session key), or its clear fields edited in the store:
                // unusable, so gone.
                self.end(key).await;
                Ok(None)
            }
        }
    }

    /// The browser's live session, expiry and idle time checked, use recorded.
    async fn current(&self, parts: &Parts) -> Result<Option<([u8; 32], Arc<Live>)>, AuthnError> {
        let Some(value) = cookie(parts, self.session_cookie) else {
            return Ok(None);
        };
        let key = sha256(value.as_bytes());
        let cached = if self.cache {
            self.sessions.get(&key).await
        } else {
            None
        };
        let live = match cached {
            Some(l) => l,
            None => match self.load(&key).await? {
                Some(l) => l,
                None => return Err(session_ended()),
            },
        };
        let t = now();
        if t >= live.row.expires_at || t >= live.row.last_seen + self.cfg.session_idle {
            self.end(&key).await;
            return Err(session_ended());
        }
        // Often enough that an idle timeout shorter than TOUCH_EVERY holds.
        let touch_every = (self.cfg.session_idle / 2).clamp(1, TOUCH_EVERY);
        if t >= live.row.last_seen + touch_every {
            if let Err(e) = self.store.touch(&key, t).await {
                tracing::warn!(error = %e, "bff: cannot record session use");
            }
            let mut row = live.row.clone();
            row.last_seen = t;
            let fresh = Arc::new(Live {
                row,
                tokens: live.tokens.clone(),
                bearer: live.bearer.clone(),
            });
            if self.cache {
                self.sessions.insert(key, fresh.clone()).await;
            }
            return Ok(Some((key, fresh)));
        }
        Ok(Some((key, live)))
    }

    fn csrf_ok(&self, parts: &Parts, row: &SessionRow) -> bool {
        if matches!(
            parts.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        ) {
            return true;
        }
        if let Some(v) = parts.headers.get(CSRF_HEADER) {
            return subtle::ConstantTimeEq::ct_eq(v.as_bytes(), row.csrf.as_bytes()).into();
        }
        if let Some(site) = parts.headers.get("sec-fetch-site") {
            return site.as_bytes() == b"same-origin";
        }
        parts
            .headers
            .get(header::ORIGIN)
            .is_some_and(|o| o.as_bytes() == self.cfg.origin.as_bytes())
    }

    /// The `session` authenticator: `Ok(None)` without a session cookie.
    pub async fn authenticate(&self, parts: &Parts) -> Result<Option<Identity>, AuthnError> {
        let (key, mut live) = match self.current(parts).await? {
            Some(kl) => kl,
            None => return Ok(None),
        };
        if !self.csrf_ok(parts, &live.row) {
            return Err(AuthnError::Csrf);
        }
        if live.row.access_expires_at <= now() + self.cfg.refresh_before {
            live = self.refresh(&key, live.row.version).await?;
        }
        let row = &live.row;
        let profile: Value = serde_json::from_str(&row.profile).unwrap_or(Value::Null);
        let roles = profile
            .get("roles")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Identity {
            subject: row.subject.clone(),
            consumer: None,
            client_id: Some(self.cfg.client_id.clone()),
            scopes: row.scope.split(' ').map(str::to_owned).collect(),
            roles,
            method: "session",
            token_jti: None,
            expires_at: Some(row.access_expires_at),
            credential_digest: key,
            bearer: Some(live.bearer.clone()),
            actors: Vec::new(),
        }))
    }

    /// Refreshes the session's access token, found stale at `seen`
    /// (its version), once however many requests race here: the first
    /// refreshes, the others find its result. A refused refresh ends the
    /// session; an unreachable provider does not.
    async fn refresh(&self, key: &[u8; 32], seen: i64) -> Result<Arc<Live>, AuthnError> {
        let lock = self
            .refreshing
            .get_with(*key, || Arc::new(tokio::sync::Mutex::new(())));
        let _one = lock.lock().await;
        // Another request (or replica) may have refreshed meanwhile.
        let Some(live) = self.load(key).await? else {
            return Err(session_ended());
        };
        if live.row.version != seen {
            return Ok(live);
        }
        // Across gateways sharing the store: one refreshes, the others wait
        // for its result (a provider may take two uses of one refresh token
        // for a replay).
        let mut held = false;
        for _ in 0..REFRESH_WAIT_ROUNDS {
            match self.store.lock_refresh(key, REFRESH_LOCK).await {
                Ok(true) => {
                    held = true;
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(error = %e, "bff: cannot take the refresh lock");
                    return Err(AuthnError::Unavailable);
                }
            }
            tokio::time::sleep(REFRESH_WAIT).await;
            let Some(l) = self.load(key).await? else {
                return Err(session_ended());
            };
            if l.row.version != seen {
                return Ok(l);
            }
        }
        if !held {
            return Err(AuthnError::Unavailable);
        }
        let done = self.refresh_held(key, live).await;
        if let Err(e) = self.store.unlock_refresh(key).await {
            tracing::warn!(error = %e, "bff: cannot release the refresh lock (it expires)");
        }
        done
    }

    /// [`Self::refresh`] once this gateway holds the session's refresh lock.
    async fn refresh_held(&self, key: &[u8; 32], live: Arc<Live>) -> Result<Arc<Live>, AuthnError> {
        let Some(refresh) = live.tokens.refresh.clone() else {
            self.end(key).await;
            return Err(session_ended());
        };
        let grant = self
            .provider
            .token(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
            .await;
        let t = match grant {
            Ok(t) => t,
            Err(OidcError::Refused { error }) => {
                tracing::info!(target: "audit", event = "bff_refresh_refused", sub = %live.row.subject, %error, "session ended");
                self.end(key).await;
                return Err(session_ended());
            }
            Err(e) => {
                tracing::warn!(error = %e, "bff: refresh failed; the session stays");
                return Err(AuthnError::Unavailable);
            }
        };
        let sealed = self
            .seal_tokens(key, &t, live.tokens.who.clone(), Some(&live.tokens))
            .ok_or(AuthnError::Unavailable)?;
        let expires = now() + t.expires_in.unwrap_or(300);
        let stored = self
            .store
            .update_tokens(key, live.row.version, &sealed, expires)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "bff: cannot store refreshed tokens");
                AuthnError::Unavailable
            })?;
        if !stored {
            // Another replica refreshed first; its tokens are the session's.
            self.sessions.invalidate(key).await;
        }
        self.load(key).await?.ok_or_else(session_ended)
    }

    fn set_cookie(&self, r: &mut Response<Body>, name: &str, value: &str, max_age: u64) {
        let secure = if self.cfg.secure_cookies {
            "; Secure"
        } else {
            ""
        };
        let v =
            format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

fn session_ended() -> AuthnError {
    AuthnError::Invalid {
        scheme: "Session",
        description: "the session has ended; sign in again".into(),
    }
}

/// The first value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

fn no_store(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut r = Response::new(full(""));
    *r.status_mut() = status;
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => internal(),
    }
}

fn json_response(status: StatusCode, body: Value) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json_error(status: StatusCode, error: &str, description: &str) -> Response<Body> {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// 403 for a state-changing call without CSRF proof.
pub fn csrf_refused() -> Response<Body> {
    json_error(
        StatusCode::FORBIDDEN,
        "csrf_check_failed",
        "a state-changing call needs the x-portcullis-csrf header or a same-origin request",
    )
}

fn internal() -> Response<Body> {
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Please try again.",
    )
}

fn store_down() -> Response<Body> {
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Sessions are unavailable",
        "Please try again shortly.",
    )
}

fn provider_down(e: &OidcError) -> Response<Body> {
    tracing::error!(error = %e, "bff: the identity provider is unavailable");
    page(
        StatusCode::BAD_GATEWAY,
        "Sign-in is unavailable",
        "The identity provider cannot be reached. Please try again shortly.",
    )
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// A small HTML page (the browser is a person here, not an API client).
fn page(status: StatusCode, title: &str, message: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body><h1>{t}</h1><p>{m}</p></body></html>",
        t = escape(title),
        m = escape(message)
    );
    let mut r = Response::new(full(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::{escape, is_local_path};

    #[test]
    fn only_local_paths_are_redirect_targets() {
        for ok in ["/", "/app", "/app?x=1#y", "/a/b/c"] {
            assert!(is_local_path(ok), "{ok}");
        }
        for bad in [
            "",
            "app",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "/a\r\nSet-Cookie: x=1",
            "/a\\b",
        ] {
            assert!(!is_local_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn pages_escape_what_they_show() {
        assert_eq!(
            escape("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#x27;y&#x27;&lt;/script&gt;"
        );
    }
}
