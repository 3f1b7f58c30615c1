//! Test helpers shared by Portcullis integration tests: start the IAM server
//! in-process on loopback (real sockets, real SQLite in a temp dir or a
//! fresh PostgreSQL database), drive a clock, run the real `portcullis`
//! binary as a child process, and make the credentials tests need.

pub mod browser;
mod database;
mod fake_issuer;
mod faults;
pub use database::{
    DEFAULT_POSTGRES_URL, TEST_DATABASE_ENV, TEST_POSTGRES_URL_ENV, on_postgres, postgres_database,
    postgres_server_url, test_database_url,
};
pub use fake_issuer::{FakeIssuer, FakeState};
pub use faults::{DEFAULT_REDIS_URL, FaultProxy, TEST_REDIS_URL_ENV, redis_url, unique_prefix};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use portcullis_core::jose::{SigningAlgorithm, SigningKey};
use portcullis_core::{Clock, UnixTime};
use portcullis_iam::config::RawConfig;
use portcullis_iam::server::RunningIam;
use serde_json::{Value, json};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A fixed master key for tests (32 bytes of base64).
pub const TEST_MASTER_KEY: &str = "dGVzdC1tYXN0ZXIta2V5LWZvci1wb3J0Y3VsbGlzISE=";
/// The admin token test servers use.
pub const TEST_ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A clock tests move by hand. Starts at the real time.
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at the current wall time.
    pub fn now_real() -> Arc<Self> {
        Arc::new(Self(AtomicU64::new(portcullis_core::SystemClock.now())))
    }

    /// Moves the clock forward.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        self.0.load(Ordering::SeqCst)
    }
}

/// An in-process IAM server with its own temporary database.
pub struct TestIam {
    /// The running server (taken by [`TestIam::stop`]).
    pub server: Option<RunningIam>,
    /// Public base URL (`http://` or, with `[tls]`, `https://` + bound address).
    pub base: String,
    /// Issuer identifier (equals `base` unless configured).
    pub issuer: String,
    /// Admin base URL.
    pub admin: String,
    /// Temp dir holding the database.
    pub dir: TempDir,
    /// HTTP client (no redirects).
    pub http: reqwest::Client,
}

/// A registered secret client.
#[derive(Debug, Clone)]
pub struct SecretClient {
    /// Client id.
    pub id: String,
    /// Client secret.
    pub secret: String,
}

/// argon2id memory (KiB) and iterations test servers hash passwords with:
/// far below production strength, so that tests stay fast (unoptimized
/// argon2 at the default 19 MiB × 2 takes most of a second).
pub const TEST_PASSWORD_COST: (u32, u32) = (1024, 1);

/// The base config tests start from. Its database is a SQLite file in
/// `dir`, or a PostgreSQL database of its own when
/// [`TEST_DATABASE_ENV`] is `postgres` (see [`test_database_url`]).
pub fn test_config(dir: &Path) -> RawConfig {
    RawConfig {
        mode: Some("production".into()),
        listen: Some("127.0.0.1:0".into()),
        admin_listen: Some("127.0.0.1:0".into()),
        database_url: Some(test_database_url(dir)),
        master_key: Some(TEST_MASTER_KEY.into()),
        admin_token: Some(TEST_ADMIN_TOKEN.into()),
        passwords: portcullis_iam::config::RawPasswords {
            memory_kib: Some(TEST_PASSWORD_COST.0),
            iterations: Some(TEST_PASSWORD_COST.1),
            parallelism: None,
        },
        ..Default::default()
    }
}

/// An HTTP client for tests.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

impl TestIam {
    /// Starts a server with the default test config.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `tweak` adjusts the config.
    pub async fn start_with(tweak: impl FnOnce(&mut RawConfig)) -> Self {
        Self::start_full(tweak, Arc::new(portcullis_core::SystemClock)).await
    }

    /// Starts a server with a given clock.
    pub async fn start_full(tweak: impl FnOnce(&mut RawConfig), clock: Arc<dyn Clock>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut raw = test_config(dir.path());
        tweak(&mut raw);
        Self::start_in(dir, raw, clock).await
    }

    /// Starts a server on an existing directory and config.
    pub async fn start_in(dir: TempDir, raw: RawConfig, clock: Arc<dyn Clock>) -> Self {
        let config = raw
            .validate(&|v| std::env::var(v).ok())
            .expect("valid test config");
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        let (public, admin) = (
            scheme(config.tls.is_some()),
            scheme(config.admin_tls.is_some()),
        );
        let server = portcullis_iam::server::start_with_clock(config, clock)
            .await
            .expect("server starts");
        Self {
            base: format!("{public}://{}", server.public_addr),
            issuer: server.issuer.to_string(),
            admin: format!("{admin}://{}", server.admin_addr),
            server: Some(server),
            dir,
            http: http_client(),
        }
    }

