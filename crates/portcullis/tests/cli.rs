//! The admin CLI and `portcullis dev`, as a user runs them.

#![allow(clippy::unwrap_used)]

mod dev_support;

use dev_support::{BIN, DevPorts, KillOnDrop, banner, demo_users, dev_started};
use portcullis_test_support::{BinaryIam, SecretClient, TEST_ADMIN_TOKEN, basic, http_client};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn cli(iam: &BinaryIam, args: &[&str]) -> (i32, String, String) {
    let admin_url = format!("http://{}", iam.admin);
    let out = Command::new(BIN)
        .args(args)
        .args(["--admin-url", &admin_url])
        .env("PORTCULLIS_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

async fn token_status(iam: &BinaryIam, c: &SecretClient) -> u16 {
    portcullis_test_support::client_credentials(&http_client(), &iam.base(), c)
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn clients_and_keys_commands() {
    let dir = tempfile::tempdir().unwrap();
    let iam = BinaryIam::spawn(
        BIN,
        &dir.path().join("iam.db"),
        &["--key-publish-delay-secs", "600"],
    );

    let (code, out, err) = cli(
        &iam,
        &[
            "clients",
            "create",
            "--id",
            "orders",
            "--name",
            "Orders",
            "--scope",
            "orders:read orders:write",
            "--default-scope",
            "orders:read",
            "--audience",
            "orders-api",
            "--default-audience",
            "orders-api",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let created = json(&out);
    let c = SecretClient {
        id: "orders".into(),
        secret: created["client_secret"].as_str().unwrap().into(),
    };
    assert_eq!(
        created["allowed_scopes"],
        serde_json::json!(["orders:read", "orders:write"])
    );
    assert_eq!(token_status(&iam, &c).await, 200);

    let (code, out, _) = cli(&iam, &["clients", "list"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("CLIENT_ID"));
    assert!(
        out.contains("orders") && out.contains("orders-api"),
        "{out}"
    );
    assert!(!out.contains(&c.secret), "secrets are never listed");

    let (code, out, _) = cli(&iam, &["clients", "show", "orders"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("client_secret_basic") && out.contains("Orders"),
        "{out}"
    );

    let (code, _, err) = cli(&iam, &["clients", "update", "orders", "--disable"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(token_status(&iam, &c).await, 401);
    let (code, _, _) = cli(&iam, &["clients", "update", "orders", "--enable"]);
    assert_eq!(code, 0);

    let (code, out, _) = cli(&iam, &["clients", "rotate-secret", "orders", "-o", "json"]);
    assert_eq!(code, 0);
    let rotated = SecretClient {
        id: "orders".into(),
        secret: json(&out)["client_secret"].as_str().unwrap().into(),
    };
    assert_eq!(token_status(&iam, &c).await, 401);
    assert_eq!(token_status(&iam, &rotated).await, 200);

    let (code, out, _) = cli(&iam, &["keys", "list", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["keys"][0]["state"], "active");
    let (code, out, _) = cli(&iam, &["keys", "rotate", "--alg", "EdDSA"]);
    assert_eq!(code, 0);
    assert!(out.contains("pending") && out.contains("EdDSA"), "{out}");
    let (_, out, _) = cli(&iam, &["keys", "list"]);
    assert!(out.contains("active") && out.contains("pending"), "{out}");

    let (code, _, _) = cli(&iam, &["clients", "delete", "orders"]);
    assert_eq!(code, 0);
    let (code, _, err) = cli(&iam, &["clients", "show", "orders"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");

    // A wrong admin token is reported, not ignored.
    let out = Command::new(BIN)
        .args([
            "clients",
            "list",
            "--admin-url",
            &format!("http://{}", iam.admin),
            "--admin-token",
            "wrong-token-0123456789",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[tokio::test]
async fn dev_mode_prints_working_credentials_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(".portcullis");
    let t0 = Instant::now();
    let (ports, start, child, text) = dev_started(&data);
    let (p, g) = (ports.iam, ports.gateway);
    assert!(t0.elapsed() < Duration::from_secs(30));
    assert!(text.contains(&format!("http://127.0.0.1:{p}")), "{text}");
    let secret = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret: "))
        .expect("secret printed")
        .to_owned();
    assert!(text.contains("curl -s -u 'demo-service:"), "{text}");
    let c = SecretClient {
        id: "demo-service".into(),
        secret: secret.clone(),
    };
    let http = http_client();
    let v: Value = http
        .post(format!("http://127.0.0.1:{p}/oauth2/token"))
        .header("authorization", basic(&c.id, &c.secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "orders:read orders:write"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["scope"], "orders:read orders:write");

    // Through the gateway: the API key, then a bearer token from the IAM
    // server (fetched through the gateway's /iam route).
    let api_key = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("demo API key  "))
        .expect("api key printed")
        .to_owned();
    let gw = format!("http://127.0.0.1:{g}");
    let who: Value = http
        .get(format!("{gw}/whoami"))
        .header("x-api-key", &api_key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["caller"], "demo-partner", "{who}");
    assert_eq!(who["authenticated_at_gateway_with"], "api_key");
    let t: Value = http
        .post(format!("{gw}/iam/oauth2/token"))
        .header("authorization", basic(&c.id, &c.secret))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "orders:read"),
            ("resource", "gateway"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = t["access_token"].as_str().unwrap();
    let who: Value = http
        .get(format!("{gw}/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["caller"], "demo-service", "{who}");
    assert_eq!(who["authenticated_at_gateway_with"], "jwt");
    assert!(who["original_token_jti"].is_string());
    assert_eq!(
        http.get(format!("{gw}/whoami"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    dev_browser_login_works(&text).await;
    drop(child);

    // Restart: same secret, same data.
    let mut child = KillOnDrop(start());
    let text = banner(&mut child.0);
    assert!(text.contains(&secret));
    drop(child);
    for f in [
        "master.key",
        "admin-token",
        "demo-client-secret",
        "portcullis.db",
    ] {
        assert!(data.join(f).exists(), "{f}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "secrets are private to the user");
    }
}

/// A port that is taken makes dev exit at once, naming the address (the
/// test helper `dev_started` retries on other ports when it reads this).
#[test]
fn dev_names_a_taken_port_and_exits() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases = [
        (
            "--listen",
            DevPorts {
                iam: port,
                ..DevPorts::free()
            },
        ),
        (
            "--gateway-listen",
            DevPorts {
                gateway: port,
                ..DevPorts::free()
            },
        ),
        (
            "--security-listen",
            DevPorts {
                security: port,
                ..DevPorts::free()
            },
        ),
    ];
    for (flag, ports) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut child = KillOnDrop(
            ports
                .command(&dir.path().join(".portcullis"))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "dev kept running with {flag} taken"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "{flag}: {err}");
        assert!(
            err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
            "{flag}: {err}"
        );
    }
}

/// The demo app of `portcullis dev` in headless Chromium (Debian's, driven
/// by playwright-core from `interop/node`): sign in through the gateway's BFF
/// on the IAM sign-in page, call the API, survive an access-token refresh,
/// sign out (gone at the BFF and the IAM server). With
/// `PORTCULLIS_SCREENSHOTS=1` it also refreshes `docs/bff-login-page.png`.
#[tokio::test]
async fn dev_mode_demo_app_works_in_headless_chromium() {
    let interop = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop/node");
    let driver = interop.join("node_modules/playwright-core");
    assert!(
        driver.exists(),
        "playwright-core is missing ({}): run `bash interop/install.sh` or `./scripts/test.sh`",
        driver.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists(),
        "Chromium is missing ({chromium}): `apt-get install chromium` (Debian), or set CHROMIUM; \
         `bash interop/install.sh` installs it when run as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join(".portcullis");
    let (ports, _, child, text) = dev_started(&data);
    let g = ports.gateway;
    let users = demo_users(&text);
    assert_eq!(users.len(), 2, "alice and bob printed: {text}");
    let (user, password) = (users[0].0.as_str(), users[0].1.as_str());
    // Access tokens of 32 s, refreshed 30 s before they expire: due after 2 s.
    let admin_url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin API     "))
        .and_then(|l| l.split_whitespace().next())
        .expect("admin API printed")
        .to_owned();
    let token = std::fs::read_to_string(data.join("admin-token")).unwrap();
    let r = http_client()
        .patch(format!("{admin_url}/admin/clients/demo-bff"))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"access_token_ttl_secs": 32}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let shots = std::env::var_os("PORTCULLIS_SCREENSHOTS").is_some();
    let gw = format!("http://127.0.0.1:{g}");
    let mut args = vec![
        gw.clone(),
        user.to_owned(),
        password.to_owned(),
        "3000".into(),
    ];
    if shots {
        args.push(docs.join("bff-login-page.png").display().to_string());
    }
    let stdout = run_node(&interop, &chromium, "test-bff-browser.mjs", &args).await;
    assert!(stdout.contains("ok - sign in, call the API"), "{stdout}");

    // The demo system: alice (operator) and bob (viewer), each seeing only
    // their customer's systems; arming allowed for one, refused for the
    // other; the identity panel's chain with the exchanged token's act.
    let mut args = vec![gw, users[0].1.clone(), users[1].1.clone()];
    if shots {
        args.push(docs.display().to_string());
    }
    let stdout = run_node(&interop, &chromium, "test-demo-browser.mjs", &args).await;
    assert_eq!(stdout.matches("ok - ").count(), 3, "{stdout}");
    drop(child);
}

/// Runs an interop script under node with `CHROMIUM` set; its output, or a
/// failed assertion with it.
async fn run_node(
    interop: &std::path::Path,
    chromium: &str,
    script: &str,
    args: &[String],
) -> String {
    let out = tokio::process::Command::new("node")
        .arg(interop.join(script))
        .args(args)
        .current_dir(interop)
        .env("CHROMIUM", chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .unwrap_or_else(|_| panic!("{script} finished within 120 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "headless Chromium run of {script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The browser-login demo of the banner: the printed authorization URL, a
/// sign-in as the printed user, the demo service's callback page, and the
/// `curl` it shows, run as an HTTP request: an ID token comes back.
async fn dev_browser_login_works(text: &str) {
    let url = text
        .lines()
        .map(str::trim)
        .find(|l| l.contains("/oauth2/authorize?"))
        .expect("authorization URL printed");
    let (user, password) = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("demo user     "))
        .and_then(|l| l.split_once(" / "))
        .expect("demo user printed");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let cookies: Vec<String> = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect();
    let html = page.text().await.unwrap();
    let field = |name: &str| {
        let marker = format!(r#"name="{name}" value=""#);
        let start = html.find(&marker).unwrap() + marker.len();
        html[start..start + html[start..].find('"').unwrap()].to_owned()
    };
    let login_url = url.split("/oauth2/authorize").next().unwrap().to_owned() + "/oauth2/login";
    let done = http
        .post(login_url)
        .header("cookie", cookies.join("; "))
        .form(&[
            ("request", field("request").as_str()),
            ("csrf", field("csrf").as_str()),
            ("username", user),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        done.status().as_u16() / 100,
        3,
        "{}",
        done.text().await.unwrap()
    );
    let callback = done.headers()["location"].to_str().unwrap().to_owned();
    assert!(callback.contains("/callback?code="), "{callback}");
    let shown = http.get(&callback).send().await.unwrap();
    let shown = shown.text().await.unwrap();
    // The page's curl: `-d name=value` pairs and the token URL.
    let mut form = Vec::new();
    let mut token_url = String::new();
    let words: Vec<&str> = shown.split_whitespace().filter(|w| *w != "\\").collect();
    for (i, w) in words.iter().enumerate() {
        if *w == "-d" {
            let (k, v) = words[i + 1].split_once('=').unwrap();
            form.push((k.to_owned(), v.to_owned()));
        } else if w.ends_with("/oauth2/token") {
            token_url = (*w).to_owned();
        }
    }
    assert_eq!(form.len(), 5, "{shown}");
    let t = post_form(&http, &token_url, &form).await;
    assert!(t["id_token"].is_string(), "{t}");
    assert!(t["access_token"].is_string(), "{t}");
}

/// POSTs a form and reads the JSON answer.
async fn post_form<T: serde::Serialize + ?Sized>(
    http: &reqwest::Client,
    url: &str,
    form: &T,
) -> Value {
    let r = http.post(url).form(form).send().await.unwrap();
    r.json().await.unwrap()
}

/// Runs the CLI against `iam` with `stdin` piped in.
fn cli_stdin(iam: &BinaryIam, args: &[&str], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .args(["--admin-url", &format!("http://{}", iam.admin)])
        .env("PORTCULLIS_ADMIN_TOKEN", TEST_ADMIN_TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn users_commands() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("iam.log");
    let iam = BinaryIam::spawn_logged(BIN, &dir.path().join("iam.db"), &[], &[], Some(&log));
    // What the server stores, read as another replica would.
    let config = portcullis_test_support::test_config(dir.path())
        .validate(&|_| None)
        .unwrap();
    let store = portcullis_iam::store::open(&config.database_url)
        .await
        .unwrap();
    let users = portcullis_iam::users::UserRegistry::new(
        store,
        std::sync::Arc::new(portcullis_core::SystemClock),
        &config.passwords,
    )
    .await
    .unwrap();
    let login = |password: &'static str| {
        let users = &users;
        async move {
            users
                .verify_password("alice", &portcullis_core::Secret::new(password))
                .await
                .unwrap()
                .is_some()
        }
    };

    let create = "users create Alice --email alice@example.com --role admin,auditor \
                  --group staff --password-stdin -o json";
    let args: Vec<&str> = create.split_whitespace().collect();
    let (code, out, err) = cli_stdin(&iam, &args, "correct horse battery\n");
    assert_eq!(code, 0, "{err}");
    let created = json(&out);
    assert_eq!(created["username"], "alice");
    assert_eq!(created["roles"], serde_json::json!(["admin", "auditor"]));
    assert_eq!(created["has_password"], true);
    assert!(!out.contains("correct horse"));
    assert!(login("correct horse battery").await);

    let (code, out, _) = cli(&iam, &["users", "create", "bob"]);
    assert_eq!(code, 0);
    assert!(out.contains("bob"), "{out}");

    let (code, out, _) = cli(&iam, &["users", "list"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("USERNAME"), "{out}");
    assert!(
        out.contains("alice") && out.contains("alice@example.com") && out.contains("bob"),
        "{out}"
    );
    assert!(!out.contains("$argon2"));

    let (code, out, _) = cli(&iam, &["users", "show", "ALICE"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("admin auditor") && out.contains("staff"),
        "{out}"
    );

    let (code, out, err) = cli(
        &iam,
        &[
            "users",
            "update",
            "alice",
            "--disable",
            "--email",
            "",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["enabled"], false);
    assert!(json(&out).get("email").is_none());
    assert!(!login("correct horse battery").await, "disabled");
    let (code, _, _) = cli(&iam, &["users", "update", "alice", "--enable"]);
    assert_eq!(code, 0);

    let (code, _, err) = cli_stdin(
        &iam,
        &["users", "set-password", "alice"],
        "battery staple\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(login("battery staple").await);
    assert!(!login("correct horse battery").await);
    // Refusals name the rule; an empty stdin is a usage error.
    let (code, _, err) = cli_stdin(&iam, &["users", "set-password", "alice"], "short\n");
    assert_eq!(code, 1);
    assert!(err.contains("at least 8 characters"), "{err}");
    let (code, _, err) = cli_stdin(&iam, &["users", "set-password", "alice"], "");
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = cli(&iam, &["users", "show", "a/b"]);
    assert_eq!(code, 2);

    // Consents: none yet; withdrawing one that does not exist is a 404.
    let (code, out, _) = cli(&iam, &["users", "consents", "alice", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["consents"], serde_json::json!([]));
    let (code, _, err) = cli(&iam, &["users", "revoke-consent", "alice", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    let (code, _, err) = cli(&iam, &["users", "revoke-consent", "alice", "../x"]);
    assert_eq!(code, 2, "{err}");

    let (code, _, _) = cli(&iam, &["users", "delete", "alice"]);
    assert_eq!(code, 0);
    let (code, _, err) = cli(&iam, &["users", "show", "alice"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    assert!(!login("battery staple").await);

    // The server log (debug level) has the audit trail and no password or hash.
    let text = std::fs::read_to_string(&log).unwrap();
    for action in ["create", "set_password", "disable", "update", "delete"] {
        assert!(
            text.contains("user_changed") && text.contains(&format!("\"action\":\"{action}\"")),
            "no {action} audit event"
        );
    }
    for secret in ["correct horse", "battery staple", "$argon2"] {
        assert!(!text.contains(secret), "{secret:?} in the log");
    }
}

#[tokio::test]
async fn roles_commands() {
    let dir = tempfile::tempdir().unwrap();
    let iam = BinaryIam::spawn(BIN, &dir.path().join("iam.db"), &[]);
    let (code, out, err) = cli(
        &iam,
        &[
            "roles",
            "create",
            "operator",
            "--description",
            "Arms systems",
            "--scopes",
            "systems:arm,systems:disarm",
            "--groups",
            "ops",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        json(&out)["scopes"],
        serde_json::json!(["systems:arm", "systems:disarm"])
    );
    let (code, _, err) = cli(&iam, &["roles", "create", "operator"]);
    assert_eq!(code, 1);
    assert!(err.contains("409"), "{err}");
    let (code, out, _) = cli(
        &iam,
        &["roles", "update", "operator", "--clients", "scheduler"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("clients:     scheduler") && out.contains("groups:      ops"),
        "{out}"
    );
    let (code, out, _) = cli(&iam, &["roles", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("operator") && out.contains("Arms systems"),
        "{out}"
    );
    let (code, _, err) = cli(&iam, &["roles", "show", "../x"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = cli(&iam, &["roles", "delete", "operator"]);
    assert_eq!(code, 0);
    let (code, _, err) = cli(&iam, &["roles", "show", "operator"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
}

fn run_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn token_get_and_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let iam = BinaryIam::spawn(BIN, &dir.path().join("iam.db"), &[]);
    let (code, out, err) = cli(
        &iam,
        &[
            "clients",
            "create",
            "--id",
            "debug",
            "--scope",
            "read",
            "--audience",
            "api-1",
            "--default-audience",
            "api-1",
            "-o",
            "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let secret = json(&out)["client_secret"].as_str().unwrap().to_owned();
    let base = iam.base();
    let (code, token, err) = run_env(
        &[
            "token",
            "get",
            "--issuer",
            &base,
            "--client-id",
            "debug",
            "--scope",
            "read",
        ],
        &[("PORTCULLIS_CLIENT_SECRET", &secret)],
    );
    assert_eq!(code, 0, "{err}");
    let token = token.trim().to_owned();
    assert_eq!(token.split('.').count(), 3);

    let (code, out, _) = run_env(&["token", "inspect", &token, "--issuer", &base], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("VALID") && out.contains("\"client_id\": \"debug\""),
        "{out}"
    );
    let (code, out, _) = run_env(&["token", "inspect", &token, "--audience", "api-2"], &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("INVALID: the audience") && out.contains("pass --issuer"),
        "{out}"
    );
    // A tampered payload: the signature no longer holds.
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = serde_json::from_slice::<Value>(&base64_decode(&parts[1])).unwrap();
    claims["scope"] = "read write".into();
    parts[1] = base64_encode(&serde_json::to_vec(&claims).unwrap());
    let (code, out, _) = run_env(
        &["token", "inspect", &parts.join("."), "--issuer", &base],
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.contains("INVALID: token signature is invalid"), "{out}");
    // A wrong secret is refused with the server's error; a missing one is a usage error.
    let (code, _, err) = run_env(
        &["token", "get", "--issuer", &base, "--client-id", "debug"],
        &[("PORTCULLIS_CLIENT_SECRET", "nope")],
    );
    assert_eq!(code, 1);
    assert!(err.contains("invalid_client"), "{err}");
    let (code, _, err) = run_env(
        &["token", "get", "--issuer", &base, "--client-id", "debug"],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = run_env(&["token", "inspect", "not-a-jwt"], &[]);
    assert_eq!(code, 1);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}
