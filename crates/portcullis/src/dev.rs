//! `portcullis dev`: the IAM server on an embedded SQLite file under
//! `./.portcullis/`, with generated secrets kept there and a demo client.

use crate::Failure;
use crate::cli::{DevArgs, LogArgs};
use crate::demo::{customers, security, seed};
use anyhow::Context;
use portcullis_iam::config::{RawClient, RawConfig, RawExchangeRule, RawTokenExchange, RawUser};
use portcullis_iam::crypto::{MasterKey, random_token};
use portcullis_service::{
    ClientCredentials, TokenSource, TokenSourceConfig, Validator, ValidatorConfig,
};
use std::path::Path;

/// The demo client's id.
const DEMO_CLIENT: &str = "demo-service";
/// The public client of the browser-login demo.
const DEMO_WEB_CLIENT: &str = "demo-web";
/// The demo user (an operator).
const DEMO_USER: &str = seed::ALICE;
/// The gateway's BFF at the IAM server: a confidential first-party client.
const DEMO_BFF_CLIENT: &str = crate::demo::BFF_CLIENT;
/// What the BFF asks for at sign-in, besides [`DEMO_SCOPES`].
const BFF_SCOPES: &[&str] = &["openid", "profile", "email", "orders:read"];
/// The scopes of the demo system (governed by the `operator` and `viewer`
/// roles: a person gets those their role grants).
const DEMO_SCOPES: &[&str] = &[
    security::READ_SCOPE,
    security::ARM_SCOPE,
    customers::READ_SCOPE,
];
/// RFC 8693's grant type.
const EXCHANGE_GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// How the gateway config names the env var of the BFF's client secret.
const BFF_SECRET_VAR: &str = "PORTCULLIS_DEV_BFF_CLIENT_SECRET";

/// Reads a secret file, or creates it with `make()` (mode 0600).
fn secret_file(
    path: &Path,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let value = make()?;
    std::fs::write(path, format!("{value}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(value)
}

/// Binds a demo service's listener (`flag` names the option in errors).
async fn bind(addr: &str, flag: &str) -> Result<tokio::net::TcpListener, Failure> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|_| Failure::Config(format!("{flag}: not host:port: {addr}")))?;
    Ok(tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("{flag}: cannot listen on {addr}"))?)
}

