//! Pure decisions of the client-credentials grant: which scopes and which
//! audiences a request gets (RFC 6749 §3.3, RFC 8707 §2).

use crate::model::Client;
use portcullis_core::oauth::{ErrorCode, OAuthError};
use portcullis_core::{Audience, ScopeSet};
use std::str::FromStr;

/// Requested ⊆ allowed, or `invalid_scope`; nothing requested → the defaults.
pub fn resolve_scope(client: &Client, requested: Option<&str>) -> Result<ScopeSet, OAuthError> {
    let Some(requested) = requested else {
        return Ok(client.default_scopes.clone());
    };
    let requested = ScopeSet::from_str(requested)
        .map_err(|e| OAuthError::new(ErrorCode::InvalidScope, format!("malformed scope: {e}")))?;
    if let Some(bad) = requested.difference(&client.allowed_scopes).next() {
        let shown = crate::http::form::truncate(bad.as_str());
        return Err(OAuthError::new(
            ErrorCode::InvalidScope,
            format!("scope {shown:?} is not allowed for this client"),
        ));
    }
    Ok(requested)
}

/// Every `resource` must be a registered audience of the client, or
/// `invalid_target`; none → the default audiences.
pub fn resolve_audience<'a>(
    client: &Client,
    resources: impl Iterator<Item = &'a str>,
) -> Result<Vec<Audience>, OAuthError> {
    let mut out: Vec<Audience> = Vec::new();
    for r in resources {
        let found = client.allowed_audiences.iter().find(|a| a.as_str() == r);
        match found {
            Some(a) if !out.contains(a) => out.push(a.clone()),
            Some(_) => {}
            None => {
                let shown = crate::http::form::truncate(r);
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    format!("resource {shown:?} is not allowed for this client"),
                ));
            }
        }
    }
    if out.is_empty() {
        out = client.default_audiences.clone();
    }
    if out.is_empty() {
        return Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "no resource requested and the client has no default audience",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Credential, GrantType};

    fn client() -> Client {
        Client {
            id: "c".parse().unwrap(),
            name: "c".into(),
            credential: Credential::Secret { digest: vec![] },
            grant_types: vec![GrantType::ClientCredentials],
            allowed_scopes: "a b c".parse().unwrap(),
            default_scopes: "a".parse().unwrap(),
            allowed_audiences: vec!["svc-1".parse().unwrap(), "svc-2".parse().unwrap()],
            default_audiences: vec!["svc-1".parse().unwrap()],
            access_token_ttl: None,
            login: Default::default(),
            tls_bound_tokens: false,
            enabled: true,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn scopes() {
        let c = client();
        assert_eq!(resolve_scope(&c, None).unwrap().to_string(), "a");
        assert_eq!(resolve_scope(&c, Some("c b")).unwrap().to_string(), "b c");
        assert_eq!(
            resolve_scope(&c, Some("a x")).unwrap_err().error,
            ErrorCode::InvalidScope
        );
        assert_eq!(
            resolve_scope(&c, Some("a  b")).unwrap_err().error,
            ErrorCode::InvalidScope
        );
    }

    #[test]
    fn audiences() {
        let c = client();
        let none: [&str; 0] = [];
        assert_eq!(
            resolve_audience(&c, none.into_iter()).unwrap()[0].as_str(),
            "svc-1"
        );
        assert_eq!(
            resolve_audience(&c, ["svc-2", "svc-1", "svc-2"].into_iter())
                .unwrap()
                .len(),
            2
        );
        let e = resolve_audience(&c, ["svc-3"].into_iter()).unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidTarget);
        let mut c = client();
        c.default_audiences.clear();
        assert_eq!(
            resolve_audience(&c, none.into_iter()).unwrap_err().error,
            ErrorCode::InvalidTarget
        );
    }
}
