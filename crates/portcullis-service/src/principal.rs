//! The authenticated caller, as handlers see it.

use portcullis_core::jose::TokenClaims;
use serde::Serialize;
use serde_json::Value;

/// One link of a delegation chain (RFC 8693 `act`), outermost first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// The acting party's subject.
    pub subject: String,
    /// Its client id, when the token names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// Who called, from a validated access token.
#[derive(Debug, Clone, Serialize)]
pub struct Principal {
    /// `sub`: the user, or the client for service tokens.
    pub subject: String,
    /// `client_id`: the client the token was issued to.
    pub client_id: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// `roles` claim, if any.
    pub roles: Vec<String>,
    /// Delegation chain from nested `act` claims, outermost (current actor) first.
    pub actors: Vec<Actor>,
    /// `jti`.
    pub token_id: String,
    /// `iat`.
    pub issued_at: u64,
    /// `exp`.
    pub expires_at: u64,
    /// Every claim, as validated.
    pub claims: TokenClaims,
}

impl Principal {
    /// Whether the token grants `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Whether the token carries `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// How the token is bound to a proof of possession (RFC 7800 `cnf`).
    pub fn confirmation(&self) -> Binding<'_> {
        match self.claims.extra.get("cnf") {
            None => Binding::None,
            Some(cnf) => match cnf.get("x5t#S256").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => Binding::Certificate(t),
                _ => Binding::Unsupported,
            },
        }
    }
}

/// The proof of possession a token demands ([`Principal::confirmation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding<'a> {
    /// A plain bearer token.
    None,
    /// RFC 8705 §3: only valid over a TLS connection whose client
    /// certificate has this `x5t#S256` thumbprint.
    Certificate(&'a str),
    /// A `cnf` this library cannot check (e.g. DPoP `jkt`): refused.
    Unsupported,
}

/// Reads nested `act` claims (bounded depth).
fn actors(mut act: Option<&Value>) -> Vec<Actor> {
    let mut out = Vec::new();
    while let Some(a) = act.filter(|a| a.is_object()) {
        if out.len() == 16 {
            break;
        }
        if let Some(sub) = a["sub"].as_str() {
            out.push(Actor {
                subject: sub.to_owned(),
                client_id: a["client_id"].as_str().map(str::to_owned),
            });
        }
        act = a.get("act");
    }
    out
}

impl From<TokenClaims> for Principal {
    fn from(c: TokenClaims) -> Self {
        let scopes = c
            .scope
            .as_deref()
            .map(|s| {
                s.split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let roles = match c.extra.get("roles") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            Some(Value::String(s)) => s
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Self {
            subject: c.sub.clone(),
            client_id: c.client_id.clone(),
            scopes,
            roles,
            actors: actors(c.extra.get("act")),
            token_id: c.jti.clone(),
            issued_at: c.iat,
            expires_at: c.exp,
            claims: c,
        }
    }
}
