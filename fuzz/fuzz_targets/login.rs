//! What the browser login reads from untrusted bytes: the sealed pending
//! request of a form post and the `Cookie` header. Never panics; nothing
//! forged opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_iam::crypto::MasterKey;
use portcullis_iam::login::{CSRF_COOKIE, Cookies, Pending};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = MasterKey::from_bytes(&[9; 32]) {
        assert!(Pending::open(&key, s, 0).is_none());
    }
    let mut h = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(s) {
        h.insert(http::header::COOKIE, v);
        let _ = Cookies::for_issuer("https://iam.example").get(&h, CSRF_COOKIE);
    }
});