    /// Stops the server, keeping the directory (for restart tests).
    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.base)
    }

    /// A public URL.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Calls the admin API.
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(TEST_ADMIN_TOKEN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.expect("admin request")
    }

    /// Creates a client through the admin API and returns the response JSON.
    pub async fn create_client(&self, body: Value) -> Value {
        let resp = self
            .admin_call(reqwest::Method::POST, "/admin/clients", Some(body))
            .await;
        let status = resp.status();
        let v: Value = resp.json().await.expect("json");
        assert_eq!(status, 201, "create client: {v}");
        v
    }

    /// Creates a secret client with scopes `read write` (default `read`)
    /// and audiences `api-1 api-2` (default `api-1`).
    pub async fn secret_client(&self, id: &str) -> SecretClient {
        let v = self
            .create_client(json!({
                "client_id": id,
                "allowed_scopes": ["read", "write"],
                "default_scopes": ["read"],
                "allowed_audiences": ["api-1", "api-2"],
                "default_audiences": ["api-1"],
            }))
            .await;
        SecretClient {
            id: id.into(),
            secret: v["client_secret"].as_str().expect("secret").into(),
        }
    }

    /// Creates a `private_key_jwt` client for `key` (same scopes/audiences).
    pub async fn jwt_client(&self, id: &str, key: &SigningKey) -> String {
        self.create_client(json!({
            "client_id": id,
            "jwks": { "keys": [key.public_jwk()] },
            "allowed_scopes": ["read", "write"],
            "default_scopes": ["read"],
            "allowed_audiences": ["api-1", "api-2"],
            "default_audiences": ["api-1"],
        }))
        .await;
        id.to_owned()
    }

    /// POSTs a form to the token endpoint with HTTP Basic credentials.
    pub async fn token_basic(&self, c: &SecretClient, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.token_url())
            .header("authorization", basic(&c.id, &c.secret))
            .form(form)
            .send()
            .await
            .expect("token request")
    }

    /// Gets an access token (Basic auth, default scopes/audience); panics on failure.
    pub async fn access_token(&self, c: &SecretClient) -> String {
        let resp = self
            .token_basic(c, &[("grant_type", "client_credentials")])
            .await;
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.expect("json");
        v["access_token"].as_str().expect("access_token").to_owned()
    }

    /// The published JWK Set.
    pub async fn jwks(&self) -> Value {
        self.http
            .get(self.url("/.well-known/jwks.json"))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("json")
    }

    /// Introspects `token` as client `c`.
    pub async fn introspect(&self, c: &SecretClient, token: &str) -> Value {
        let resp = self
            .http
            .post(self.url("/oauth2/introspect"))
            .header("authorization", basic(&c.id, &c.secret))
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspect");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("json")
    }
}

/// `Basic base64(id:secret)` (both are URL-safe already in tests).
pub fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

/// A client assertion for `client_id` at `aud`, signed by `key`.
pub fn client_assertion(
    key: &SigningKey,
    client_id: &str,
    aud: &str,
    jti: &str,
    now: u64,
    ttl: u64,
) -> String {
    let claims = json!({
        "iss": client_id, "sub": client_id, "aud": aud,
        "iat": now, "exp": now + ttl, "jti": jti,
    });
    key.sign_with_header(serde_json::Map::new(), &claims)
        .expect("sign")
}

/// A fresh client key.
pub fn client_key(alg: SigningAlgorithm) -> SigningKey {
    SigningKey::generate(alg).expect("key")
}

/// Verifies `token` against a JWK Set with `jsonwebtoken`, as an independent
/// resource server would: key by `kid`, algorithm from the key, `iss`, `aud`.
pub fn verify_with_jwks(
    token: &str,
    jwks: &Value,
    issuer: &str,
    aud: &str,
) -> Result<Value, String> {
    use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
    let header = decode_header(token).map_err(|e| e.to_string())?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err(format!("typ is {:?}", header.typ));
    }
    let kid = header.kid.ok_or("no kid")?;
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(jwks.clone()).map_err(|e| e.to_string())?;
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} not in JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let alg = jwk.common.key_algorithm.ok_or("jwk has no alg")?;
    let alg: jsonwebtoken::Algorithm = alg.to_string().parse().map_err(|_| "alg")?;
    let mut v = Validation::new(alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[aud]);
    v.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]);
    decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

