//! Validation throughput on one core, per algorithm:
//! (a) the full path (header, key lookup, signature, strict claims) with the
//!     validated-token cache disabled,
//! (b) a validated-token cache hit: the same token again, answered by the
//!     thread's map of recent tokens,
//! (b2) a shared-cache hit: 512 tokens in turn, more than a thread keeps
//!     recent, so each is answered by the shared cache (SHA-256 and moka),
//! (c) the raw signature-verify floor: aws-lc-rs verifying the same signing
//!     input and signature, measured in the same run.
//! After Criterion's report it prints validations/s and the ratios a/c, b/c.
//!
//! Run: `cargo bench -p portcullis-service --bench validation`

use aws_lc_rs::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group};
use portcullis_core::jose::SigningAlgorithm;
use portcullis_service::{Validator, ValidatorConfig};
use portcullis_test_support::FakeIssuer;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// Polls a future that is expected to be ready at once (keys are loaded).
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("validation went to the network during the benchmark"),
    }
}

const ALGS: [(SigningAlgorithm, &str); 3] = [
    (SigningAlgorithm::Es256, "ES256"),
    (SigningAlgorithm::EdDsa, "EdDSA"),
    (SigningAlgorithm::Rs256, "RS256"),
];

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    for (alg, name) in ALGS {
        let iss = rt.block_on(FakeIssuer::start_with(alg));
        let token = iss.sign(&iss.claims("bench-api"));
        let make = |cache: u64| {
            let mut cfg = ValidatorConfig::new(&iss.issuer, "bench-api")
                .algorithms(&[alg.jwt_alg()])
                .dangerous_ignore_revocations();
            cfg.cache_capacity = cache;
            let v = Validator::new(cfg);
            rt.block_on(v.jwks().refresh()).expect("jwks");
            v
        };
        let full = make(0);
        let cached = make(10_000);
        now_or_never(cached.validate(&token)).expect("valid");
        let many: Vec<String> = (0..512)
            .map(|i| {
                let mut c = iss.claims("bench-api");
                c["sub"] = serde_json::json!(format!("svc-{i}"));
                iss.sign(&c)
            })
            .collect();
        for t in &many {
            now_or_never(cached.validate(t)).expect("valid");
        }

        let mut g = c.benchmark_group(name);
        g.bench_function("a_full", |b| {
            b.iter(|| now_or_never(full.validate(black_box(&token))).expect("valid"))
        });
        g.bench_function("b_cache_hit", |b| {
            b.iter(|| now_or_never(cached.validate(black_box(&token))).expect("valid"))
        });
        let mut next = many.iter().cycle();
        g.bench_function("b2_shared_hit", |b| {
            b.iter(|| {
                let t = next.next().expect("cycle");
                now_or_never(cached.validate(black_box(t))).expect("valid")
            })
        });

        let (input, sig) = token.rsplit_once('.').expect("jws");
        let sig = B64.decode(sig).expect("sig");
        let jwk = iss.key.public_jwk();
        let d = |k: &str| B64.decode(jwk[k].as_str().expect("member")).expect("b64");
        match alg {
            SigningAlgorithm::Es256 => {
                let point = [vec![4u8], d("x"), d("y")].concat();
                let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
                g.bench_function("c_floor", |b| {
                    b.iter(|| key.verify(black_box(input.as_bytes()), &sig).expect("ok"))
                });
            }
            SigningAlgorithm::EdDsa => {
                let key = UnparsedPublicKey::new(&signature::ED25519, d("x"));
                g.bench_function("c_floor", |b| {
                    b.iter(|| key.verify(black_box(input.as_bytes()), &sig).expect("ok"))
                });
            }
            _ => {
                let key = RsaPublicKeyComponents {
                    n: d("n"),
                    e: d("e"),
                };
                g.bench_function("c_floor", |b| {
                    b.iter(|| {
                        key.verify(
                            &signature::RSA_PKCS1_2048_8192_SHA256,
                            black_box(input.as_bytes()),
                            &sig,
                        )
                        .expect("ok")
                    })
                });
            }
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}

/// Mean time per iteration (ns) from Criterion's saved estimate.
fn mean_ns(group: &str, id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").into());
    let path = format!("{dir}/criterion/{group}/{id}/new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    println!(
        "\nvalidations/s on one core (mean), ratios against the raw verify floor measured in this run"
    );
    println!(
        "{:<6} {:>14} {:>14} {:>14} {:>14} {:>8} {:>8} {:>8}",
        "alg", "a_full", "b_cache_hit", "b2_shared_hit", "c_floor", "a/c", "b/c", "b2/c"
    );
    for (_, name) in ALGS {
        let (Some(a), Some(b), Some(b2), Some(c)) = (
            mean_ns(name, "a_full"),
            mean_ns(name, "b_cache_hit"),
            mean_ns(name, "b2_shared_hit"),
            mean_ns(name, "c_floor"),
        ) else {
            println!("{name:<6} (no estimates: run without a filter)");
            continue;
        };
        let per_s = |ns: f64| 1e9 / ns;
        println!(
            "{name:<6} {:>14.0} {:>14.0} {:>14.0} {:>14.0} {:>7.0}% {:>7.0}x {:>7.0}x",
            per_s(a),
            per_s(b),
            per_s(b2),
            per_s(c),
            100.0 * c / a,
            c / b,
            c / b2
        );
    }
}
