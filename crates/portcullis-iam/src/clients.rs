//! Client registry: validation of admin input, secrets, the read cache, and
//! revocation of a client's tokens when it is disabled or deleted.

use crate::config::{
    ClientCredentialSpec, ClientSpec, Mode, parse_audiences, parse_grants, parse_scopes,
};
use crate::crypto::{MasterKey, generate_client_secret, random_token};
use crate::model::{Client, Credential, GrantType, LoginSettings, RevocationKind};
use crate::store::{NewRevocation, Store, StoreError};
use moka::future::Cache;
use portcullis_core::{Audience, ClientId, Clock, ScopeSet, Secret, UnixTime};
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The input is invalid; the message says which field and why.
    #[error("{0}")]
    Invalid(String),
    /// No such client.
    #[error("no client with this id")]
    NotFound,
    /// The id is taken.
    #[error("a client with this id already exists")]
    Conflict,
    /// The operation does not apply (e.g. rotating the secret of a JWKS client).
    #[error("{0}")]
    NotApplicable(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Random generation failed.
    #[error("could not generate a secret")]
    Random,
}

/// Client fields accepted by the admin API (create: all optional but a name;
/// update: only the fields present change).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientInput {
    /// Client id (create only; generated if absent).
    pub client_id: Option<String>,
    /// Display name.
    pub name: Option<String>,
    /// Inline JWK Set: the client authenticates with `private_key_jwt`.
    pub jwks: Option<serde_json::Value>,
    /// JWK Set URL: the client authenticates with `private_key_jwt`.
    pub jwks_uri: Option<String>,
    /// Grants.
    pub grant_types: Option<Vec<String>>,
    /// Allowed scopes.
    pub allowed_scopes: Option<Vec<String>>,
    /// Default scopes.
    pub default_scopes: Option<Vec<String>>,
    /// Allowed audiences.
    pub allowed_audiences: Option<Vec<String>>,
    /// Default audiences.
    pub default_audiences: Option<Vec<String>>,
    /// Lifetime override in seconds (0 clears it).
    pub access_token_ttl_secs: Option<u64>,
    /// Create a public client (`token_endpoint_auth_method` `none`): no
    /// secret, authorization code with PKCE only (create only).
    pub public: Option<bool>,
    /// Redirect URIs (authorization-code flow).
    pub redirect_uris: Option<Vec<String>>,
    /// Where RP-initiated logout may return to.
    pub post_logout_redirect_uris: Option<Vec<String>>,
    /// Skip the consent screen.
    pub first_party: Option<bool>,
    /// Require PKCE (always on for public clients).
    pub require_pkce: Option<bool>,
    /// Enabled flag.
    pub enabled: Option<bool>,
    /// `tls_client_auth` or `self_signed_tls_client_auth` (RFC 8705 §2).
    pub token_endpoint_auth_method: Option<String>,
    /// `tls_client_auth`: the certificate's subject DN (RFC 4514).
    pub tls_client_auth_subject_dn: Option<String>,
    /// `tls_client_auth`: a DNS SAN.
    pub tls_client_auth_san_dns: Option<String>,
    /// `tls_client_auth`: a URI SAN.
    pub tls_client_auth_san_uri: Option<String>,
    /// `tls_client_auth`: an IP address SAN.
    pub tls_client_auth_san_ip: Option<String>,
    /// `tls_client_auth`: an email SAN.
    pub tls_client_auth_san_email: Option<String>,
    /// `self_signed_tls_client_auth`: the client's certificates, PEM.
    pub tls_client_certificates: Option<Vec<String>>,
    /// `self_signed_tls_client_auth`: their `x5t#S256` thumbprints.
    pub tls_client_certificate_thumbprints: Option<Vec<String>>,
    /// Bind every access token to the client certificate (RFC 8705 §3.4).
    pub tls_client_certificate_bound_access_tokens: Option<bool>,
}

