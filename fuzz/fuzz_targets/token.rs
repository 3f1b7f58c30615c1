//! Access-token validation on arbitrary input: must never panic, and must
//! never accept anything (the key's private half is not available to the
//! fuzzer, so no input can be validly signed).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_core::jose::{SigningAlgorithm, SigningKey, TokenVerifier};
use std::sync::LazyLock;

static VERIFIER: LazyLock<TokenVerifier> = LazyLock::new(|| {
    let key = SigningKey::generate(SigningAlgorithm::Es256).expect("key");
    TokenVerifier::new("https://iam.test", &[key.public_jwk().clone()], 0)
});

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        assert!(VERIFIER.verify(s, 1_500).is_err());
    }
});
