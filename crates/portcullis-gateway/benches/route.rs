//! Path normalization and route matching (`route::normalize`, then
//! `route::Table::find`) per request, over 24 routes, for paths already in
//! normal form, with dot segments, with escapes, and with a Unicode case
//! mapping onto ASCII, and over 1,000 routes; against a baseline measured
//! in the same run: httparse parsing a typical request head, which every
//! request pays before its path is looked at.
//!
//! Run: `cargo bench -p portcullis-gateway --bench route`

use criterion::{Criterion, criterion_group};
use portcullis_gateway::config::Route;
use portcullis_gateway::pipeline::route;
use serde_json::Value;
use std::hint::black_box;

/// `n` - 4 API resources, an admin area, a public area, a route spelled
/// with a non-ASCII character, and the root.
fn routes(n: usize) -> route::Table {
    let mut prefixes: Vec<String> = (0..n - 4).map(|i| format!("/api/v1/resource{i}")).collect();
    prefixes.extend(["/admin", "/public", "/caf\u{e9}", "/"].map(str::to_owned));
    let routes: Vec<Route> = prefixes
        .iter()
        .map(|p| Route {
            name: p.clone(),
            prefix: route::folded(
                route::normalize(p)
                    .expect("a normal prefix")
                    .trim_end_matches('/'),
            ),
            upstream: "u".into(),
            ..Route::default()
        })
        .collect();
    route::Table::new(routes)
}

const CASES: [(&str, &str, &str); 4] = [
    ("a_normal", "/api/v1/resource7/42", "/api/v1/resource7"),
    (
        "b_dot_segments",
        "/api/v1//resource7/./42/../43",
        "/api/v1/resource7",
    ),
    ("c_escapes", "/CAF%C3%89/menu%20du%20jour", "/caf\u{e9}"),
    ("d_case_mapping", "/ADM%C4%B1N/users/7", "/admin"),
];

const HEAD: &[u8] = b"GET /api/v1/resource7/42 HTTP/1.1\r\n\
Host: api.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)\r\n\
Accept: application/json\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
X-Api-Key: pk_live_0123456789abcdef0123456789abcdef\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n";

fn bench(c: &mut Criterion) {
    let table = routes(24);
    let get = http::Method::GET;
    for (id, path, want) in CASES {
        // Each case matches the route it is meant to, or the figures would
        // measure a miss.
        let n = route::normalize(path).expect("a path the gateway takes");
        match table.find(Some("api.example.com"), &n, &get) {
            route::Match::Found(r) => assert_eq!(r.name, want, "{path}"),
            _ => panic!("{path}: no route"),
        }
        c.bench_function(id, |b| {
            b.iter(|| {
                let n = route::normalize(black_box(path)).expect("checked above");
                matches!(
                    table.find(Some("api.example.com"), &n, &get),
                    route::Match::Found(_)
                )
            })
        });
    }
    // The same path among 1,000 routes: the table walks segments, so the
    // figure should be a_normal's.
    let many = routes(1000);
    c.bench_function("e_normal_1000_routes", |b| {
        b.iter(|| {
            let n = route::normalize(black_box(CASES[0].1)).expect("checked above");
            matches!(
                many.find(Some("api.example.com"), &n, &get),
                route::Match::Found(_)
            )
        })
    });
    c.bench_function("z_httparse_head", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            req.parse(black_box(HEAD)).is_ok_and(|s| s.is_complete())
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_secs(1));
    targets = bench
}

fn mean_ns(id: &str) -> Option<f64> {
    let dir = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").into());
    let path = format!("{dir}/criterion/{id}/new/estimates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let Some(base) = mean_ns("z_httparse_head") else {
        println!("(no estimates: run without a filter)");
        return;
    };
    println!("\nnormalize + find (mean), baseline measured in this run");
    println!("{:<44} {:>10} {:>14}", "", "ns each", "x httparse");
    let rows = CASES
        .iter()
        .map(|(id, path, _)| (*id, format!("{id}: {path}")))
        .chain([(
            "e_normal_1000_routes",
            "e: a_normal among 1,000 routes".into(),
        )]);
    for (id, label) in rows {
        let Some(ns) = mean_ns(id) else { continue };
        println!("{label:<44} {ns:>10.0} {:>14.2}", ns / base);
    }
    println!(
        "{:<44} {base:>10.0} {:>14.2}",
        "z: httparse, the request head (baseline)", 1.0
    );
}