impl ClientInput {
    /// The certificate credential these fields register, if any; `jwks`
    /// counts as x5c certificates only with `self_signed_tls_client_auth`.
    fn tls_credential(&self) -> Result<Option<Credential>, ClientError> {
        let self_signed = self.token_endpoint_auth_method.as_deref()
            == Some(crate::mtls::SELF_SIGNED_TLS_CLIENT_AUTH);
        crate::mtls::TlsFields {
            method: self.token_endpoint_auth_method.as_deref(),
            subject: [
                self.tls_client_auth_subject_dn.as_deref(),
                self.tls_client_auth_san_dns.as_deref(),
                self.tls_client_auth_san_uri.as_deref(),
                self.tls_client_auth_san_ip.as_deref(),
                self.tls_client_auth_san_email.as_deref(),
            ],
            certificates: self.tls_client_certificates.as_deref(),
            thumbprints: self.tls_client_certificate_thumbprints.as_deref(),
            jwks: self.jwks.as_ref().filter(|_| self_signed),
        }
        .credential()
        .map_err(|(field, problem)| ClientError::Invalid(format!("{field}: {problem}")))
    }
}

/// A client as the admin API shows it. Never the secret or its digest.
#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    /// Client id.
    pub client_id: String,
    /// Name.
    pub name: String,
    /// Authentication methods it can use.
    pub token_endpoint_auth_methods: Vec<&'static str>,
    /// Inline JWKS, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
    /// `tls_client_auth`: the registered name (`tls_client_auth_subject_dn`,
    /// `tls_client_auth_san_dns`, …) and its value.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tls_client_auth: Option<std::collections::BTreeMap<&'static str, String>>,
    /// `self_signed_tls_client_auth`: `x5t#S256` of the registered certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_certificate_thumbprints: Option<Vec<String>>,
    /// Tokens always bound to the client certificate (RFC 8705 §3.4).
    pub tls_client_certificate_bound_access_tokens: bool,
    /// JWKS URL, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// Grants.
    pub grant_types: Vec<&'static str>,
    /// Allowed scopes.
    pub allowed_scopes: ScopeSet,
    /// Default scopes.
    pub default_scopes: ScopeSet,
    /// Allowed audiences.
    pub allowed_audiences: Vec<Audience>,
    /// Default audiences.
    pub default_audiences: Vec<Audience>,
    /// Lifetime override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token_ttl_secs: Option<u64>,
    /// Redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Post-logout redirect URIs.
    pub post_logout_redirect_uris: Vec<String>,
    /// Skips consent.
    pub first_party: bool,
    /// Requires PKCE.
    pub require_pkce: bool,
    /// Enabled.
    pub enabled: bool,
    /// Created.
    pub created_at: UnixTime,
    /// Updated.
    pub updated_at: UnixTime,
}

