//! The token endpoint's form parser on arbitrary bodies: never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_iam::http::form::FormParams;

fuzz_target!(|data: &[u8]| {
    if let Ok(f) = FormParams::parse(data) {
        let _ = f.get("grant_type");
        let _ = f.get_all("resource").count();
    }
});
