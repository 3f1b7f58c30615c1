//! Identifier newtypes, parsed once at the edge.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// Empty where a value is required.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// Longer than allowed.
    #[error("{0} is longer than {1} characters")]
    TooLong(&'static str, usize),
    /// A character outside the allowed set.
    #[error("{0} contains a character that is not allowed")]
    BadChar(&'static str),
    /// Not a URL of the required form.
    #[error("{0} must be an absolute http(s) URL without query or fragment")]
    BadUrl(&'static str),
}

macro_rules! string_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(v: String) -> Result<Self, IdError> {
                v.parse()
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_newtype!(
    /// A client identifier: 1–128 visible ASCII characters, no spaces, no `:`
    /// (so it survives HTTP Basic encoding without ambiguity).
    ClientId
);
string_newtype!(
    /// One scope token (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`).
    Scope
);
string_newtype!(
    /// An audience / resource identifier a token is issued for.
    Audience
);
string_newtype!(
    /// The issuer identifier: an absolute http(s) URL, no query or fragment,
    /// compared exactly as a string.
    Issuer
);

fn check_len(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty(kind));
    }
    if s.len() > max {
        return Err(IdError::TooLong(kind, max));
    }
    Ok(())
}

impl FromStr for ClientId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        check_len("client id", s, 128)?;
        if !s.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(IdError::BadChar("client id"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl FromStr for Scope {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        check_len("scope", s, 256)?;
        let ok = s
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
        if !ok {
            return Err(IdError::BadChar("scope"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl FromStr for Audience {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        check_len("audience", s, 512)?;
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdError::BadChar("audience"));
        }
        Ok(Self(s.to_owned()))
    }
}

impl FromStr for Issuer {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        check_len("issuer", s, 512)?;
        let url = url::Url::parse(s).map_err(|_| IdError::BadUrl("issuer"))?;
        let ok = matches!(url.scheme(), "http" | "https")
            && url.host().is_some()
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none();
        if !ok {
            return Err(IdError::BadUrl("issuer"));
        }
        Ok(Self(s.trim_end_matches('/').to_owned()))
    }
}

impl Issuer {
    /// An endpoint URL below the issuer, e.g. `join("/oauth2/token")`.
    pub fn join(&self, path: &str) -> String {
        format!("{}{}", self.0, path)
    }
}

/// A set of scopes, kept sorted so its string form is canonical.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the set has no scopes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `scope` is in the set.
    pub fn contains_str(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.as_str() == scope)
    }

    /// Whether every scope of `self` is in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Scopes of `self` not in `other`.
    pub fn difference<'a>(&'a self, other: &'a ScopeSet) -> impl Iterator<Item = &'a Scope> {
        self.0.difference(&other.0)
    }

    /// Iterates in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Adds a scope.
    pub fn insert(&mut self, scope: Scope) {
        self.0.insert(scope);
    }
}

impl FromStr for ScopeSet {
    type Err = IdError;
    /// Parses a space-delimited scope string (RFC 6749 §3.3). Exactly one
    /// space separates scopes; other whitespace is refused.
    fn from_str(s: &str) -> Result<Self, IdError> {
        if s.is_empty() {
            return Ok(Self::new());
        }
        s.split(' ')
            .map(Scope::from_str)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            f.write_str(s.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeSet({self})")
    }
}

impl TryFrom<Vec<String>> for ScopeSet {
    type Error = IdError;
    fn try_from(v: Vec<String>) -> Result<Self, IdError> {
        v.into_iter()
            .map(Scope::try_from)
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl From<ScopeSet> for Vec<String> {
    fn from(v: ScopeSet) -> Vec<String> {
        v.0.into_iter().map(String::from).collect()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<T: IntoIterator<Item = Scope>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_syntax_follows_rfc6749() {
        assert!("a:b".parse::<Scope>().is_ok());
        assert!("a\"b".parse::<Scope>().is_err());
        assert!("a\\b".parse::<Scope>().is_err());
        assert!("a b".parse::<Scope>().is_err());
        assert!("é".parse::<Scope>().is_err());
        assert!("read  write".parse::<ScopeSet>().is_err(), "double space");
        assert!("read\twrite".parse::<ScopeSet>().is_err());
        let set: ScopeSet = "write read".parse().unwrap();
        assert_eq!(set.to_string(), "read write");
    }

    #[test]
    fn client_ids_refuse_colons_and_spaces() {
        assert!("svc-a".parse::<ClientId>().is_ok());
        assert!("svc:a".parse::<ClientId>().is_err());
        assert!("svc a".parse::<ClientId>().is_err());
        assert!("".parse::<ClientId>().is_err());
        assert!("x".repeat(129).parse::<ClientId>().is_err());
    }

    #[test]
    fn issuer_must_be_a_plain_http_url() {
        assert_eq!(
            "https://iam.example/".parse::<Issuer>().unwrap().as_str(),
            "https://iam.example"
        );
        assert!("https://iam.example/?x=1".parse::<Issuer>().is_err());
        assert!("ftp://iam.example".parse::<Issuer>().is_err());
        assert!("https://u:p@iam.example".parse::<Issuer>().is_err());
    }
}
