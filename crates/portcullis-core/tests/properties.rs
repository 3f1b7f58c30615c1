//! Property tests for every parser of untrusted bytes in the core: token
//! inspection/verification, client assertions, scope strings.

#![allow(clippy::unwrap_used)]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::jwk::JwkSet;
use portcullis_core::ScopeSet;
use portcullis_core::jose::validate::{Policy, inspect, verify};
use portcullis_core::jose::{
    AccessTokenClaims, AssertionPolicy, Audiences, SigningAlgorithm, SigningKey, TokenVerifier,
    VerifyKey, verify_client_assertion,
};
use proptest::prelude::*;
use std::sync::LazyLock;

const ISS: &str = "https://iam.test";

struct Fixture {
    key: SigningKey,
    verifier: TokenVerifier,
    token: String,
}

static FIX: LazyLock<Fixture> = LazyLock::new(|| {
    let key = SigningKey::generate(SigningAlgorithm::Es256).unwrap();
    let verifier = TokenVerifier::new(ISS, &[key.public_jwk().clone()], 0);
    let claims = AccessTokenClaims {
        iss: ISS.into(),
        sub: "svc".into(),
        aud: Audiences::One("api".into()),
        exp: 2_000,
        iat: 1_000,
        nbf: 1_000,
        jti: "j".into(),
        client_id: "svc".into(),
        scope: Some("read".into()),
        act: None,
        roles: Vec::new(),
        cnf: None,
    };
    let token = key.sign_access_token(&claims).unwrap();
    Fixture {
        key,
        verifier,
        token,
    }
});

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary text never panics and never verifies.
    #[test]
    fn arbitrary_strings_are_refused_without_panic(s in "\\PC{0,400}") {
        prop_assert!(FIX.verifier.verify(&s, 1_500).is_err());
    }

    /// Three arbitrary base64url segments (well-formed shape) are refused.
    #[test]
    fn arbitrary_segments_are_refused(h in proptest::collection::vec(any::<u8>(), 0..200),
                                      p in proptest::collection::vec(any::<u8>(), 0..400),
                                      s in proptest::collection::vec(any::<u8>(), 0..80)) {
        let t = format!("{}.{}.{}", B64.encode(h), B64.encode(p), B64.encode(s));
        prop_assert!(FIX.verifier.verify(&t, 1_500).is_err());
    }

    /// Changing any one character of a valid token makes it invalid.
    #[test]
    fn any_single_character_change_is_detected(pos in 0usize..10_000, c in "[A-Za-z0-9_.=+/-]") {
        let t = &FIX.token;
        let pos = pos % t.len();
        let mut bytes = t.as_bytes().to_vec();
        let replacement = c.as_bytes()[0];
        prop_assume!(bytes[pos] != replacement);
        bytes[pos] = replacement;
        let mutated = String::from_utf8(bytes).unwrap();
        prop_assert!(FIX.verifier.verify(&mutated, 1_500).is_err(), "accepted {mutated}");
    }

    /// Arbitrary JSON claims, properly signed, never panic the validator.
    #[test]
    fn signed_arbitrary_claims_never_panic(v in arb_json(3)) {
        let t = FIX.key.sign_access_token(&v).unwrap();
        let _ = FIX.verifier.verify(&t, 1_500);
        let policy = Policy { issuer: ISS.into(), audience: Some("api".into()), algorithms: vec![jsonwebtoken::Algorithm::ES256], leeway: 0, max_token_bytes: 16 * 1024 };
        let key = VerifyKey::from_jwk(FIX.key.public_jwk(), &policy.algorithms).unwrap();
        if let Ok(i) = inspect(&t, &policy) {
            let _ = verify(&t, &i, &key, &policy, 1_500);
        }
    }

    /// Client assertions: arbitrary input never panics and never verifies.
    #[test]
    fn arbitrary_assertions_are_refused(s in "\\PC{0,300}") {
        let set: JwkSet = serde_json::from_value(serde_json::json!({"keys": [FIX.key.public_jwk()]})).unwrap();
        let p = AssertionPolicy { audiences: vec![ISS.into()], max_lifetime: 300, leeway: 0 };
        prop_assert!(verify_client_assertion(&s, "c", &set, &p, 1_000).is_err());
    }

    /// Scope strings: parse → display → parse is stable; bad input is an error, not a panic.
    #[test]
    fn scope_round_trip(s in "\\PC{0,100}") {
        if let Ok(set) = s.parse::<ScopeSet>() {
            let again: ScopeSet = set.to_string().parse().unwrap();
            prop_assert_eq!(again, set);
        }
    }
}

fn arb_json(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "\\PC{0,20}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from(ISS)),
        Just(serde_json::Value::from(1_200u64)),
    ];
    leaf.prop_recursive(depth, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("iss".to_owned()),
                    Just("exp".to_owned()),
                    Just("aud".to_owned()),
                    Just("sub".to_owned()),
                    Just("iat".to_owned()),
                    Just("jti".to_owned()),
                    Just("client_id".to_owned()),
                    "[a-z]{1,5}"
                ],
                inner,
                0..8
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}
