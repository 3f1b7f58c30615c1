//! Pure decisions of token exchange (RFC 8693): may this client exchange
//! this subject token, for which audiences and scopes, and what `act` chain
//! the new token carries.
//!
//! A service that received a token (its `aud` names the service) presents it
//! with its own client authentication and gets a token for a downstream
//! audience. The result keeps the original subject and names the acting
//! service in `act` (RFC 8693 §4.1), nested for chains. Which client may
//! exchange tokens of which audiences for which targets and scopes is
//! configured (`[[token_exchange.rules]]`); scopes only narrow; the chain
//! depth is bounded.

use portcullis_core::jose::TokenClaims;
use portcullis_core::oauth::{ErrorCode, OAuthError};
use serde_json::{Value, json};

/// `grant_type` of token exchange.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// The token type of our access tokens (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// A JWT (our access tokens are JWTs too).
pub const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// One rule: `client` may exchange subject tokens whose `aud` holds one of
/// `subject_audiences` for tokens to `audiences`, with at most `scopes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeRule {
    /// The exchanging client.
    pub client: String,
    /// Audiences a subject token must be for (the client's own API).
    pub subject_audiences: Vec<String>,
    /// Audiences it may get tokens for.
    pub audiences: Vec<String>,
    /// The widest scope it may get (always also within the subject token's).
    pub scopes: Vec<String>,
}

/// The configured policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangePolicy {
    /// Longest `act` chain of an issued token (1 = one service acting).
    pub max_depth: usize,
    /// Rules, any of which may allow a request.
    pub rules: Vec<ExchangeRule>,
}

impl Default for ExchangePolicy {
    fn default() -> Self {
        Self {
            max_depth: 3,
            rules: Vec::new(),
        }
    }
}

/// What an allowed exchange issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Audiences of the new token.
    pub audiences: Vec<String>,
    /// Its scope (space-separated, sorted).
    pub scope: String,
    /// Its `act` claim.
    pub act: Value,
}

fn invalid_request(why: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::invalid_request(why)
}

/// How many actors an `act` claim names (0 without one).
pub fn depth(act: Option<&Value>) -> usize {
    let mut n = 0;
    let mut cur = act;
    while let Some(a) = cur.filter(|a| a.is_object()) {
        n += 1;
        cur = a.get("act");
    }
    n
}