impl From<&Client> for ClientView {
    fn from(c: &Client) -> Self {
        let (jwks, jwks_uri) = match &c.credential {
            Credential::Jwks(j) => (Some(j.clone()), None),
            Credential::JwksUri(u) => (None, Some(u.to_string())),
            _ => (None, None),
        };
        let tls_client_auth = match &c.credential {
            Credential::TlsClientAuth(m) => Some([(m.metadata_name(), m.value())].into()),
            _ => None,
        };
        let tls_client_certificate_thumbprints = match &c.credential {
            Credential::SelfSignedTls(t) => Some(t.clone()),
            _ => None,
        };
        Self {
            client_id: c.id.to_string(),
            name: c.name.clone(),
            token_endpoint_auth_methods: c.credential.auth_methods().to_vec(),
            jwks,
            tls_client_auth,
            tls_client_certificate_thumbprints,
            tls_client_certificate_bound_access_tokens: c.tls_bound_tokens,
            jwks_uri,
            grant_types: c.grant_types.iter().map(|g| g.as_str()).collect(),
            allowed_scopes: c.allowed_scopes.clone(),
            default_scopes: c.default_scopes.clone(),
            allowed_audiences: c.allowed_audiences.clone(),
            default_audiences: c.default_audiences.clone(),
            access_token_ttl_secs: c.access_token_ttl,
            redirect_uris: c.login.redirect_uris.clone(),
            post_logout_redirect_uris: c.login.post_logout_redirect_uris.clone(),
            first_party: c.login.first_party,
            require_pkce: c.login.require_pkce,
            enabled: c.enabled,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// Clients, cached for reads on the token path.
pub struct ClientRegistry {
    store: Arc<dyn Store>,
    master: Arc<MasterKey>,
    clock: Arc<dyn Clock>,
    mode: Mode,
    max_ttl: u64,
    cache: Cache<ClientId, Option<Arc<Client>>>,
}

/// Checks a JWK Set a client registers: parseable, non-empty, public
/// asymmetric keys only.
fn check_jwks(v: &serde_json::Value) -> Result<(), ClientError> {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(v.clone())
        .map_err(|e| ClientError::Invalid(format!("jwks: not a JWK Set: {e}")))?;
    if set.keys.is_empty() {
        return Err(ClientError::Invalid("jwks: the set has no keys".into()));
    }
    for (n, k) in v["keys"].as_array().into_iter().flatten().enumerate() {
        if ["d", "p", "q", "dp", "dq", "qi", "k"]
            .iter()
            .any(|m| k.get(m).is_some())
        {
            return Err(ClientError::Invalid(format!(
                "jwks: key {n} contains private or symmetric key material; register public keys only"
            )));
        }
    }
    if set.keys.iter().any(|k| {
        matches!(
            k.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
        )
    }) {
        return Err(ClientError::Invalid(
            "jwks: symmetric keys are not accepted".into(),
        ));
    }
    Ok(())
}

fn check_jwks_uri(mode: Mode, s: &str) -> Result<url::Url, ClientError> {
    let u = url::Url::parse(s).map_err(|e| ClientError::Invalid(format!("jwks_uri: {e}")))?;
    let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback || mode == Mode::Development => Ok(u),
        _ => Err(ClientError::Invalid(
            "jwks_uri: must be an https URL".into(),
        )),
    }
}

fn invalid(e: crate::config::ConfigError) -> ClientError {
    ClientError::Invalid(e.to_string())
}

impl ClientRegistry {
    /// A registry over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        master: Arc<MasterKey>,
        clock: Arc<dyn Clock>,
        mode: Mode,
        max_ttl: u64,
        cache_ttl: u64,
    ) -> Self {
        let cache = Cache::builder()
            .max_capacity(100_000)
            .time_to_live(Duration::from_secs(cache_ttl))
            .build();
        Self {
            store,
            master,
            clock,
            mode,
            max_ttl,
            cache,
        }
    }

    /// The master key (for secret checks).
    pub fn master(&self) -> &MasterKey {
        &self.master
    }

    /// A client, from the cache or the store. Unknown ids are cached too.
    pub async fn get(&self, id: &ClientId) -> Result<Option<Arc<Client>>, StoreError> {
        if let Some(hit) = self.cache.get(id).await {
            metrics::counter!(crate::metrics::names::CLIENT_CACHE, "result" => "hit").increment(1);
            return Ok(hit);
        }
        metrics::counter!(crate::metrics::names::CLIENT_CACHE, "result" => "miss").increment(1);
        let loaded = self.store.get_client(id).await?.map(Arc::new);
        self.cache.insert(id.clone(), loaded.clone()).await;
        Ok(loaded)
    }

    /// All clients (uncached).
    pub async fn list(&self) -> Result<Vec<Client>, StoreError> {
        self.store.list_clients().await
    }

    fn revocation_of(&self, id: &ClientId, now: UnixTime) -> NewRevocation {
        NewRevocation {
            kind: RevocationKind::Client,
            subject: id.to_string(),
            issued_before: Some(now),
            expires_at: now + self.max_ttl + 60,
            revoked_at: now,
        }
    }

    /// Creates a client; returns it and, for secret clients, the secret (shown once).
    pub async fn create(
        &self,
        mut input: ClientInput,
        actor: &str,
    ) -> Result<(Client, Option<Secret>), ClientError> {
        let id = match &input.client_id {
            Some(s) => ClientId::from_str(s)
                .map_err(|e| ClientError::Invalid(format!("client_id: {e}")))?,
            None => ClientId::from_str(&format!(
                "c_{}",
                random_token(12).map_err(|_| ClientError::Random)?
            ))
            .map_err(|e| ClientError::Invalid(e.to_string()))?,
        };
        let now = self.clock.now();
        let public = input.public.take().unwrap_or(false);
        let tls = input.tls_credential()?;
        let (credential, secret) = match (&input.jwks, &input.jwks_uri) {
            _ if public && tls.is_some() => {
                return Err(ClientError::Invalid(
                    "public: a public client has no token_endpoint_auth_method".into(),
                ));
            }
            (_, Some(_)) if tls.is_some() => {
                return Err(ClientError::Invalid(
                    "jwks_uri: not for a certificate client".into(),
                ));
            }
            _ if tls.is_some() => (tls.clone().unwrap_or(Credential::None), None),
            (None, None) if public => (Credential::None, None),
            (Some(_), _) | (_, Some(_)) if public => {
                return Err(ClientError::Invalid(
                    "public: a public client has no jwks or jwks_uri".into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ClientError::Invalid(
                    "give jwks or jwks_uri, not both".into(),
                ));
            }
            (Some(j), None) => {
                check_jwks(j)?;
                (Credential::Jwks(j.clone()), None)
            }
            (None, Some(u)) => (Credential::JwksUri(check_jwks_uri(self.mode, u)?), None),
            (None, None) => {
                let s = generate_client_secret().map_err(|_| ClientError::Random)?;
                (
                    Credential::Secret {
                        digest: self.master.secret_digest(s.expose()),
                    },
                    Some(s),
                )
            }
        };
        let mut client = Client {
            name: id.to_string(),
            id,
            credential,
            grant_types: vec![GrantType::ClientCredentials],
            allowed_scopes: ScopeSet::new(),
            default_scopes: ScopeSet::new(),
            allowed_audiences: Vec::new(),
            default_audiences: Vec::new(),
            access_token_ttl: None,
            login: LoginSettings::default(),
            tls_bound_tokens: false,
            enabled: true,
            created_at: now,
            updated_at: now,
        };
        if public {
            client.grant_types = vec![GrantType::AuthorizationCode, GrantType::RefreshToken];
        }
        self.apply(&mut client, input)?;
        match self.store.create_client(&client).await {
            Err(StoreError::Conflict) => return Err(ClientError::Conflict),
            r => r?,
        }
        self.cache.invalidate(&client.id).await;
        crate::audit::client_changed("create", client.id.as_str(), actor);
        Ok((client, secret))
    }

    /// Applies the fields present in `input` and checks the result.
    fn apply(&self, c: &mut Client, input: ClientInput) -> Result<(), ClientError> {
        if let Some(n) = input.name {
            if n.is_empty() || n.len() > 200 {
                return Err(ClientError::Invalid("name: 1 to 200 characters".into()));
            }
            c.name = n;
        }
        if let Some(g) = input.grant_types {
            c.grant_types = parse_grants("grant_types", &g).map_err(invalid)?;
        }
        if let Some(s) = input.allowed_scopes {
            c.allowed_scopes = parse_scopes("allowed_scopes", &s).map_err(invalid)?;
        }
        if let Some(s) = input.default_scopes {
            c.default_scopes = parse_scopes("default_scopes", &s).map_err(invalid)?;
        }
        if let Some(a) = input.allowed_audiences {
            c.allowed_audiences = parse_audiences("allowed_audiences", &a).map_err(invalid)?;
        }
        if let Some(a) = input.default_audiences {
            c.default_audiences = parse_audiences("default_audiences", &a).map_err(invalid)?;
        }
        if let Some(t) = input.access_token_ttl_secs {
            if t > self.max_ttl {
                return Err(ClientError::Invalid(format!(
                    "access_token_ttl_secs: at most {} (max_access_token_ttl_secs)",
                    self.max_ttl
                )));
            }
            c.access_token_ttl = (t > 0).then_some(t);
        }
        if let Some(u) = input.redirect_uris {
            c.login.redirect_uris = u;
        }
        if let Some(u) = input.post_logout_redirect_uris {
            c.login.post_logout_redirect_uris = u;
        }
        if let Some(f) = input.first_party {
            c.login.first_party = f;
        }
        if let Some(p) = input.require_pkce {
            c.login.require_pkce = p;
        }
        if let Some(e) = input.enabled {
            c.enabled = e;
        }
        if let Some(b) = input.tls_client_certificate_bound_access_tokens {
            c.tls_bound_tokens = b;
        }
        crate::authorize::check_login_settings(
            &c.grant_types,
            matches!(c.credential, Credential::None),
            &c.login,
        )
        .map_err(|(field, problem)| ClientError::Invalid(format!("{field}: {problem}")))?;
        if !c.default_scopes.is_subset(&c.allowed_scopes) {
            return Err(ClientError::Invalid(
                "default_scopes: must be a subset of allowed_scopes".into(),
            ));
        }
        if !c
            .default_audiences
            .iter()
            .all(|a| c.allowed_audiences.contains(a))
        {
            return Err(ClientError::Invalid(
                "default_audiences: must be a subset of allowed_audiences".into(),
            ));
        }
        Ok(())
    }

    /// Updates the fields present in `input`. Disabling a client revokes
    /// every token it holds, in the same transaction.
    pub async fn update(
        &self,
        id: &ClientId,
        mut input: ClientInput,
        actor: &str,
    ) -> Result<Client, ClientError> {
        if input.client_id.take().is_some_and(|s| s != id.as_str()) {
            return Err(ClientError::Invalid("client_id cannot be changed".into()));
        }
        if input.public.is_some() {
            return Err(ClientError::Invalid(
                "public: set at creation only (create a new client)".into(),
            ));
        }
        let mut client = self
            .store
            .get_client(id)
            .await?
            .ok_or(ClientError::NotFound)?;
        let was_enabled = client.enabled;
        if let Some(tls) = input.tls_credential()? {
            if matches!(client.credential, Credential::None) {
                return Err(ClientError::Invalid(
                    "public: a public client has no token_endpoint_auth_method".into(),
                ));
            }
            if input.jwks_uri.is_some() {
                return Err(ClientError::Invalid(
                    "jwks_uri: not for a certificate client".into(),
                ));
            }
            input.jwks = None;
            client.credential = tls;
        }
        match (input.jwks.take(), input.jwks_uri.take()) {
            (Some(_), _) | (_, Some(_)) if matches!(client.credential, Credential::None) => {
                return Err(ClientError::Invalid(
                    "public: a public client has no jwks or jwks_uri".into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(ClientError::Invalid(
                    "give jwks or jwks_uri, not both".into(),
                ));
            }
            (Some(j), None) => {
                check_jwks(&j)?;
                client.credential = Credential::Jwks(j);
            }
            (None, Some(u)) => {
                client.credential = Credential::JwksUri(check_jwks_uri(self.mode, &u)?)
            }
            (None, None) => {}
        }
        self.apply(&mut client, input)?;
        let now = self.clock.now();
        client.updated_at = now;
        let revoke = (was_enabled && !client.enabled).then(|| self.revocation_of(id, now));
        if !self.store.update_client(&client, revoke.as_ref()).await? {
            return Err(ClientError::NotFound);
        }
        self.cache.invalidate(id).await;
        crate::audit::client_changed(
            if revoke.is_some() {
                "disable"
            } else {
                "update"
            },
            id.as_str(),
            actor,
        );
        Ok(client)
    }

    /// Deletes a client and revokes its tokens.
    pub async fn delete(&self, id: &ClientId, actor: &str) -> Result<(), ClientError> {
        let now = self.clock.now();
        if !self
            .store
            .delete_client(id, &self.revocation_of(id, now))
            .await?
        {
            return Err(ClientError::NotFound);
        }
        self.cache.invalidate(id).await;
        crate::audit::client_changed("delete", id.as_str(), actor);
        Ok(())
    }

    /// Replaces a secret client's secret; the old one stops working at once.
    pub async fn rotate_secret(&self, id: &ClientId, actor: &str) -> Result<Secret, ClientError> {
        let mut client = self
            .store
            .get_client(id)
            .await?
            .ok_or(ClientError::NotFound)?;
        match client.credential {
            Credential::Secret { .. } => {}
            Credential::None => {
                return Err(ClientError::NotApplicable(
                    "this is a public client; it has no secret",
                ));
            }
            Credential::Jwks(_) | Credential::JwksUri(_) => {
                return Err(ClientError::NotApplicable(
                    "this client authenticates with private_key_jwt; it has no secret",
                ));
            }
            Credential::TlsClientAuth(_) | Credential::SelfSignedTls(_) => {
                return Err(ClientError::NotApplicable(
                    "this client authenticates with a TLS client certificate; it has no secret",
                ));
            }
        }
        let s = generate_client_secret().map_err(|_| ClientError::Random)?;
        client.credential = Credential::Secret {
            digest: self.master.secret_digest(s.expose()),
        };
        client.updated_at = self.clock.now();
        if !self.store.update_client(&client, None).await? {
            return Err(ClientError::NotFound);
        }
        self.cache.invalidate(id).await;
        crate::audit::client_changed("rotate_secret", id.as_str(), actor);
        Ok(s)
    }

    /// Applies clients declared in the config file (idempotent).
    pub async fn apply_declared(&self, specs: &[ClientSpec]) -> Result<(), ClientError> {
        let now = self.clock.now();
        for spec in specs {
            let credential = match &spec.credential {
                ClientCredentialSpec::Secret(s) => Credential::Secret {
                    digest: self.master.secret_digest(s.expose()),
                },
                ClientCredentialSpec::Jwks(j) => {
                    check_jwks(j)
                        .map_err(|e| ClientError::Invalid(format!("client {}: {e}", spec.id)))?;
                    Credential::Jwks(j.clone())
                }
                ClientCredentialSpec::JwksUri(u) => Credential::JwksUri(u.clone()),
                ClientCredentialSpec::None => Credential::None,
                ClientCredentialSpec::Tls(c) => c.clone(),
            };
            let existing = self.store.get_client(&spec.id).await?;
            let client = Client {
                id: spec.id.clone(),
                name: spec.name.clone(),
                credential,
                grant_types: spec.grant_types.clone(),
                allowed_scopes: spec.allowed_scopes.clone(),
                default_scopes: spec.default_scopes.clone(),
                allowed_audiences: spec.allowed_audiences.clone(),
                default_audiences: spec.default_audiences.clone(),
                access_token_ttl: spec.access_token_ttl,
                login: spec.login.clone(),
                tls_bound_tokens: spec.tls_bound_tokens,
                enabled: spec.enabled,
                created_at: existing.as_ref().map_or(now, |e| e.created_at),
                updated_at: existing.as_ref().map_or(now, |e| e.updated_at),
            };
            let unchanged = existing.as_ref().is_some_and(|e| *e == client);
            if unchanged {
                continue;
            }
            let was_enabled = existing.as_ref().is_some_and(|e| e.enabled);
            let revoke =
                (was_enabled && !client.enabled).then(|| self.revocation_of(&client.id, now));
            let client = Client {
                updated_at: now,
                ..client
            };
            self.store.upsert_client(&client, revoke.as_ref()).await?;
            self.cache.invalidate(&client.id).await;
            crate::audit::client_changed("apply_config", client.id.as_str(), "config");
        }
        Ok(())
    }
}
