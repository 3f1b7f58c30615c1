//! Policy decisions/s in the service library (`PolicyGuard::decide`) on one
//! core, for a realistic set of 64 Cedar policies (per-site read and arm
//! permits, role- and actor-based forbids), against two baselines measured
//! in the same run:
//! - the 5-policy sample set (how cost grows with the set),
//! - one ES256 signature verification (the floor of validating the token
//!   that came with the request): a decision should cost a fraction of it.
//!
//! Run: `cargo bench -p portcullis-service --bench policy`

use aws_lc_rs::signature::{self, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::{Criterion, criterion_group};
use portcullis_core::jose::SigningAlgorithm;
use portcullis_service::policy::{PolicyGuard, PolicyStore, Resource};
use portcullis_service::{Principal, Validator, ValidatorConfig};
use portcullis_test_support::FakeIssuer;
use serde_json::{Map, Value, json};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

const SITES: usize = 50;

/// 64 policies: a read permit per site (50), arm permits for 10 sites, and
/// four forbids.
fn realistic(dir: &Path) {
    let schema = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../portcullis-policy/tests/fixtures/security/schema.cedarschema"),
    )
    .unwrap_or_default();
    std::fs::write(dir.join("schema.cedarschema"), schema).ok();
    let mut p = String::new();
    for i in 0..SITES {
        p.push_str(&format!(
            "@id(\"site-{i}-read\")\npermit (principal, action == Action::\"ReadSystem\", resource)\n\
             when {{ resource.location == \"site-{i}\" && (principal.roles.contains(\"site-{i}-viewer\") || context.locations.contains(\"site-{i}\")) }};\n"
        ));
    }
    for i in 0..10 {
        p.push_str(&format!(
            "@id(\"site-{i}-arm\")\npermit (principal, action == Action::\"ArmSystem\", resource)\n\
             when {{ resource.location == \"site-{i}\" && principal.roles.contains(\"operator\") && context.locations.contains(\"site-{i}\") }};\n"
        ));
    }
    p.push_str(
        "@id(\"no-arming-via-reporting\")\nforbid (principal, action == Action::\"ArmSystem\", resource) when { principal.actors.contains(\"reporting\") };\n\
         @id(\"frozen\")\nforbid (principal, action, resource is SecuritySystem) when { resource.location == \"frozen\" };\n\
         @id(\"suspended\")\nforbid (principal, action, resource) when { principal.roles.contains(\"suspended\") };\n\
         @id(\"contractors-read-only\")\nforbid (principal, action == Action::\"ArmSystem\", resource) when { principal.roles.contains(\"contractor\") };\n",
    );
    std::fs::write(dir.join("sites.cedar"), p).ok();
}

fn principal(validator: &Validator, token: &str) -> Principal {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    (*rt.block_on(validator.validate(token)).expect("valid token")).clone()
}

fn big_len(dir: &Path) -> usize {
    portcullis_policy::PolicyEngine::load(dir).map_or(0, |e| e.len())
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    realistic(dir.path());
    let big = PolicyGuard::new(Arc::new(
        PolicyStore::open(dir.path()).expect("64 policies"),
    ));
    let small = PolicyGuard::new(Arc::new(
        PolicyStore::open(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../portcullis-policy/tests/fixtures/security"),
        )
        .expect("sample set"),
    ));
    assert_eq!(big_len(dir.path()), 64);

    // A real validated principal: an exchanged token, with an actor.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let iss = rt.block_on(FakeIssuer::start_with(SigningAlgorithm::Es256));
    let mut claims = iss.claims("systems-api");
    claims["sub"] = "u_bob".into();
    claims["client_id"] = "orders".into();
    claims["act"] = json!({"sub": "orders"});
    let token = iss.sign(&claims);
    let validator = Validator::new(
        ValidatorConfig::new(&iss.issuer, "systems-api").dangerous_ignore_revocations(),
    );
    rt.block_on(validator.jwks().refresh()).expect("jwks");
    let mut who = principal(&validator, &token);
    who.roles = vec!["operator".into()];
    let resource = Resource::new("SecuritySystem", "s-7").attr("location", "site-7");
    let mut context = Map::new();
    context.insert("locations".into(), Value::from(vec!["site-7", "site-3"]));

    let allowed = big.decide(&who, "ArmSystem", &resource, &context);
    assert!(allowed.allowed, "{allowed:?}");

    let mut g = c.benchmark_group("policy");
    g.bench_function("a_64_policies", |b| {
        b.iter(|| black_box(big.decide(black_box(&who), "ArmSystem", &resource, &context)))
    });
    g.bench_function("b_5_policies", |b| {
        b.iter(|| black_box(small.decide(black_box(&who), "ArmSystem", &resource, &context)))
    });
    let (input, sig) = token.rsplit_once('.').expect("jws");
    let sig = B64.decode(sig).expect("sig");
    let jwk = iss.key.public_jwk();
    let d = |k: &str| B64.decode(jwk[k].as_str().expect("member")).expect("b64");
    let point = [vec![4u8], d("x"), d("y")].concat();
    let key = UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
    g.bench_function("c_es256_verify", |b| {
        b.iter(|| key.verify(black_box(input.as_bytes()), &sig).expect("ok"))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}

fn mean_ns(id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").into());
    let path = format!("{dir}/criterion/policy/{id}/new/estimates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let (Some(a), Some(b), Some(c)) = (
        mean_ns("a_64_policies"),
        mean_ns("b_5_policies"),
        mean_ns("c_es256_verify"),
    ) else {
        println!("(no estimates: run without a filter)");
        return;
    };
    let per_s = |ns: f64| 1e9 / ns;
    println!("\npolicy decisions/s on one core (mean), baselines measured in this run");
    println!("{:<32} {:>12} {:>10}", "", "per second", "µs each");
    for (name, ns) in [
        ("a: decision, 64 policies", a),
        ("b: decision, 5 policies", b),
        ("c: one ES256 verify (floor)", c),
    ] {
        println!("{name:<32} {:>12.0} {:>10.2}", per_s(ns), ns / 1000.0);
    }
    println!(
        "a/b cost: {:.2}x   a as a share of c: {:.0}%",
        a / b,
        100.0 * a / c
    );
}
