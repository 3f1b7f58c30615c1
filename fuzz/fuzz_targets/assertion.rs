//! `private_key_jwt` client assertions on arbitrary input: never panic,
//! never accepted.
#![no_main]

use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;
use portcullis_core::jose::{AssertionPolicy, SigningAlgorithm, SigningKey, verify_client_assertion};
use std::sync::LazyLock;

static KEYS: LazyLock<JwkSet> = LazyLock::new(|| {
    let key = SigningKey::generate(SigningAlgorithm::Es256).expect("key");
    serde_json::from_value(serde_json::json!({"keys": [key.public_jwk()]})).expect("jwks")
});

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let p = AssertionPolicy { audiences: vec!["https://iam.test".into()], max_lifetime: 300, leeway: 0 };
        assert!(verify_client_assertion(s, "client", &KEYS, &p, 1_000).is_err());
    }
});