/// A free loopback port (bound then released), for a server a test starts
/// in another process.
///
/// It is picked below the kernel's ephemeral range: a port the kernel hands
/// out (`bind` to port 0, or the local end of any outgoing connection) could
/// be taken again by a parallel test's client socket between this check and
/// the server's `bind`. Below the range only another pick can take it, and
/// the picks of one process walk the range in turn from a random start.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    const FIRST: u16 = 15_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let last = ephemeral_low()
        .unwrap_or(32_768)
        .clamp(FIRST + 1_000, 65_535)
        - 1;
    let span = last - FIRST + 1;
    let _ = NEXT.compare_exchange(0, random_offset(span), Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The first port of the kernel's ephemeral range (Linux).
fn ephemeral_low() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A start in `1..span` that differs between processes (test binaries run
/// one after another, but `cargo test` runs each one's tests in parallel).
fn random_offset(span: u16) -> u16 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded randomly once per process.
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (seed % u64::from(span - 1)) as u16 + 1
}

/// The real `portcullis` binary running `iam serve` as a child process.
pub struct BinaryIam {
    /// The child.
    pub child: Child,
    /// Public address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
}

impl BinaryIam {
    /// Starts `bin iam serve` on free ports with `args`, waiting until /readyz answers 200.
    pub fn spawn(bin: &str, db: &Path, extra: &[&str]) -> Self {
        Self::spawn_env(bin, db, extra, &[])
    }

    /// Like [`BinaryIam::spawn`], with extra environment variables.
    pub fn spawn_env(bin: &str, db: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn_logged(bin, db, extra, env, None)
    }

    /// Like [`BinaryIam::spawn_env`], writing the server's stdout (its log)
    /// to `log` when given. Pass `--log …` in `extra` for the level.
    pub fn spawn_logged(
        bin: &str,
        db: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let (p, a) = (free_port(), free_port());
        let addr: SocketAddr = format!("127.0.0.1:{p}").parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{a}").parse().expect("addr");
        let level = if log.is_some() { "debug" } else { "warn" };
        let stdout = match log {
            Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
            None => Stdio::null(),
        };
        let child = Command::new(bin)
            .args(["--log", level, "iam", "serve"])
            .args([
                "--listen",
                &addr.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .args(["--database-url", &format!("sqlite://{}", db.display())])
            .args(extra)
            .env("PORTCULLIS_MASTER_KEY", TEST_MASTER_KEY)
            .env("PORTCULLIS_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
            .env(
                "PORTCULLIS_PASSWORD_MEMORY_KIB",
                TEST_PASSWORD_COST.0.to_string(),
            )
            .env(
                "PORTCULLIS_PASSWORD_ITERATIONS",
                TEST_PASSWORD_COST.1.to_string(),
            )
            .envs(env.iter().copied())
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn portcullis");
        let me = Self { child, addr, admin };
        me.wait_ready();
        me
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let ok = std::net::TcpStream::connect(self.addr)
                .and_then(|mut s| {
                    use std::io::{Read, Write};
                    s.set_read_timeout(Some(Duration::from_secs(2)))?;
                    s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
                    let mut buf = String::new();
                    s.read_to_string(&mut buf)?;
                    Ok(buf.starts_with("HTTP/1.1 200"))
                })
                .unwrap_or(false);
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("portcullis did not become ready on {}", self.addr);
    }

    /// Base URL.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends SIGKILL and reaps.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (unix).
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for BinaryIam {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A child process killed (and waited for) when it is dropped, also when a
/// failed assertion ends its test early: no server outlives its test
/// holding the harness's output pipes.
pub struct Reaped(pub Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // An error means it has already exited and been waited for.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `kid` in a JWT's header.
pub fn token_kid(token: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD.decode(header).unwrap_or_default();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    v["kid"].as_str().unwrap_or_default().to_owned()
}

impl TestIam {
    /// A secret client with the given scopes and audiences (first audience default).
    pub async fn secret_client_with(
        &self,
        id: &str,
        scopes: &[&str],
        audiences: &[&str],
    ) -> SecretClient {
        let v = self
            .create_client(json!({
                "client_id": id,
                "allowed_scopes": scopes,
                "allowed_audiences": audiences,
                "default_audiences": &audiences[..1],
            }))
            .await;
        SecretClient {
            id: id.into(),
            secret: v["client_secret"].as_str().expect("secret").into(),
        }
    }
}

/// A client-credentials token request with HTTP Basic to the server at `base`.
pub async fn client_credentials(
    http: &reqwest::Client,
    base: &str,
    c: &SecretClient,
) -> reqwest::Response {
    http.post(format!("{base}/oauth2/token"))
        .header("authorization", basic(&c.id, &c.secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request")
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let low = ephemeral_low().unwrap_or(32_768);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..50 {
            let port = free_port();
            assert!(seen.insert(port), "port {port} handed out twice");
            assert!(
                port < low.max(16_000),
                "port {port} is in the ephemeral range"
            );
            TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
        }
    }
}
