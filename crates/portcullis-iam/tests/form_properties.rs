//! Property tests for the token endpoint's form parser.

#![allow(clippy::unwrap_used)]

use portcullis_iam::http::form::FormParams;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the parser.
    #[test]
    fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = FormParams::parse(&body);
    }

    /// Whatever parses has no repeated single-valued parameter and no U+FFFD.
    #[test]
    fn accepted_forms_are_unambiguous(pairs in proptest::collection::vec(("[a-z_]{1,6}", "\\PC{0,12}"), 0..8)) {
        let body: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs.iter()).finish();
        if let Ok(f) = FormParams::parse(body.as_bytes()) {
            for (k, _) in &pairs {
                if k != "resource" {
                    prop_assert!(pairs.iter().filter(|(k2, _)| k2 == k).count() == 1);
                    let _ = f.get(k);
                }
            }
        }
    }
}