/// Runs development mode until Ctrl-C.
pub async fn run(args: DevArgs, log: LogArgs) -> Result<(), Failure> {
    crate::serve::init_logging(&log);
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let master_key = secret_file(&dir.join("master.key"), || {
        Ok(MasterKey::generate_base64()?.expose().to_owned())
    })?;
    let admin_token = secret_file(&dir.join("admin-token"), || {
        Ok(format!("pat_{}", random_token(32)?))
    })?;
    let demo_secret = secret_file(&dir.join("demo-client-secret"), || {
        Ok(format!("pcs_{}", random_token(32)?))
    })?;
    let user_password = secret_file(&dir.join("demo-user-password"), || Ok(random_token(12)?))?;
    let bff_secret = secret_file(&dir.join("demo-bff-client-secret"), || {
        Ok(format!("pcs_{}", random_token(32)?))
    })?;
    let bob_password = secret_file(&dir.join("demo-bob-password"), || Ok(random_token(12)?))?;
    let security_secret = secret_file(&dir.join("security-service-secret"), || {
        Ok(format!("pcs_{}", random_token(32)?))
    })?;
    let gw_origin = format!("http://{}", args.gateway_listen);
    let db = dir.join("portcullis.db");
    let raw = RawConfig {
        mode: Some("development".into()),
        listen: Some(args.listen.clone()),
        admin_listen: Some(args.admin_listen.clone()),
        database_url: Some(format!("sqlite://{}", db.display())),
        master_key: Some(master_key),
        admin_token: Some(admin_token.clone()),
        key_publish_delay_secs: Some(60),
        jwks_max_age_secs: Some(30),
        clients: vec![
            RawClient {
                id: DEMO_CLIENT.into(),
                name: Some("Demo service".into()),
                secret: Some(demo_secret.clone()),
                allowed_scopes: vec![
                    "orders:read".into(),
                    "orders:write".into(),
                    security::READ_SCOPE.into(),
                    customers::READ_SCOPE.into(),
                ],
                default_scopes: vec!["orders:read".into()],
                allowed_audiences: vec![
                    "orders-api".into(),
                    "gateway".into(),
                    security::AUDIENCE.into(),
                ],
                default_audiences: vec!["orders-api".into()],
                ..Default::default()
            },
            RawClient {
                id: DEMO_WEB_CLIENT.into(),
                name: Some("Demo web app".into()),
                public: true,
                first_party: true,
                grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
                // Loopback: any port of the demo service's /callback.
                redirect_uris: vec!["http://127.0.0.1/callback".into()],
                allowed_scopes: vec![
                    "openid".into(),
                    "profile".into(),
                    "email".into(),
                    "orders:read".into(),
                ],
                default_scopes: vec!["openid".into()],
                allowed_audiences: vec!["orders-api".into()],
                default_audiences: vec!["orders-api".into()],
                ..Default::default()
            },
            RawClient {
                id: DEMO_BFF_CLIENT.into(),
                name: Some("Demo app (the gateway's BFF)".into()),
                secret: Some(bff_secret.clone()),
                first_party: true,
                grant_types: Some(vec!["authorization_code".into(), "refresh_token".into()]),
                redirect_uris: vec![format!("{gw_origin}/auth/callback")],
                post_logout_redirect_uris: vec![format!("{gw_origin}/")],
                allowed_scopes: [BFF_SCOPES, DEMO_SCOPES]
                    .concat()
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                default_scopes: vec!["openid".into()],
                allowed_audiences: vec!["orders-api".into(), security::AUDIENCE.into()],
                default_audiences: vec!["orders-api".into()],
                ..Default::default()
            },
            RawClient {
                id: seed::SECURITY_CLIENT.into(),
                name: Some("The demo security-system service".into()),
                secret: Some(security_secret.clone()),
                grant_types: Some(vec!["client_credentials".into(), EXCHANGE_GRANT.into()]),
                allowed_scopes: vec![customers::DIRECTORY_SCOPE.into()],
                allowed_audiences: vec![customers::AUDIENCE.into()],
                default_audiences: vec![customers::AUDIENCE.into()],
                ..Default::default()
            },
        ],
        token_exchange: RawTokenExchange {
            max_depth: None,
            rules: vec![RawExchangeRule {
                client: seed::SECURITY_CLIENT.into(),
                subject_audiences: vec![security::AUDIENCE.into()],
                audiences: vec![customers::AUDIENCE.into()],
                scopes: vec![customers::READ_SCOPE.into()],
            }],
        },
        users: vec![
            RawUser {
                username: DEMO_USER.into(),
                password: Some(user_password.clone()),
                email: Some("alice@example.com".into()),
                email_verified: Some(true),
                display_name: Some("Alice (demo operator)".into()),
                roles: vec!["operator".into()],
                ..Default::default()
            },
            RawUser {
                username: seed::BOB.into(),
                password: Some(bob_password.clone()),
                email: Some("bob@example.com".into()),
                email_verified: Some(true),
                display_name: Some("Bob (demo viewer)".into()),
                roles: vec!["viewer".into()],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let config = crate::serve::validate(raw, "dev")?;
    let server = portcullis_iam::server::start(config)
        .await
        .context("starting the IAM server")?;
    let issuer = server.issuer.to_string();
    let admin = format!("http://{}", server.admin_addr);
    let (alice_sub, bob_sub) = seed::iam(&admin, &admin_token)
        .await
        .context("seeding the demo roles")?;

    // The gateway in front of the demo service and the IAM server.
    let api_key = secret_file(&dir.join("demo-api-key"), || {
        Ok(format!("pak_{}", random_token(32)?))
    })?;
    let gw_admin: std::net::SocketAddr = args.gateway_admin_listen.parse().map_err(|_| {
        Failure::Config(format!(
            "--gateway-admin-listen: not host:port: {}",
            args.gateway_admin_listen
        ))
    })?;
    let demo_addr: std::net::SocketAddr = args.demo_listen.parse().map_err(|_| {
        Failure::Config(format!(
            "--demo-listen: not host:port: {}",
            args.demo_listen
        ))
    })?;
    let gw_issuer = format!("http://{gw_admin}");
    // The browser-login demo: a PKCE pair for the printed authorization URL.
    let verifier = random_token(32).context("random source")?;
    let challenge = portcullis_iam::authorize::s256_challenge(&verifier);
    let login = crate::demo::DemoLogin {
        issuer: issuer.clone(),
        client_id: DEMO_WEB_CLIENT.into(),
        verifier,
    };
    // Bound now (the gateway routes to it), served once the gateway whose
    // keys it trusts is up.
    let demo_listener = tokio::net::TcpListener::bind(demo_addr)
        .await
        .with_context(|| format!("binding the demo service to {demo_addr}"))?;
    let demo = demo_listener
        .local_addr()
        .context("the demo service's address")?;
    // The demo system: the customer service, and the security-system service
    // behind the gateway, each with its own SQLite file.
    let customers_listener = bind(&args.customers_listen, "--customers-listen").await?;
    let customers_db = customers::open(
        &dir.join("customers.db"),
        seed::CUSTOMERS,
        &seed::employees(&alice_sub, &bob_sub),
    )
    .await
    .context("opening the customer database")?;
    let customers_addr = customers::start(customers_listener, &issuer, customers_db)
        .await
        .context("starting the customer service")?;
    let security_listener = bind(&args.security_listen, "--security-listen").await?;
    let security_addr = security_listener
        .local_addr()
        .context("the security service's address")?;
    let authorize_url = {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("response_type", "code")
            .append_pair("client_id", DEMO_WEB_CLIENT)
            .append_pair("redirect_uri", &format!("http://{demo}/callback"))
            .append_pair("scope", "openid profile email")
            .append_pair("state", "demo")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        format!("{issuer}/oauth2/authorize?{}", q.finish())
    };
    let gw_config = gateway_config(
        &args,
        &api_key,
        [demo, security_addr],
        server.public_addr,
        &issuer,
        dir,
        &bff_secret,
    )?;
    let gateway = portcullis_gateway::start(gw_config, None, std::sync::Arc::new(|_| {}))
        .await
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("starting the gateway: {e}")))?;
    crate::demo::start_whoami(demo_listener, gw_issuer.clone(), Some(login))
        .await
        .context("starting the demo service")?;
    seed::policies(&dir.join("policies"))?;
    let policies = std::sync::Arc::new(
        portcullis_service::policy::PolicyStore::open(dir.join("policies"))
            .map_err(|e| Failure::Config(format!("{}: {e}", dir.join("policies").display())))?,
    );
    let _policy_watch = policies.watch(std::time::Duration::from_secs(1));
    let peers = security::Peers {
        iam: Validator::start(ValidatorConfig::new(&issuer, security::AUDIENCE)).await,
        iam_issuer: issuer.clone(),
        gateway: Validator::start(
            ValidatorConfig::new(&gw_issuer, security::GATEWAY_AUDIENCE)
                .dangerous_ignore_revocations(),
        )
        .await,
        tokens: std::sync::Arc::new(TokenSource::new(TokenSourceConfig::new(
            format!("{issuer}/oauth2/token"),
            ClientCredentials::Secret {
                client_id: seed::SECURITY_CLIENT.into(),
                secret: portcullis_core::Secret::new(security_secret.clone()),
            },
        ))),
        customers_url: format!("http://{customers_addr}"),
        policies,
    };
    let security_db = security::open(&dir.join("security.db"), seed::SYSTEMS)
        .await
        .context("opening the security-system database")?;
    security::start(security_listener, security_db, peers)
        .await
        .context("starting the security-system service")?;
    let gw = format!("http://{}", gateway.addr);
    let dir = dir.display();
    let banner = [
        String::new(),
        format!("Portcullis is running (development mode; data in {dir})"),
        String::new(),
        format!("  issuer        {issuer}"),
        format!("  discovery     {issuer}/.well-known/openid-configuration"),
        format!("  admin API     {admin}   (token in {dir}/admin-token)"),
        String::new(),
        format!("  demo client   id:     {DEMO_CLIENT}"),
        format!("                secret: {demo_secret}"),
        "                scopes: orders:read orders:write   audience: orders-api".into(),
        String::new(),
        "Get a token (client credentials):".into(),
        String::new(),
        format!(
            "  curl -s -u '{DEMO_CLIENT}:{demo_secret}' -d grant_type=client_credentials \\\n    -d 'scope=orders:read orders:write' {issuer}/oauth2/token"
        ),
        String::new(),
        format!("  demo user     {DEMO_USER} / {user_password}"),
        "                operator at Acme Logistics: sees its 3 alarm systems, may arm them".into(),
        format!("  demo user     {} / {bob_password}", seed::BOB),
        "                viewer at Globex Retail: sees its 1 system, arming is refused (403)"
            .into(),
        String::new(),
        format!("Open the demo app (the gateway's BFF signs you in):  {gw}/"),
        String::new(),
        "Sign in as that user (authorization code + PKCE); open in a browser:".into(),
        String::new(),
        format!("  {authorize_url}"),
        String::new(),
        String::new(),
        format!(
            "  gateway       {gw}   (internal-token JWKS at {gw_issuer}/.well-known/jwks.json)"
        ),
        format!("  demo API key  {api_key}"),
        String::new(),
        "Call the demo service through the gateway, with the API key, then with a bearer token:"
            .into(),
        String::new(),
        format!("  curl -s -H 'x-api-key: {api_key}' {gw}/whoami"),
        format!(
            "  TOKEN=$(curl -s -u '{DEMO_CLIENT}:{demo_secret}' -d grant_type=client_credentials -d scope=orders:read -d resource=gateway {gw}/iam/oauth2/token | jq -r .access_token)"
        ),
        format!("  curl -s -H \"authorization: Bearer $TOKEN\" {gw}/whoami"),
        String::new(),
        String::new(),
        "The demo system: a security-system service (alarm systems) that asks a customer".into(),
        "service where the caller works; policies decide who may arm.".into(),
        String::new(),
        format!(
            "  security service  http://{security_addr}   (IAM tokens for security-api, or the gateway's)"
        ),
        format!("  customer service  http://{customers_addr}   (IAM tokens for customers-api)"),
        format!(
            "  security client   id: {}   secret: {security_secret}",
            seed::SECURITY_CLIENT
        ),
        format!("  policies          {dir}/policies   (Cedar; edit them, they reload)"),
        String::new(),
        "Service to service: a client-credentials token for the security service, which".into(),
        "exchanges it (RFC 8693) to ask the customer service (see the chain's act):".into(),
        String::new(),
        format!(
            "  TOKEN=$(curl -s -u '{DEMO_CLIENT}:{demo_secret}' -d grant_type=client_credentials -d 'scope=systems:read customers:read' -d resource={} {issuer}/oauth2/token | jq -r .access_token)",
            security::AUDIENCE
        ),
        format!(
            "  curl -s -H \"authorization: Bearer $TOKEN\" http://{security_addr}/systems | jq -c '.chain[].claims | {{sub, aud, act}}'"
        ),
        format!(
            "  curl -s -u '{}:{security_secret}' -d grant_type={EXCHANGE_GRANT} -d subject_token=$TOKEN -d subject_token_type=urn:ietf:params:oauth:token-type:access_token -d audience={} {issuer}/oauth2/token | jq 'del(.access_token)'",
            seed::SECURITY_CLIENT,
            customers::AUDIENCE
        ),
        String::new(),
        "Through the gateway: the API key (Globex's alarm centre), a bearer token (Acme's".into(),
        "monitoring client), and arming refused for that read-only client:".into(),
        String::new(),
        format!(
            "  curl -s -H 'x-api-key: {api_key}' {gw}/security/systems | jq -c '.systems[].name'"
        ),
        format!(
            "  TOKEN=$(curl -s -u '{DEMO_CLIENT}:{demo_secret}' -d grant_type=client_credentials -d scope=systems:read -d resource=gateway {gw}/iam/oauth2/token | jq -r .access_token)"
        ),
        format!(
            "  curl -s -H \"authorization: Bearer $TOKEN\" {gw}/security/systems | jq -c '.systems[].name'"
        ),
        format!(
            "  curl -s -X POST -H \"authorization: Bearer $TOKEN\" {gw}/security/systems/sys-berlin-dock/arm | jq -c ."
        ),
        String::new(),
        format!("Manage clients:  cargo run -q -- clients list   (reads {dir}/admin-token)"),
        "Stop with Ctrl-C.".into(),
    ];
    println!("{}", banner.join("\n"));
    crate::serve::terminated().await;
    gateway.shutdown(std::time::Duration::from_secs(5)).await;
    server.shutdown().await;
    Ok(())
}

/// The gateway of development mode: `/whoami` (API key or IAM bearer token,
/// scope `orders:read`) in front of the demo service, `/iam/…` in front of
/// the IAM server, and the BFF: the demo web app at `/` (public), its API at
/// `/api` (browser session), `/auth/…` (login, callback, session, logout).
fn gateway_config(
    args: &DevArgs,
    api_key: &str,
    [demo, security]: [std::net::SocketAddr; 2],
    iam: std::net::SocketAddr,
    issuer: &str,
    dir: &Path,
    bff_secret: &str,
) -> Result<portcullis_gateway::config::Config, Failure> {
    use portcullis_gateway::config::*;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, api_key.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let raw = RawConfig {
        listen: Some(args.gateway_listen.clone()),
        admin_listen: Some(args.gateway_admin_listen.clone()),
        signing_key_file: Some(dir.join("gateway-key.pem").display().to_string()),
        // A developer watching the terminal sees each request's line at once.
        access_log: RawAccessLog {
            buffer_bytes: Some(0),
            flush_ms: None,
        },
        upstreams: vec![
            RawUpstream {
                name: "whoami".into(),
                targets: vec![demo.to_string()],
                ..Default::default()
            },
            RawUpstream {
                name: "iam".into(),
                targets: vec![iam.to_string()],
                ..Default::default()
            },
            RawUpstream {
                name: security::GATEWAY_AUDIENCE.into(),
                targets: vec![security.to_string()],
                ..Default::default()
            },
        ],
        consumers: vec![RawConsumer {
            name: "demo-partner".into(),
            scopes: vec!["orders:read".into(), security::READ_SCOPE.into()],
            roles: vec!["partner".into()],
            api_keys: vec![RawApiKey {
                digest: format!("sha256:{hex}"),
                expires_at: None,
            }],
            basic: None,
        }],
        authenticators: vec![
            RawAuthenticator {
                name: "keys".into(),
                kind: "api_key".into(),
                ..Default::default()
            },
            RawAuthenticator {
                name: "iam".into(),
                kind: "jwt".into(),
                issuer: Some(issuer.to_owned()),
                audience: Some("gateway".into()),
                ..Default::default()
            },
            RawAuthenticator {
                name: "browser".into(),
                kind: "session".into(),
                ..Default::default()
            },
        ],
        routes: vec![
            RawRoute {
                name: "whoami".into(),
                path_prefix: "/whoami".into(),
                upstream: "whoami".into(),
                auth: vec!["keys".into(), "iam".into()],
                require_scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            RawRoute {
                name: "demo-api".into(),
                path_prefix: "/api".into(),
                upstream: "whoami".into(),
                auth: vec!["browser".into()],
                require_scopes: vec!["orders:read".into()],
                ..Default::default()
            },
            RawRoute {
                name: "security-app".into(),
                path_prefix: "/api/security".into(),
                upstream: security::GATEWAY_AUDIENCE.into(),
                auth: vec!["browser".into()],
                require_scopes: vec![security::READ_SCOPE.into()],
                strip_prefix: true,
                ..Default::default()
            },
            RawRoute {
                name: "security".into(),
                path_prefix: "/security".into(),
                upstream: security::GATEWAY_AUDIENCE.into(),
                auth: vec!["keys".into(), "iam".into()],
                require_scopes: vec![security::READ_SCOPE.into()],
                strip_prefix: true,
                ..Default::default()
            },
            RawRoute {
                name: "demo-app".into(),
                path_prefix: "/".into(),
                upstream: "whoami".into(),
                auth: vec!["anonymous".into()],
                ..Default::default()
            },
            RawRoute {
                name: "iam".into(),
                path_prefix: "/iam".into(),
                upstream: "iam".into(),
                auth: vec!["anonymous".into()],
                strip_prefix: true,
                forward_credentials: true,
                ..Default::default()
            },
        ],
        bff: Some(RawBff {
            issuer: issuer.to_owned(),
            client_id: DEMO_BFF_CLIENT.into(),
            client_secret_env: Some(BFF_SECRET_VAR.into()),
            redirect_uri: format!("http://{}/auth/callback", args.gateway_listen),
            post_logout_redirect_uri: Some(format!("http://{}/", args.gateway_listen)),
            scopes: Some(
                [BFF_SCOPES, DEMO_SCOPES]
                    .concat()
                    .into_iter()
                    .map(Into::into)
                    .collect(),
            ),
            resources: vec!["orders-api".into(), security::AUDIENCE.into()],
            session_store: Some(format!(
                "sqlite://{}",
                dir.join("bff-sessions.db").display()
            )),
            session_key_file: Some(dir.join("bff-session.key").display().to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    raw.validate(&|v| (v == BFF_SECRET_VAR).then(|| bff_secret.to_owned()))
        .map_err(|e| Failure::Config(format!("dev gateway: {e}")))
}
