//! The demo system of `portcullis dev` over real sockets: the customer
//! service and the security-system service behind the gateway, the
//! authorization matrix (people through the BFF, an API key, bearer tokens,
//! direct calls), the token-exchange chain, and the banner's `curl`
//! commands run as printed.

#![allow(clippy::unwrap_used)]

mod dev_support;

use dev_support::{DevPorts, KillOnDrop, demo_users, dev_started};
use portcullis_test_support::browser::Browser;
use portcullis_test_support::{basic, http_client};
use serde_json::Value;

const ACME: [&str; 3] = ["sys-berlin-dock", "sys-berlin-office", "sys-hamburg-gate"];
const GLOBEX: [&str; 1] = ["sys-paris-front"];

struct Dev {
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
    ports: DevPorts,
    text: String,
    data: std::path::PathBuf,
}

impl Dev {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join(".portcullis");
        let (ports, _, child, text) = dev_started(&data);
        Self {
            _child: child,
            _dir: dir,
            ports,
            text,
            data,
        }
    }

    fn gw(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.gateway)
    }

    fn security(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.security)
    }

    fn customers(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.customers)
    }

    fn secret(&self, file: &str) -> String {
        std::fs::read_to_string(self.data.join(file))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A client-credentials token from the IAM server.
    async fn token(&self, client: &str, secret: &str, scope: &str, resource: &str) -> String {
        let form = [
            ("grant_type", "client_credentials"),
            ("scope", scope),
            ("resource", resource),
        ];
        self.token_request(client, secret, &form).await
    }

    /// The access token of a token-endpoint answer.
    async fn token_request(&self, client: &str, secret: &str, form: &[(&str, &str)]) -> String {
        let v: Value = http_client()
            .post(format!("http://127.0.0.1:{}/oauth2/token", self.ports.iam))
            .header("authorization", basic(client, secret))
            .form(form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token: {v}"))
            .to_owned()
    }

    /// A person signed in through the BFF: the browser and its CSRF token.
    async fn person(&self, user: &str, password: &str) -> (Browser, String) {
        let mut b = Browser::new();
        let start = b.get(&self.gw("/auth/login?return_to=/")).await;
        assert_eq!(start.status, 302, "{}", start.body);
        let page = b.get(start.location.as_deref().unwrap()).await;
        let login = format!("http://127.0.0.1:{}/oauth2/login", self.ports.iam);
        let done = b.sign_in(&login, &page, user, password).await;
        assert_eq!(done.status, 303, "{}", done.body);
        let back = b.get(done.location.as_deref().unwrap()).await;
        assert_eq!(back.status, 303, "{}", back.body);
        let s = b.get(&self.gw("/auth/session")).await;
        assert_eq!(s.status, 200, "{}", s.body);
        let v: Value = serde_json::from_str(&s.body).unwrap();
        (b, v["csrf_token"].as_str().unwrap().to_owned())
    }
}

/// A request with the browser's cookies (and, for POST, the CSRF header).
async fn in_browser(b: &Browser, csrf: &str, method: &str, url: &str) -> (u16, Value) {
    let jar: Vec<String> = b.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let r = match method {
        "GET" => b.http.get(url),
        _ => b.http.post(url).header("x-portcullis-csrf", csrf),
    };
    let resp = r.header("cookie", jar.join("; ")).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A request with a bearer token or an API key.
async fn call(method: &str, url: &str, header: Option<(&str, String)>) -> (u16, Value) {
    let http = http_client();
    let mut r = match method {
        "GET" => http.get(url),
        _ => http.post(url),
    };
    if let Some((k, v)) = header {
        r = r.header(k, v);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn ids(v: &Value) -> Vec<String> {
    v["systems"]
        .as_array()
        .unwrap_or_else(|| panic!("no systems: {v}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn bearer(t: &str) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {t}")))
}

/// Who may see and arm what, by every way in: the people through the BFF,
/// the API key and a bearer token through the gateway, tokens sent directly.
#[tokio::test]
async fn demo_services_authorization_matrix() {
    let dev = Dev::start();
    let users = demo_users(&dev.text);
    let [(alice, alice_pw), (bob, bob_pw)] = [users[0].clone(), users[1].clone()];
    assert_eq!((alice.as_str(), bob.as_str()), ("alice", "bob"));

    // The operator through the BFF: Acme's systems; she may arm and disarm.
    let (a, a_csrf) = dev.person(&alice, &alice_pw).await;
    let (s, v) = in_browser(&a, &a_csrf, "GET", &dev.gw("/api/security/systems")).await;
    assert_eq!((s, ids(&v)), (200, ACME.map(String::from).to_vec()), "{v}");
    assert_eq!(v["caller"]["customer"]["id"], "acme");
    for action in ["arm", "disarm"] {
        let url = dev.gw(&format!("/api/security/systems/{}/{action}", ACME[1]));
        let (s, v) = in_browser(&a, &a_csrf, "POST", &url).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["system"]["armed"], action == "arm", "{v}");
        assert_eq!(v["system"]["updated_by"], "Alice");
    }
    // Not another customer's system, and not without the CSRF header.
    let url = dev.gw(&format!("/api/security/systems/{}/arm", GLOBEX[0]));
    assert_eq!(in_browser(&a, &a_csrf, "POST", &url).await.0, 404);
    let url = dev.gw(&format!("/api/security/systems/{}/arm", ACME[0]));
    assert_eq!(in_browser(&a, "", "POST", &url).await.0, 403);

    // The viewer: Globex's system only; arming is refused by the policy.
    let (b, b_csrf) = dev.person(&bob, &bob_pw).await;
    let (s, v) = in_browser(&b, &b_csrf, "GET", &dev.gw("/api/security/systems")).await;
    assert_eq!((s, ids(&v)), (200, vec![GLOBEX[0].to_owned()]), "{v}");
    let url = dev.gw(&format!("/api/security/systems/{}/arm", GLOBEX[0]));
    let (s, v) = in_browser(&b, &b_csrf, "POST", &url).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"], "access_denied");
    assert_eq!(
        v["chain"].as_array().unwrap().len(),
        2,
        "the refusal shows the chain: {v}"
    );
    let url = dev.gw(&format!("/api/security/systems/{}/arm", ACME[0]));
    assert_eq!(in_browser(&b, &b_csrf, "POST", &url).await.0, 404);

    // The API key (Globex's alarm centre) through the gateway: read only.
    let key = Some(("x-api-key", dev.secret("demo-api-key")));
    let (s, v) = call("GET", &dev.gw("/security/systems"), key.clone()).await;
    assert_eq!((s, ids(&v)), (200, vec![GLOBEX[0].to_owned()]), "{v}");
    let url = dev.gw(&format!("/security/systems/{}/arm", GLOBEX[0]));
    assert_eq!(call("POST", &url, key).await.0, 403);

    // A bearer token through the gateway (Acme's monitoring client).
    let secret = dev.secret("demo-client-secret");
    let t = dev
        .token("demo-service", &secret, "systems:read", "gateway")
        .await;
    let (s, v) = call("GET", &dev.gw("/security/systems"), bearer(&t)).await;
    assert_eq!((s, ids(&v)), (200, ACME.map(String::from).to_vec()), "{v}");
    let url = dev.gw(&format!("/security/systems/{}/arm", ACME[0]));
    assert_eq!(call("POST", &url, bearer(&t)).await.0, 403);
    // Without a credential: 401 at the gateway and at both services.
    assert_eq!(call("GET", &dev.gw("/security/systems"), None).await.0, 401);
    assert_eq!(call("GET", &dev.security("/systems"), None).await.0, 401);
    assert_eq!(call("GET", &dev.customers("/locations"), None).await.0, 401);

    // Directly: a token for the security service works there; the gateway's
    // audience, or the security service's token at the customer service, not.
    let direct = dev
        .token(
            "demo-service",
            &secret,
            "systems:read customers:read",
            "security-api",
        )
        .await;
    let (s, v) = call("GET", &dev.security("/systems"), bearer(&direct)).await;
    assert_eq!((s, ids(&v)), (200, ACME.map(String::from).to_vec()), "{v}");
    assert_eq!(
        call("GET", &dev.security("/systems"), bearer(&t)).await.0,
        401
    );
    assert_eq!(
        call("GET", &dev.customers("/locations"), bearer(&direct))
            .await
            .0,
        401
    );

    // The customer service's directory look-up takes the security service's
    // own token; a delegated (exchanged) token or another client's is refused.
    let sec_secret = dev.secret("security-service-secret");
    let own = dev
        .token(
            "security-service",
            &sec_secret,
            "customers:directory",
            "customers-api",
        )
        .await;
    let (s, v) = call(
        "GET",
        &dev.customers("/locations?subject=demo-partner"),
        bearer(&own),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["locations"][0]["id"], "globex-paris", "{v}");
    let exchanged = exchange(&dev, &sec_secret, &direct).await;
    let (s, v) = call(
        "GET",
        &dev.customers("/locations?subject=demo-partner"),
        bearer(&exchanged),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = call("GET", &dev.customers("/customers/me"), bearer(&exchanged)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["employee"]["customer"]["id"], "acme", "{v}");
}

/// RFC 8693 by hand, as the security service.
async fn exchange(dev: &Dev, secret: &str, subject: &str) -> String {
    let form = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", subject),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("audience", "customers-api"),
    ];
    dev.token_request("security-service", secret, &form).await
}

/// The chain each answer carries: the person's token at the security
/// service, the exchanged one (same `sub`, `act` = the security service) at
/// the customer service; through the gateway's API-key route, the gateway's
/// internal token and the security service's own token instead.
#[tokio::test]
async fn demo_chain_shows_the_token_exchange() {
    let dev = Dev::start();
    let users = demo_users(&dev.text);
    let (a, csrf) = dev.person(&users[0].0, &users[0].1).await;
    let (s, v) = in_browser(&a, &csrf, "GET", &dev.gw("/api/security/systems")).await;
    assert_eq!(s, 200, "{v}");
    let chain = v["chain"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "{v}");
    let (sec, cus) = (&chain[0], &chain[1]);
    assert_eq!(sec["service"], "security");
    assert_eq!(cus["service"], "customers");
    let person = sec["claims"]["sub"].as_str().unwrap();
    assert!(person.starts_with("u_"), "{sec}");
    assert_eq!(sec["claims"]["client_id"], "demo-bff");
    assert!(sec["claims"]["act"].is_null(), "{sec}");
    assert_eq!(sec["claims"]["roles"][0], "operator");
    assert_eq!(cus["claims"]["sub"], person, "the person, downstream too");
    assert_eq!(cus["claims"]["aud"], "customers-api");
    assert_eq!(cus["claims"]["client_id"], "security-service");
    assert_eq!(cus["claims"]["act"]["sub"], "security-service", "{cus}");
    assert_eq!(cus["claims"]["scope"], "customers:read");
    assert_eq!(cus["actors"][0]["subject"], "security-service");
    let raw = v.to_string();
    assert!(!raw.contains("eyJ"), "no token in the answer: {raw}");

    let key = Some(("x-api-key", dev.secret("demo-api-key")));
    let (s, v) = call("GET", &dev.gw("/security/systems"), key).await;
    assert_eq!(s, 200, "{v}");
    let chain = v["chain"].as_array().unwrap();
    let gw_iss = format!("http://127.0.0.1:{}", dev.ports.gateway_admin);
    assert_eq!(chain[0]["claims"]["iss"], gw_iss.as_str());
    assert_eq!(chain[0]["claims"]["sub"], "demo-partner");
    assert_eq!(chain[0]["claims"]["auth_method"], "api_key");
    assert_eq!(chain[1]["claims"]["sub"], "security-service");
    assert!(chain[1]["claims"]["act"].is_null());
}

/// The banner's `curl` commands for the demo system, run as printed (bash,
/// curl and jq), give what the banner says they do.
#[tokio::test]
async fn demo_banner_commands_work_as_printed() {
    for tool in ["bash", "curl", "jq"] {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap()
            .status
            .success();
        assert!(
            found,
            "{tool} is missing: the banner's commands need it (apt-get install {tool})"
        );
    }
    let dev = Dev::start();
    let section = dev
        .text
        .split("The demo system:")
        .nth(1)
        .expect("the demo-system section is printed");
    let script: Vec<&str> = section
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl ") || l.starts_with("TOKEN=$(curl "))
        .collect();
    assert_eq!(script.len(), 7, "{section}");
    let out = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script.join("\n")])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // Service to service: the chain, then the exchange by hand.
    assert_eq!(
        lines[0],
        r#"{"sub":"demo-service","aud":"security-api","act":null}"#
    );
    assert_eq!(
        lines[1],
        r#"{"sub":"demo-service","aud":"customers-api","act":{"sub":"security-service"}}"#
    );
    assert!(stdout.contains(r#""scope": "customers:read""#), "{stdout}");
    assert!(
        stdout.contains(r#""issued_token_type": "urn:ietf:params:oauth:token-type:access_token""#)
    );
    // Through the gateway: the API key's customer, the bearer token's, and
    // the refusal to arm.
    assert!(
        stdout.contains("\"Shop front\"\n\"Loading dock\"\n\"Office floor\"\n\"Main gate\"\n"),
        "{stdout}"
    );
    assert!(
        lines.last().unwrap().contains(r#""error":"access_denied""#),
        "{stdout}"
    );
}
