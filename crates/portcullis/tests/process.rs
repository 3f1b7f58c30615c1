//! The real `portcullis` binary as a child process: crash safety (kill -9
//! under load), graceful drain on SIGTERM, config layering and errors.

#![allow(clippy::unwrap_used)]

use portcullis_core::jose::SigningAlgorithm;
use portcullis_test_support::{
    BinaryIam, Reaped, SecretClient, TEST_ADMIN_TOKEN, basic, client_assertion, client_key,
    http_client, verify_with_jwks,
};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const ISSUER: &str = "https://iam.test.example";

async fn create(http: &reqwest::Client, iam: &BinaryIam, body: Value) -> Value {
    let r = http
        .post(format!("http://{}/admin/clients", iam.admin))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json().await.unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iam.db");
    let mut iam = BinaryIam::spawn(BIN, &db, &["--issuer", ISSUER]);
    let http = http_client();
    let v = create(
        &http,
        &iam,
        json!({"client_id": "svc", "allowed_audiences": ["api"], "default_audiences": ["api"]}),
    )
    .await;
    let c = SecretClient {
        id: "svc".into(),
        secret: v["client_secret"].as_str().unwrap().into(),
    };
    let key = client_key(SigningAlgorithm::Es256);
    create(&http, &iam, json!({"client_id": "jwt", "jwks": {"keys": [key.public_jwk()]}, "allowed_audiences": ["api"], "default_audiences": ["api"]})).await;

    // An assertion used once before the crash.
    let token_url = format!("{}/oauth2/token", iam.base());
    let assertion = client_assertion(
        &key,
        "jwt",
        &format!("{ISSUER}/oauth2/token"),
        "pre-crash",
        now(),
        120,
    );
    let form = [
        ("grant_type", "client_credentials"),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
    ];
    assert_eq!(
        http.post(&token_url)
            .form(&form)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Load: four workers issue tokens; one revokes every fifth token it gets.
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (http, url, c, stop) = (http.clone(), token_url.clone(), c.clone(), stop.clone());
        let revoke_url = format!("{}/oauth2/revoke", iam.base());
        workers.push(tokio::spawn(async move {
            let (mut issued, mut revoked) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let Ok(r) = http
                    .post(&url)
                    .header("authorization", basic(&c.id, &c.secret))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(v) = r.json::<Value>().await else {
                    break;
                };
                let t = v["access_token"].as_str().unwrap().to_owned();
                if w == 0 && issued.len() % 5 == 0 {
                    let ok = http
                        .post(&revoke_url)
                        .header("authorization", basic(&c.id, &c.secret))
                        .form(&[("token", t.as_str())])
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    if ok {
                        revoked.push(t.clone());
                    }
                }
                issued.push(t);
            }
            (issued, revoked)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    iam.kill9();
    stop.store(true, Ordering::Relaxed);
    let (mut issued, mut revoked) = (Vec::new(), Vec::new());
    for w in workers {
        let (i, r) = w.await.unwrap();
        issued.extend(i);
        revoked.extend(r);
    }
    assert!(issued.len() > 50, "load ran: {} tokens", issued.len());
    assert!(!revoked.is_empty());

    let iam = BinaryIam::spawn(BIN, &db, &["--issuer", ISSUER]);
    let jwks: Value = http
        .get(format!("{}/.well-known/jwks.json", iam.base()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for t in &issued {
        verify_with_jwks(t, &jwks, ISSUER, "api").expect("every issued token still validates");
    }
    let introspect = |t: String| {
        let http = http.clone();
        let url = format!("{}/oauth2/introspect", iam.base());
        let auth = basic(&c.id, &c.secret);
        async move {
            let v: Value = http
                .post(url)
                .header("authorization", auth)
                .form(&[("token", t)])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["active"].as_bool().unwrap()
        }
    };
    for t in &revoked {
        assert!(
            !introspect(t.clone()).await,
            "every acknowledged revocation holds"
        );
    }
    let live = issued.iter().find(|t| !revoked.contains(t)).unwrap();
    assert!(introspect(live.clone()).await);
    // The used assertion is still refused after the restart.
    let token_url = format!("{}/oauth2/token", iam.base());
    assert_eq!(
        http.post(&token_url)
            .form(&form)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[test]
fn sigterm_drains_a_request_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("iam.db");
    let mut iam = BinaryIam::spawn(BIN, &db, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(async {
        let v = create(
            &http_client(),
            &iam,
            json!({"client_id": "svc", "allowed_audiences": ["api"], "default_audiences": ["api"]}),
        )
        .await;
        SecretClient {
            id: "svc".into(),
            secret: v["client_secret"].as_str().unwrap().into(),
        }
    });

    // Headers and half the body, then SIGTERM, then the rest.
    let body = b"grant_type=client_credentials";
    let mut s = TcpStream::connect(iam.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "POST /oauth2/token HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        basic(&c.id, &c.secret),
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    iam.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    // New connections are no longer accepted while draining.
    assert!(TcpStream::connect_timeout(&iam.addr, Duration::from_millis(500)).is_err());
    s.write_all(&body[10..]).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "in-flight request completed: {resp}"
    );
    assert!(resp.contains("access_token"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = iam.child.try_wait().unwrap() {
            assert!(status.success(), "clean exit: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "exits after draining");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("PORTCULLIS_MASTER_KEY")
        .env_remove("PORTCULLIS_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_configuration_is_refused_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    let f = file.to_str().unwrap();
    let mk = portcullis_test_support::TEST_MASTER_KEY;

    std::fs::write(&file, "listen = \"not-an-address\"\n").unwrap();
    let (code, _, err) = run(
        &["iam", "serve", "--config", f],
        &[("PORTCULLIS_MASTER_KEY", mk)],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(f) && err.contains("`listen`"), "{err}");

    std::fs::write(&file, "listn = \"127.0.0.1:1\"\n").unwrap();
    let (code, _, err) = run(
        &["iam", "serve", "--config", f],
        &[("PORTCULLIS_MASTER_KEY", mk)],
    );
    assert_eq!(code, 2);
    assert!(err.contains(f) && err.contains("unknown field"), "{err}");

    std::fs::write(&file, "mode = \"production\"\n").unwrap();
    let (code, _, err) = run(&["iam", "serve", "--config", f], &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`master_key`") && err.contains("production"),
        "{err}"
    );

    std::fs::write(&file, "signing_alg = \"HS256\"\n").unwrap();
    let (code, _, err) = run(
        &["iam", "serve", "--config", f],
        &[("PORTCULLIS_MASTER_KEY", mk)],
    );
    assert_eq!(code, 2);
    assert!(err.contains("`signing_alg`"), "{err}");

    std::fs::write(
        &file,
        "[[clients]]\nid = \"x\"\nsecret_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n",
    )
    .unwrap();
    let (code, _, err) = run(
        &["iam", "serve", "--config", f],
        &[("PORTCULLIS_MASTER_KEY", mk)],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("clients[0].secret_env") && err.contains("PORTCULLIS_TEST_UNSET_VAR"),
        "{err}"
    );
}

#[tokio::test]
async fn flags_override_environment_override_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("portcullis.toml");
    std::fs::write(
        &file,
        "access_token_ttl_secs = 0\n[[clients]]\nid = \"svc\"\nsecret = \"layering-secret-0123456789abcdef0123\"\n\
         allowed_audiences = [\"api\"]\ndefault_audiences = [\"api\"]\n",
    )
    .unwrap();
    let c = SecretClient {
        id: "svc".into(),
        secret: "layering-secret-0123456789abcdef0123".into(),
    };
    let http = http_client();
    let expires_in = |iam: BinaryIam| {
        let (http, c) = (http.clone(), c.clone());
        async move {
            let v: Value = portcullis_test_support::client_credentials(&http, &iam.base(), &c)
                .await
                .json()
                .await
                .unwrap();
            v["expires_in"].as_u64().unwrap()
        }
    };
    let f = file.to_str().unwrap();
    // The file alone (ttl 0) is invalid; the environment fixes it; a flag beats both.
    file_alone_is_refused(f);
    let db = dir.path().join("a.db");
    let env_only = BinaryIam::spawn_env(
        BIN,
        &db,
        &["--config", f],
        &[("PORTCULLIS_ACCESS_TOKEN_TTL_SECS", "120")],
    );
    assert_eq!(expires_in(env_only).await, 120);
    let both = BinaryIam::spawn_env(
        BIN,
        &dir.path().join("b.db"),
        &["--config", f, "--access-token-ttl-secs", "60"],
        &[("PORTCULLIS_ACCESS_TOKEN_TTL_SECS", "120")],
    );
    assert_eq!(expires_in(both).await, 60);
}

fn file_alone_is_refused(config: &str) {
    let (code, _, err) = run(
        &["iam", "serve", "--config", config],
        &[(
            "PORTCULLIS_MASTER_KEY",
            portcullis_test_support::TEST_MASTER_KEY,
        )],
    );
    assert_eq!(code, 2, "file value alone is refused: {err}");
    assert!(err.contains("access_token_ttl_secs"));
}

#[tokio::test]
async fn logs_carry_audit_events_and_never_a_secret_or_token() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let mut iam = BinaryIam::spawn_logged(BIN, &dir.path().join("iam.db"), &[], &[], Some(&log));
    let http = http_client();
    let v = create(
        &http,
        &iam,
        json!({"client_id": "svc", "allowed_audiences": ["api"], "default_audiences": ["api"]}),
    )
    .await;
    let c = SecretClient {
        id: "svc".into(),
        secret: v["client_secret"].as_str().unwrap().into(),
    };
    let token_url = format!("{}/oauth2/token", iam.base());
    let t: Value = http
        .post(&token_url)
        .header("authorization", basic(&c.id, &c.secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = t["access_token"].as_str().unwrap().to_owned();
    // Failures that carry secrets: wrong secret, secret in the body, a bad assertion.
    let wrong = "pcs_this-wrong-secret-must-not-be-logged";
    http.post(&token_url)
        .header("authorization", basic("svc", wrong))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    http.post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "svc"),
            ("client_secret", wrong),
        ])
        .send()
        .await
        .unwrap();
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        http.post(format!("{}{path}", iam.base()))
            .header("authorization", basic(&c.id, &c.secret))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap();
    }
    http.post(format!("http://{}/admin/clients", iam.admin))
        .bearer_auth("wrong-admin-token-must-not-be-logged")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    iam.sigterm();
    let _ = iam.child.wait();

    let text = std::fs::read_to_string(&log).unwrap();
    for secret in [
        c.secret.as_str(),
        wrong,
        token.as_str(),
        TEST_ADMIN_TOKEN,
        "wrong-admin-token-must-not-be-logged",
    ] {
        assert!(!text.contains(secret), "a secret or token reached the log");
    }
    // The signature part alone must not appear either.
    assert!(!text.contains(token.rsplit('.').next().unwrap()));
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let audit = |name: &str| events.iter().filter(|e| e["event"] == name).count();
    assert_eq!(audit("token_issued"), 1, "{text}");
    assert_eq!(audit("client_auth_failed"), 2);
    assert_eq!(audit("token_refused"), 2);
    assert_eq!(audit("token_revoked"), 1);
    assert_eq!(audit("client_changed"), 1);
    assert_eq!(audit("admin_auth_failed"), 1);
    let issued = events
        .iter()
        .find(|e| e["event"] == "token_issued")
        .unwrap();
    assert_eq!(issued["client_id"], "svc");
    assert_eq!(issued["target"], "portcullis::audit");
    assert!(issued["jti"].as_str().is_some_and(|j| !j.is_empty()));
}

#[tokio::test]
async fn the_gateway_binary_reloads_on_file_change_and_sighup_and_refuses_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    // The upstream is the IAM server's /healthz: any HTTP server will do.
    let iam = BinaryIam::spawn(BIN, &dir.path().join("iam.db"), &[]);
    let port = portcullis_test_support::free_port();
    let config = |prefix: &str| {
        let route = format!("path_prefix = \"{prefix}\"\nstrip_prefix = true");
        gateway_toml(port, "", "iam", &iam.addr, &route)
    };
    std::fs::write(&file, config("/one")).unwrap();
    let mut child = Reaped(
        Command::new(BIN)
            .args([
                "--log",
                "warn",
                "gateway",
                "serve",
                "--config",
                file.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = http_client();
    let status = |p: &'static str| status_at(&http, port, p);
    let wait_for = |p: &'static str, want: u16| answers(&http, port, p, want);
    assert!(wait_for("/one/healthz", 200).await, "gateway up");
    // A file change is picked up.
    std::fs::write(&file, config("/two")).unwrap();
    assert!(wait_for("/two/healthz", 200).await, "reloaded on change");
    assert_eq!(status("/one/healthz").await, 404);
    // A broken file is refused; the running config keeps serving.
    std::fs::write(&file, "listen = [broken").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(status("/two/healthz").await, 200);
    // SIGHUP reloads too.
    std::fs::write(&file, config("/three")).unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status();
    assert!(wait_for("/three/healthz", 200).await, "reloaded on SIGHUP");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success(), "clean exit on SIGTERM");
}

/// The status of `GET path` at the gateway on `port`; 0 without an answer.
async fn status_at(http: &reqwest::Client, port: u16, path: &str) -> u16 {
    http.get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A `gateway.toml`: the proxy on `port` (admin on any port), `extra`
/// tables, the upstream `upstream` at `target`, and one anonymous route
/// `r` to it with `route`'s keys (its `path_prefix`, …).
fn gateway_toml(
    port: u16,
    extra: &str,
    upstream: &str,
    target: impl std::fmt::Display,
    route: &str,
) -> String {
    format!(
        "listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\n{extra}\n\
         [[upstreams]]\nname = \"{upstream}\"\ntargets = [\"{target}\"]\n\
         [[routes]]\nname = \"r\"\nupstream = \"{upstream}\"\nauth = [\"anonymous\"]\n{route}\n"
    )
}

/// Serves `app` on a loopback port of its own; its address.
async fn serve_upstream(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Whether `GET path` at the gateway on `port` answers `want` within 10 s.
async fn answers(http: &reqwest::Client, port: u16, path: &str, want: u16) -> bool {
    for _ in 0..100 {
        if status_at(http, port, path).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn the_gateway_binary_writes_one_json_access_line_per_request_and_never_a_credential() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let log = dir.path().join("gateway.log");
    // The upstream is the IAM server's /healthz: any HTTP server will do.
    let iam = BinaryIam::spawn(BIN, &dir.path().join("iam.db"), &[]);
    let port = portcullis_test_support::free_port();
    let route = "path_prefix = \"/one\"\nstrip_prefix = true";
    std::fs::write(&file, gateway_toml(port, "", "iam", &iam.addr, route)).unwrap();
    let mut child = Reaped(
        Command::new(BIN)
            .args([
                "--log",
                "warn,portcullis::access=info",
                "gateway",
                "serve",
                "--config",
            ])
            .arg(&file)
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = http_client();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        answers(&http, port, "/one/healthz", 200).await,
        "gateway did not come up"
    );
    // Credentials in every place a client can put them.
    let secrets = [
        "query-secret-must-not-be-logged",
        "bearer-secret-must-not-be-logged",
        "key-secret-must-not-be-logged",
    ];
    let r = http
        .get(format!("{base}/one/./healthz?api_key={}", secrets[0]))
        .bearer_auth(secrets[1])
        .header("x-api-key", secrets[2])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success(), "clean exit on SIGTERM");

    let text = std::fs::read_to_string(&log).unwrap();
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "a credential reached the log: {text}"
        );
    }
    let records: Vec<Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON record per line ({e}): {l}"))
        })
        .filter(|v: &Value| v["target"] == "portcullis::access")
        .collect();
    let last = |path: &str| {
        records
            .iter()
            .rev()
            .find(|v| v["path"] == path)
            .unwrap_or_else(|| panic!("no access record for {path}: {text}"))
            .clone()
    };
    let ok = last("/one/healthz");
    for (key, want) in [
        ("level", json!("INFO")),
        ("method", json!("GET")),
        ("route", json!("r")),
        ("status", json!(200)),
        ("auth", json!("anonymous")),
        ("subject", json!("anonymous")),
        ("upstream", json!("iam")),
        ("client", json!("127.0.0.1")),
    ] {
        assert_eq!(ok[key], want, "{key} in {ok}");
    }
    assert!(ok["ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{ok}");
    let ts = ok["timestamp"].as_str().unwrap();
    assert!(
        ts.len() == 27 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{ts}"
    );
    let refused = last("/nope");
    assert_eq!(refused["status"], 404);
    assert_eq!(refused["route"], "unmatched");
}

#[tokio::test]
async fn a_buffered_access_log_writes_whole_lines_on_its_flush_and_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let log = dir.path().join("gateway.log");
    let iam = BinaryIam::spawn(BIN, &dir.path().join("iam.db"), &[]);
    let port = portcullis_test_support::free_port();
    // 1 MiB is never reached here: lines are written by the flush or at exit.
    let config = |prefix: &str, flush_ms: u64| {
        let log = format!("[access_log]\nbuffer_bytes = 1048576\nflush_ms = {flush_ms}");
        let route = format!("path_prefix = \"{prefix}\"\nstrip_prefix = true");
        gateway_toml(port, &log, "iam", &iam.addr, &route)
    };
    std::fs::write(&file, config("/one", 60_000)).unwrap();
    let mut child = Reaped(
        Command::new(BIN)
            .args(["--log", "warn,portcullis::access=info", "gateway", "serve"])
            .arg("--config")
            .arg(&file)
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = http_client();
    let status = |p: &'static str| status_at(&http, port, p);
    let wait_for = |p: &'static str| answers(&http, port, p, 200);
    // Answered (200) access records for `path` in the file, each line
    // checked whole; a read may end inside a line being written.
    let records = |path: &str| {
        let text = std::fs::read_to_string(&log).unwrap();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| {
                serde_json::from_str::<Value>(l)
                    .unwrap_or_else(|e| panic!("not one JSON record per line ({e}): {l}"))
            })
            .filter(|v| {
                v["target"] == "portcullis::access" && v["path"] == path && v["status"] == 200
            })
            .count()
    };
    assert!(wait_for("/one/healthz").await, "gateway up");
    for _ in 0..3 {
        assert_eq!(status("/one/healthz").await, 200);
    }
    // Gathered, not written: the flush is a minute away.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(records("/one/healthz"), 0, "written before its flush");

    // A reload to a 200 ms flush: every worker's next tick writes the
    // lines it gathered, and later ones follow within the flush.
    std::fs::write(&file, config("/two", 200)).unwrap();
    assert!(wait_for("/two/healthz").await, "reloaded");
    let mut written = false;
    for _ in 0..100 {
        if records("/two/healthz") >= 1 && records("/one/healthz") >= 4 {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(written, "lines not written after the flush became 200 ms");

    // Back to a minute: what the drain leaves is written at exit.
    std::fs::write(&file, config("/three", 60_000)).unwrap();
    assert!(wait_for("/three/healthz").await, "reloaded");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for _ in 0..2 {
        assert_eq!(status("/three/healthz").await, 200);
    }
    assert_eq!(records("/three/healthz"), 0, "written before its flush");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success(), "clean exit on SIGTERM");
    assert!(
        records("/three/healthz") >= 3,
        "gathered lines lost at exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gathered_access_lines_survive_a_drain_cut_short_by_the_grace() {
    // An upstream that answers /fast at once and never answers /hang.
    let app = axum::Router::new()
        .route("/fast", axum::routing::get(|| async { "ok" }))
        .route(
            "/hang",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
                "late"
            }),
        );
    let up_addr = serve_upstream(app).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let log = dir.path().join("gateway.log");
    let port = portcullis_test_support::free_port();
    // Lines wait a minute, and 1 MiB is never reached: only the stop writes them.
    let log_keys = "[access_log]\nbuffer_bytes = 1048576\nflush_ms = 60000";
    let config = gateway_toml(port, log_keys, "up", up_addr, "path_prefix = \"/\"");
    std::fs::write(&file, config).unwrap();
    let mut child = Reaped(
        Command::new(BIN)
            .args(["--log", "warn,portcullis::access=info", "gateway", "serve"])
            .args(["--shutdown-grace-secs", "1", "--config"])
            .arg(&file)
            .stdout(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let http = http_client();
    assert!(answers(&http, port, "/fast", 200).await, "gateway up");
    for _ in 0..3 {
        assert_eq!(status_at(&http, port, "/fast").await, 200);
    }
    // A request the drain cannot finish within the grace.
    let hung = tokio::spawn(async move {
        let _ = http_client()
            .get(format!("http://127.0.0.1:{port}/hang"))
            .send()
            .await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fast_lines = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"path\":\"/fast\""))
            .count()
    };
    assert_eq!(fast_lines(), 0, "written before the flush or the stop");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    // The process exits when the grace runs out, its drain unfinished.
    assert!(child.wait().unwrap().success(), "exit 0 after the grace");
    hung.abort();
    assert!(
        fast_lines() >= 4,
        "gathered lines lost when the drain was cut short"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_binary_drains_in_flight_requests_on_sigterm_under_load() {
    use std::sync::atomic::AtomicUsize;
    // A slow upstream that counts the requests reaching it.
    let arrived = Arc::new(AtomicUsize::new(0));
    let counter = arrived.clone();
    let app = axum::Router::new().route(
        "/slow",
        axum::routing::get(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(700)).await;
                "done"
            }
        }),
    );
    let up_addr = serve_upstream(app).await;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let port = portcullis_test_support::free_port();
    let config = gateway_toml(port, "", "up", up_addr, "path_prefix = \"/slow\"");
    std::fs::write(&file, config).unwrap();
    let mut child = Reaped(
        Command::new(BIN)
            .args(["--log", "warn", "gateway", "serve", "--config"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://127.0.0.1:{port}/slow");
    let http = http_client();
    assert!(
        answers(&http, port, "/slow", 200).await,
        "gateway did not come up"
    );

    // 40 requests in flight, each on its own connection.
    const IN_FLIGHT: usize = 40;
    let before = arrived.load(Ordering::SeqCst);
    let mut flights = Vec::new();
    for _ in 0..IN_FLIGHT {
        let url = url.clone();
        flights.push(tokio::spawn(async move {
            let r = http_client().get(url).send().await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.text().await?))
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while arrived.load(Ordering::SeqCst) < before + IN_FLIGHT {
        assert!(
            Instant::now() < deadline,
            "requests did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Load keeps coming while the gateway stops: new requests may be
    // refused at connect, but none may get a broken or 5xx answer.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, url) = (stop.clone(), url.clone());
        tokio::spawn(async move {
            let mut bad = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match http_client().get(&url).send().await {
                    Ok(r) if r.status() != 200 => bad.push(r.status().as_u16()),
                    _ => {}
                }
            }
            bad
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for f in flights {
        let (status, body) = f.await.unwrap().expect("an in-flight request was dropped");
        assert_eq!((status, body.as_str()), (200, "done"));
    }
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    stop.store(true, Ordering::SeqCst);
    assert!(exit.success(), "clean exit after draining: {exit:?}");
    assert_eq!(
        load.await.unwrap(),
        Vec::<u16>::new(),
        "answers other than 200 during shutdown"
    );
}