/// Decides an exchange by `client` of the verified `subject` token for
/// `targets` (the `audience`/`resource` parameters; none = the rule's only
/// audience when it has exactly one) and `requested` scope (none = all the
/// subject's scopes the rule allows).
pub fn decide(
    policy: &ExchangePolicy,
    client: &str,
    subject: &TokenClaims,
    targets: &[&str],
    requested: Option<&str>,
) -> Result<Decision, OAuthError> {
    let mine: Vec<&ExchangeRule> = policy.rules.iter().filter(|r| r.client == client).collect();
    if mine.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not exchange tokens",
        ));
    }
    // The subject token must have been sent to this client's API.
    let rules: Vec<&ExchangeRule> = mine
        .into_iter()
        .filter(|r| r.subject_audiences.iter().any(|a| subject.aud.contains(a)))
        .collect();
    if rules.is_empty() {
        return Err(invalid_request(
            "the subject token was not issued for this client's audience",
        ));
    }
    let targets: Vec<String> = if targets.is_empty() {
        let all: Vec<&String> = rules.iter().flat_map(|r| &r.audiences).collect();
        match all.as_slice() {
            [one] => vec![(*one).clone()],
            _ => {
                return Err(invalid_request(
                    "name the target with the audience or resource parameter",
                ));
            }
        }
    } else {
        let mut v: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
        v.dedup();
        v
    };
    // One rule must allow every target.
    let Some(rule) = rules
        .iter()
        .find(|r| targets.iter().all(|t| r.audiences.contains(t)))
    else {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "this client may not get tokens for that audience",
        ));
    };
    let held: Vec<&str> = subject
        .scope
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect();
    let allowed = |s: &str| held.contains(&s) && rule.scopes.iter().any(|r| r == s);
    let mut scopes: Vec<&str> = match requested {
        Some(req) => {
            let req: Vec<&str> = req.split(' ').filter(|s| !s.is_empty()).collect();
            if let Some(bad) = req.iter().find(|s| !allowed(s)) {
                let shown = crate::http::form::truncate(bad);
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    format!("scope {shown:?} is wider than the subject token or the exchange rule"),
                ));
            }
            req
        }
        None => held.iter().copied().filter(|s| allowed(s)).collect(),
    };
    scopes.sort_unstable();
    scopes.dedup();
    let previous = subject.extra.get("act");
    if depth(previous) + 1 > policy.max_depth {
        return Err(invalid_request(format!(
            "the delegation chain would exceed {} actors",
            policy.max_depth
        )));
    }
    let mut act = json!({ "sub": client });
    if let (Some(prev), Some(obj)) = (previous, act.as_object_mut()) {
        obj.insert("act".into(), prev.clone());
    }
    Ok(Decision {
        audiences: targets,
        scope: scopes.join(" "),
        act,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_core::jose::Audiences;

    fn subject(aud: &str, scope: &str, act: Option<Value>) -> TokenClaims {
        let mut extra = serde_json::Map::new();
        if let Some(a) = act {
            extra.insert("act".into(), a);
        }
        TokenClaims {
            iss: "https://iam".into(),
            sub: "u_alice".into(),
            aud: Audiences::from_vec(vec![aud.into()]),
            exp: 2_000,
            iat: 1_000,
            nbf: Some(1_000),
            jti: "j".into(),
            client_id: "web".into(),
            scope: Some(scope.into()),
            extra,
        }
    }

    fn policy() -> ExchangePolicy {
        ExchangePolicy {
            max_depth: 2,
            rules: vec![ExchangeRule {
                client: "orders".into(),
                subject_audiences: vec!["orders-api".into()],
                audiences: vec!["inventory-api".into()],
                scopes: vec!["inventory:read".into(), "orders:read".into()],
            }],
        }
    }

    #[test]
    fn an_allowed_exchange_narrows_scopes_and_names_the_actor() {
        let s = subject("orders-api", "orders:read inventory:read profile", None);
        let d = decide(&policy(), "orders", &s, &[], None).unwrap();
        assert_eq!(d.audiences, ["inventory-api"]);
        assert_eq!(d.scope, "inventory:read orders:read");
        assert_eq!(d.act, json!({"sub": "orders"}));
        let d = decide(
            &policy(),
            "orders",
            &s,
            &["inventory-api"],
            Some("inventory:read"),
        )
        .unwrap();
        assert_eq!(d.scope, "inventory:read");
    }

    #[test]
    fn refusals_carry_the_rfc_error_codes() {
        let s = subject("orders-api", "orders:read", None);
        let code = |r: Result<Decision, OAuthError>| r.unwrap_err().error;
        assert_eq!(
            code(decide(&policy(), "billing", &s, &[], None)),
            ErrorCode::UnauthorizedClient
        );
        let other = subject("billing-api", "orders:read", None);
        assert_eq!(
            code(decide(&policy(), "orders", &other, &[], None)),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(decide(&policy(), "orders", &s, &["payments-api"], None)),
            ErrorCode::InvalidTarget
        );
        // Widening: a scope the subject token lacks, or the rule does not allow.
        assert_eq!(
            code(decide(&policy(), "orders", &s, &[], Some("inventory:read"))),
            ErrorCode::InvalidScope
        );
        let wide = subject("orders-api", "orders:read admin", None);
        assert_eq!(
            code(decide(&policy(), "orders", &wide, &[], Some("admin"))),
            ErrorCode::InvalidScope
        );
    }

    #[test]
    fn chains_nest_and_are_bounded() {
        let once = subject("orders-api", "orders:read", Some(json!({"sub": "web-bff"})));
        let d = decide(&policy(), "orders", &once, &[], None).unwrap();
        assert_eq!(d.act, json!({"sub": "orders", "act": {"sub": "web-bff"}}));
        assert_eq!(depth(Some(&d.act)), 2);
        let twice = subject("orders-api", "orders:read", Some(d.act));
        let e = decide(&policy(), "orders", &twice, &[], None).unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidRequest);
        assert_eq!(depth(None), 0);
        assert_eq!(depth(Some(&json!("not an object"))), 0);
    }
}
