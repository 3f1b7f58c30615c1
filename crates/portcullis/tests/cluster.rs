//! Several processes on one PostgreSQL and one Redis: two IAM replicas and
//! two gateways, the real `portcullis` binary each. Cross-replica tokens,
//! revocation seen by both gateways through Redis, a shared rate limit
//! within its documented bound, and PostgreSQL cut mid-run (through a proxy,
//! so the machine's server keeps serving other tests) and restored.
//! Needs PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379); fails
//! naming them if they are not running.

#![allow(clippy::unwrap_used)]

use portcullis_test_support::{
    FaultProxy, Reaped, TEST_ADMIN_TOKEN, TEST_MASTER_KEY, free_port, postgres_database, redis_url,
    unique_prefix,
};
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn spawn(args: &[&str], config: &Path) -> Reaped {
    Reaped(
        Command::new(BIN)
            .args(["--log", "warn"])
            .args(args)
            .arg("--config")
            .arg(config)
            .env("PORTCULLIS_MASTER_KEY", TEST_MASTER_KEY)
            .env("PORTCULLIS_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn portcullis"),
    )
}

async fn wait_ok(http: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered 200");
}

/// A minimal upstream: 200 "ok" to anything.
async fn echo() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(r).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    port
}

async fn token(http: &reqwest::Client, base: &str, id: &str, secret: &str) -> reqwest::Response {
    http.post(format!("{base}/oauth2/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

/// RFC 7662 introspection of `token` at `base`, as client `id`.
async fn introspect(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    secret: &str,
    token: &str,
) -> Value {
    http.post(format!("{base}/oauth2/introspect"))
        .basic_auth(id, Some(secret))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn create_client(http: &reqwest::Client, admin: &str, id: &str) -> String {
    let v: Value = http
        .post(format!("{admin}/admin/clients"))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .json(&json!({
            "client_id": id,
            "allowed_scopes": ["read"],
            "default_scopes": ["read"],
            "allowed_audiences": ["api-1"],
            "default_audiences": ["api-1"],
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["client_secret"].as_str().expect("secret").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_iam_replicas_and_two_gateways_on_one_postgres_and_one_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis_url();
    let prefix = unique_prefix("cluster");
    let pg = FaultProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    // The gateways reach Redis through a proxy of their own.
    let redis_addr = redis
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap();
    let rp = FaultProxy::start(redis_addr.parse().unwrap()).await;
    let gw_redis = format!("redis://{}/0", rp.addr());
    let db = postgres_database(&format!("pc_t{}_cluster", std::process::id()))
        .replace("127.0.0.1:5432", &pg.addr().to_string())
        .replace(
            "acquire_timeout=20",
            "acquire_timeout=2&statement_timeout=2s",
        );
    let http = reqwest::Client::new();

    // Two IAM replicas; the issuer is replica A's URL (both sign as it).
    let iam_ports: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
    let issuer = format!("http://127.0.0.1:{}", iam_ports[0].0);
    let mut iams = Vec::new();
    for (n, (p, a)) in iam_ports.iter().enumerate() {
        let cfg = dir.path().join(format!("iam{n}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "mode = \"production\"\nlisten = \"127.0.0.1:{p}\"\nadmin_listen = \"127.0.0.1:{a}\"\n\
                 issuer = \"{issuer}\"\ndatabase_url = \"{db}\"\n\
                 [redis]\nurl = \"{redis}\"\nkey_prefix = \"{prefix}\"\n"
            ),
        )
        .unwrap();
        iams.push(spawn(&["iam", "serve"], &cfg));
    }
    let base = |n: usize| format!("http://127.0.0.1:{}", iam_ports[n].0);
    let admin = |n: usize| format!("http://127.0.0.1:{}", iam_ports[n].1);
    for n in 0..2 {
        wait_ok(&http, &format!("{}/readyz", base(n))).await;
    }

    // Two gateways sharing the internal-token key, a cluster rate limit and Redis.
    let upstream = echo().await;
    let gw_ports: Vec<(u16, u16)> = (0..2).map(|_| (free_port(), free_port())).collect();
    let (per_second, burst, lease) = (1u64, 10u64, 2u64);
    let mut gws = Vec::new();
    for (n, (p, a)) in gw_ports.iter().enumerate() {
        let cfg = dir.path().join(format!("gw{n}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:{p}\"\nadmin_listen = \"127.0.0.1:{a}\"\n\
                 signing_key_file = \"{}\"\n\
                 [redis]\nurl = \"{gw_redis}\"\nkey_prefix = \"{prefix}\"\n\
                 [[upstreams]]\nname = \"echo\"\ntargets = [\"127.0.0.1:{upstream}\"]\n\
                 [[authenticators]]\nname = \"iam\"\ntype = \"jwt\"\nissuer = \"{issuer}\"\n\
                 audience = \"api-1\"\nalgorithms = [\"ES256\"]\n\
                 [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"echo\"\nauth = [\"iam\"]\n\
                 [[routes]]\nname = \"limited\"\npath_prefix = \"/limited\"\nupstream = \"echo\"\n\
                 auth = [\"iam\"]\nrate_limit = {{ per_second = {per_second}, burst = {burst}, \
                 key = \"client_id\", scope = \"cluster\", lease = {lease} }}\n",
                dir.path().join("gw-key.pem").display()
            ),
        )
        .unwrap();
        gws.push(spawn(&["gateway", "serve"], &cfg));
        // The first creates the shared key file; the second reads it.
        wait_ok(&http, &format!("http://127.0.0.1:{a}/readyz")).await;
    }
    let gw = |n: usize| format!("http://127.0.0.1:{}", gw_ports[n].0);

    // A token from replica B, introspected at A and accepted by both gateways.
    let secret = create_client(&http, &admin(0), "svc").await;
    let t: Value = token(&http, &base(1), "svc", &secret)
        .await
        .json()
        .await
        .unwrap();
    let at = t["access_token"].as_str().unwrap().to_owned();
    let intro: Value = introspect(&http, &base(0), "svc", &secret, &at).await;
    assert_eq!(intro["active"], true, "{intro}");
    for n in 0..2 {
        let r = http
            .get(format!("{}/api/x", gw(n)))
            .bearer_auth(&at)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "gateway {n}");
    }

    // Revoked at replica B: refused at both gateways well before their
    // feed poll (5 s), i.e. through the Redis event.
    let revoked_at = Instant::now();
    let r = http
        .post(format!("{}/oauth2/revoke", base(1)))
        .basic_auth("svc", Some(&secret))
        .form(&[("token", at.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for n in 0..2 {
        loop {
            let r = http
                .get(format!("{}/api/x", gw(n)))
                .bearer_auth(&at)
                .send()
                .await
                .unwrap();
            if r.status() == 401 {
                break;
            }
            assert!(
                revoked_at.elapsed() < Duration::from_secs(10),
                "gateway {n} never refused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "revocation refused at both gateways after {:?}",
        revoked_at.elapsed()
    );
    let intro: Value = introspect(&http, &base(0), "svc", &secret, &at).await;
    assert_eq!(intro["active"], false, "revoked at B, inactive at A");

    // One limit shared by both gateways.
    let secret2 = create_client(&http, &admin(1), "svc2").await;
    let t: Value = token(&http, &base(0), "svc2", &secret2)
        .await
        .json()
        .await
        .unwrap();
    let at2 = t["access_token"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let mut admitted = 0u64;
    for i in 0..60 {
        let r = http
            .get(format!("{}/limited/x", gw(i % 2)))
            .bearer_auth(&at2)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            s => panic!("unexpected {s}"),
        }
    }
    let secs = started.elapsed().as_secs() + 1;
    let bound = burst + per_second * secs + 2 * lease;
    assert!(admitted <= bound, "admitted {admitted} > bound {bound}");
    assert!(admitted >= burst - 2 * lease, "admitted only {admitted}");

    // PostgreSQL cut: the token endpoint answers 503 temporarily_unavailable
    // for a client not cached yet, /readyz is not ready; restored: both recover.
    let secret3 = create_client(&http, &admin(0), "svc3").await;
    pg.cut();
    let r = token(&http, &base(0), "svc3", &secret3).await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "temporarily_unavailable", "{v}");
    let r = http
        .get(format!("{}/readyz", base(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    pg.restore();
    for n in 0..2 {
        wait_ok(&http, &format!("{}/readyz", base(n))).await;
    }
    let r = token(&http, &base(1), "svc3", &secret3).await;
    assert_eq!(r.status(), 200, "recovered without a restart");

    // Redis cut at the gateways: the limit fails open to each gateway's
    // own limit (counted), and goes back to Redis once it answers.
    let metrics = |n: usize| {
        let url = format!("http://127.0.0.1:{}/metrics", gw_ports[n].1);
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    let t: Value = token(&http, &base(0), "svc3", &secret3)
        .await
        .json()
        .await
        .unwrap();
    let at3 = t["access_token"].as_str().unwrap().to_owned();
    rp.cut();
    let r = http
        .get(format!("{}/limited/x", gw(0)))
        .bearer_auth(&at3)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "fail open: admitted under the local limit");
    let m = metrics(0).await;
    assert!(
        m.contains("portcullis_redis_failing{feature=\"rate_limit\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_redis_errors_total{feature=\"rate_limit\"}"),
        "{m}"
    );
    rp.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = http
            .get(format!("{}/limited/y", gw(0)))
            .bearer_auth(&at3)
            .send()
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // past the lease and any 429
        if metrics(0)
            .await
            .contains("portcullis_redis_failing{feature=\"rate_limit\"} 0")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the limiter never went back to Redis"
        );
    }
    drop((iams, gws));
}
