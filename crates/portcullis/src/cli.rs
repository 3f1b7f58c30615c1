//! The command line. Every server setting is also a `PORTCULLIS_*`
//! environment variable; flags win over the environment, which wins over the
//! config file, which wins over defaults.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Authenticate and authorize traffic between microservices.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Logging options.
#[derive(Debug, Clone, Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, global = true, env = "PORTCULLIS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. `info,portcullis::audit=warn`.
    #[arg(long, global = true, env = "PORTCULLIS_LOG", default_value = "info")]
    pub log: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The IAM (OAuth 2.0 authorization) server.
    Iam {
        #[command(subcommand)]
        command: IamCommand,
    },
    /// The gateway (authenticating reverse proxy).
    Gateway {
        #[command(subcommand)]
        command: GatewayCommand,
    },
    /// Generate API keys for gateway consumers.
    Apikeys {
        #[command(subcommand)]
        command: ApikeysCommand,
    },
    /// Start everything locally on an embedded database, with demo credentials.
    Dev(DevArgs),
    /// Manage OAuth clients through the admin API.
    Clients {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: ClientsCommand,
    },
    /// Manage token signing keys through the admin API.
    Keys {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage users (people who log in) through the admin API.
    Users {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Manage roles (RBAC: the scopes a role grants, the groups and clients
    /// that hold it) through the admin API.
    Roles {
        #[command(flatten)]
        admin: AdminArgs,
        #[command(subcommand)]
        command: RolesCommand,
    },
    /// The internal certificate authority: service certificates for mutual TLS.
    Ca {
        #[command(flatten)]
        ca: CaArgs,
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Get a token, or decode and verify one (debugging).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Evaluate and test Cedar authorization policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Get an access token with the client-credentials grant and print it.
    Get {
        /// The IAM server's issuer URL.
        #[arg(long, env = "PORTCULLIS_ISSUER")]
        issuer: String,
        /// Client id.
        #[arg(long)]
        client_id: String,
        /// Environment variable holding the client secret (never a flag).
        #[arg(long, default_value = "PORTCULLIS_CLIENT_SECRET")]
        client_secret_env: String,
        /// Scopes (space- or comma-separated).
        #[arg(long)]
        scope: Option<String>,
        /// Audiences (RFC 8707 resource), repeatable.
        #[arg(long)]
        resource: Vec<String>,
        /// Output format (json: the whole token response).
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Decode a JWT access token, verify it against its issuer's JWKS and say
    /// whether it is valid, and if not, why. Exits 1 when it is not.
    Inspect {
        /// The token; `-` or absent reads it from stdin.
        token: Option<String>,
        /// Verify against this issuer (default: the token's own `iss`, which
        /// proves only that the token is consistent with itself).
        #[arg(long)]
        issuer: Option<String>,
        /// Also require this audience.
        #[arg(long)]
        audience: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// Create a role.
    Create {
        /// Name: 1–64 of A-Z a-z 0-9 . _ - :
        name: String,
        #[command(flatten)]
        fields: RoleFields,
    },
    /// List roles.
    List,
    /// Show one role.
    Show {
        /// Role name.
        name: String,
    },
    /// Change a role (only the options given; a list replaces the old one).
    Update {
        /// Role name.
        name: String,
        #[command(flatten)]
        fields: RoleFields,
    },
    /// Delete a role.
    Delete {
        /// Role name.
        name: String,
    },
}

/// The settable fields of a role.
#[derive(Debug, Args)]
pub struct RoleFields {
    /// What the role is for.
    #[arg(long)]
    pub description: Option<String>,
    /// Scopes it grants (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub scopes: Option<Vec<String>>,
    /// Groups whose members hold it (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub groups: Option<Vec<String>>,
    /// Clients that hold it (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub clients: Option<Vec<String>>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Decide one request against a policy directory: prints the decision
    /// and the deciding policies; exits 1 when denied.
    Check {
        /// Policy directory (schema.cedarschema and *.cedar).
        #[arg(long)]
        dir: PathBuf,
        /// The principal, JSON: {"id", "client_id", "roles", "scopes", "actors", "auth_method"}.
        #[arg(long)]
        principal: String,
        /// The action name.
        #[arg(long)]
        action: String,
        /// The resource, JSON: {"type", "id", "attrs"}.
        #[arg(long)]
        resource: String,
        /// The context, a JSON object.
        #[arg(long, default_value = "{}")]
        context: String,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run a TOML file of requests and expected decisions (`[[case]]` with
    /// name, principal, action, resource, context, expect = "allow"|"deny",
    /// optional policies); exits 1 if any case fails. For CI of policy repos.
    Test {
        /// Policy directory.
        #[arg(long)]
        dir: PathBuf,
        /// The cases file.
        cases: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum IamCommand {
    /// Run the IAM server.
    Serve(ServeArgs),
}

/// `iam serve` settings (each overrides the config file).
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Config file (TOML).
    #[arg(long, short, env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// `production` or `development`.
    #[arg(long, env = "PORTCULLIS_MODE")]
    pub mode: Option<String>,
    /// Public listener, host:port.
    #[arg(long, env = "PORTCULLIS_LISTEN")]
    pub listen: Option<String>,
    /// Admin API listener, host:port.
    #[arg(long, env = "PORTCULLIS_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Issuer URL.
    #[arg(long, env = "PORTCULLIS_ISSUER")]
    pub issuer: Option<String>,
    /// Database URL (sqlite://PATH).
    #[arg(long, env = "PORTCULLIS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Master key: 32 bytes, base64.
    #[arg(long, env = "PORTCULLIS_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,
    /// Admin API bearer token.
    #[arg(long, env = "PORTCULLIS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// ES256, EdDSA, RS256 or PS256.
    #[arg(long, env = "PORTCULLIS_SIGNING_ALG")]
    pub signing_alg: Option<String>,
    /// Default access-token lifetime, seconds.
    #[arg(long, env = "PORTCULLIS_ACCESS_TOKEN_TTL_SECS")]
    pub access_token_ttl_secs: Option<u64>,
    /// Maximum access-token lifetime, seconds.
    #[arg(long, env = "PORTCULLIS_MAX_ACCESS_TOKEN_TTL_SECS")]
    pub max_access_token_ttl_secs: Option<u64>,
    /// Delay between publishing a rotated key and signing with it, seconds.
    #[arg(long, env = "PORTCULLIS_KEY_PUBLISH_DELAY_SECS")]
    pub key_publish_delay_secs: Option<u64>,
    /// JWKS Cache-Control max-age, seconds.
    #[arg(long, env = "PORTCULLIS_JWKS_MAX_AGE_SECS")]
    pub jwks_max_age_secs: Option<u64>,
    /// How often keys are re-read from the database, seconds.
    #[arg(long, env = "PORTCULLIS_KEY_REFRESH_SECS")]
    pub key_refresh_secs: Option<u64>,
    /// Longest accepted client-assertion lifetime, seconds.
    #[arg(long, env = "PORTCULLIS_CLIENT_ASSERTION_MAX_LIFETIME_SECS")]
    pub client_assertion_max_lifetime_secs: Option<u64>,
    /// Client cache lifetime, seconds.
    #[arg(long, env = "PORTCULLIS_CLIENT_CACHE_TTL_SECS")]
    pub client_cache_ttl_secs: Option<u64>,
    /// Largest accepted request body, bytes.
    #[arg(long, env = "PORTCULLIS_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Drain time on SIGTERM, seconds.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,
    /// argon2id memory per password hash, KiB (`[passwords] memory_kib`).
    #[arg(long, env = "PORTCULLIS_PASSWORD_MEMORY_KIB")]
    pub password_memory_kib: Option<u32>,
    /// argon2id iterations (`[passwords] iterations`).
    #[arg(long, env = "PORTCULLIS_PASSWORD_ITERATIONS")]
    pub password_iterations: Option<u32>,
    /// argon2id parallelism (`[passwords] parallelism`).
    #[arg(long, env = "PORTCULLIS_PASSWORD_PARALLELISM")]
    pub password_parallelism: Option<u32>,
}

/// `dev` settings.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the database and generated secrets live.
    #[arg(long, env = "PORTCULLIS_DEV_DIR", default_value = ".portcullis")]
    pub data_dir: PathBuf,
    /// Public listener.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: String,
    /// Admin listener.
    #[arg(long, default_value = "127.0.0.1:9001")]
    pub admin_listen: String,
    /// Gateway listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub gateway_listen: String,
    /// Gateway admin listener (its JWKS, metrics).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub gateway_admin_listen: String,
    /// Demo service listener.
    #[arg(long, default_value = "127.0.0.1:9200")]
    pub demo_listen: String,
    /// The demo customer service's listener.
    #[arg(long, default_value = "127.0.0.1:9201")]
    pub customers_listen: String,
    /// The demo security-system service's listener.
    #[arg(long, default_value = "127.0.0.1:9202")]
    pub security_listen: String,
}

/// How CLI commands reach the admin API.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Admin API base URL.
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_ADMIN_URL",
        default_value = "http://127.0.0.1:9001"
    )]
    pub admin_url: String,
    /// Admin bearer token (defaults to ./.portcullis/admin-token when present).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// CLI output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The API's JSON.
    Json,
}

/// Client fields shared by create and update.
#[derive(Debug, Default, Args)]
pub struct ClientFields {
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Allowed scope (repeat, or space-separated).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Default scope, granted when none is requested (repeat).
    #[arg(long = "default-scope")]
    pub default_scopes: Vec<String>,
    /// Allowed audience / resource (repeat).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// Default audience (repeat).
    #[arg(long = "default-audience")]
    pub default_audiences: Vec<String>,
    /// Allowed grant type (repeat).
    #[arg(long = "grant-type")]
    pub grant_types: Vec<String>,
    /// JWK Set file: the client authenticates with private_key_jwt.
    #[arg(long, conflicts_with = "jwks_uri")]
    pub jwks_file: Option<PathBuf>,
    /// JWK Set URL: the client authenticates with private_key_jwt.
    #[arg(long)]
    pub jwks_uri: Option<String>,
    /// Access-token lifetime override, seconds (0 clears it).
    #[arg(long)]
    pub ttl: Option<u64>,
    /// Redirect URI for browser logins (repeat; replaces the list).
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to (repeat; replaces the list).
    #[arg(long = "post-logout-redirect-uri")]
    pub post_logout_redirect_uris: Vec<String>,
    /// First party: skip the consent screen (true/false).
    #[arg(long)]
    pub first_party: Option<bool>,
    /// Require PKCE (true/false; always on for public clients).
    #[arg(long)]
    pub require_pkce: Option<bool>,
    /// `tls_client_auth` or `self_signed_tls_client_auth` (RFC 8705): the
    /// client authenticates with its TLS client certificate.
    #[arg(long, value_parser = ["tls_client_auth", "self_signed_tls_client_auth"])]
    pub auth_method: Option<String>,
    /// tls_client_auth: the certificate's subject DN (RFC 4514, e.g. `CN=billing,O=Example`).
    #[arg(long)]
    pub tls_subject_dn: Option<String>,
    /// tls_client_auth: a DNS SAN of the certificate.
    #[arg(long)]
    pub tls_san_dns: Option<String>,
    /// tls_client_auth: a URI SAN of the certificate (e.g. a SPIFFE ID).
    #[arg(long)]
    pub tls_san_uri: Option<String>,
    /// tls_client_auth: an IP address SAN of the certificate.
    #[arg(long)]
    pub tls_san_ip: Option<String>,
    /// tls_client_auth: an email SAN of the certificate.
    #[arg(long)]
    pub tls_san_email: Option<String>,
    /// self_signed_tls_client_auth: a PEM file with the client's certificate (repeat).
    #[arg(long = "tls-cert-file")]
    pub tls_cert_files: Vec<PathBuf>,
    /// Bind every access token to the client's TLS certificate (true/false).
    #[arg(long)]
    pub tls_bound_tokens: Option<bool>,
}

#[derive(Debug, Subcommand)]
pub enum ClientsCommand {
    /// Register a client; prints its secret once.
    Create {
        /// Client id (generated if omitted).
        #[arg(long)]
        id: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        /// A public client (browser or native app): no secret, the
        /// authorization-code flow with PKCE only.
        #[arg(long, conflicts_with_all = ["jwks_file", "jwks_uri"])]
        public: bool,
        #[command(flatten)]
        fields: ClientFields,
    },
    /// List clients.
    List,
    /// Show one client.
    Show {
        /// Client id.
        id: String,
    },
    /// Change a client (only the options given).
    Update {
        /// Client id.
        id: String,
        /// Enable the client.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable the client (revokes its tokens).
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        fields: ClientFields,
    },
    /// Delete a client (revokes its tokens).
    Delete {
        /// Client id.
        id: String,
    },
    /// Replace a client's secret; prints the new one once.
    RotateSecret {
        /// Client id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Show signing keys and their states.
    List,
    /// Staged rotation: publish a new key now, sign with it after the publish delay.
    Rotate {
        /// Algorithm of the new key (defaults to the configured one).
        #[arg(long)]
        alg: Option<String>,
    },
}

/// User fields shared by create and update.
#[derive(Debug, Default, Args)]
pub struct UserFields {
    /// Email address (`--email ''` removes it on update).
    #[arg(long)]
    pub email: Option<String>,
    /// Whether the email address is verified.
    #[arg(long)]
    pub email_verified: Option<bool>,
    /// Display name (defaults to the username).
    #[arg(long)]
    pub display_name: Option<String>,
    /// Role (repeat, or space/comma-separated; replaces the list; `--role ''` clears it).
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Group (repeat, or space/comma-separated; replaces the list; `--group ''` clears it).
    #[arg(long = "group")]
    pub groups: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create a user.
    Create {
        /// Username: 1–64 of A-Z a-z 0-9 . _ @ -, case-insensitive.
        username: String,
        /// Read the initial password from stdin (its first line).
        #[arg(long)]
        password_stdin: bool,
        /// Create the user disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        fields: UserFields,
    },
    /// List users.
    List,
    /// Show one user.
    Show {
        /// User id (u_…) or username.
        user: String,
    },
    /// Change a user (only the options given).
    Update {
        /// User id (u_…) or username.
        user: String,
        /// New username.
        #[arg(long)]
        username: Option<String>,
        /// Enable the user.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Disable the user (they can no longer log in).
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        fields: UserFields,
    },
    /// Delete a user.
    Delete {
        /// User id (u_…) or username.
        user: String,
    },
    /// Set a user's password, read from stdin (its first line); never from
    /// the command line, where other users of the machine could read it.
    SetPassword {
        /// User id (u_…) or username.
        user: String,
    },
    /// List what a user approved for third-party clients.
    Consents {
        /// User id (u_…) or username.
        user: String,
    },
    /// Withdraw a user's consent to a client; also revokes the user's
    /// refresh and access tokens of that client.
    RevokeConsent {
        /// User id (u_…) or username.
        user: String,
        /// Client id.
        client: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Run the gateway. SIGHUP or a change to the file reloads it; a bad
    /// file is refused and the running configuration stays.
    Serve(GatewayArgs),
    /// Hash a password (read from stdin) as argon2id for `[consumers.basic]`.
    HashPassword,
}

/// `gateway serve` settings.
#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Config file (TOML).
    #[arg(long, short, env = "PORTCULLIS_GATEWAY_CONFIG")]
    pub config: PathBuf,
    /// Proxy listener (overrides the file).
    #[arg(long, env = "PORTCULLIS_GATEWAY_LISTEN")]
    pub listen: Option<String>,
    /// Admin listener (overrides the file).
    #[arg(long, env = "PORTCULLIS_GATEWAY_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// Drain time on SIGTERM, seconds.
    #[arg(long, env = "PORTCULLIS_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum ApikeysCommand {
    /// Generate a key: prints it once, and the digest to declare in gateway.toml.
    Create {
        /// Consumer the key belongs to.
        #[arg(long)]
        consumer: String,
        /// Days until it expires.
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
}

/// Where the CA lives and how its keys are unsealed.
#[derive(Debug, Clone, Args)]
pub struct CaArgs {
    /// CA directory (certificates, sealed keys, index, CRL).
    #[arg(
        long,
        global = true,
        env = "PORTCULLIS_CA_DIR",
        default_value = ".portcullis/ca"
    )]
    pub dir: PathBuf,
    /// Name of the environment variable holding the master key (32 bytes,
    /// base64) that seals the CA keys; never the key itself.
    #[arg(long, global = true, default_value = "PORTCULLIS_MASTER_KEY")]
    pub master_key_env: String,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create the root and intermediate CA in --dir.
    Init {
        /// SPIFFE trust domain, e.g. `prod.example.org`.
        #[arg(long)]
        trust_domain: String,
        /// How long each CRL is valid (its nextUpdate), in minutes: from 5
        /// to 43200 (30 days). Kept in the CA's index; `ca crl` can change it.
        #[arg(long, default_value_t = 60)]
        crl_validity_minutes: u64,
    },
    /// Issue a service certificate (SPIFFE ID spiffe://TRUST_DOMAIN/SERVICE).
    Issue {
        /// Service name: the SPIFFE ID path, e.g. `billing` or `ns/prod/billing`.
        #[arg(long)]
        service: String,
        /// DNS names (or IP addresses) for the certificate, comma-separated.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// Lifetime in hours (at most 90 days).
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
        /// Certify the key of this PKCS#10 CSR (PEM) instead of generating
        /// one; only its public key is used.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Where to write cert.pem (leaf + intermediate), key.pem (unless
        /// --csr) and ca.pem (the root to trust).
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// Revoke a certificate and publish a new CRL.
    Revoke {
        /// Serial number (hex; colons allowed).
        serial: String,
        /// RFC 5280 reason: unspecified, keyCompromise, affiliationChanged,
        /// superseded, cessationOfOperation, privilegeWithdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Sign a fresh CRL and write it to DIR/crl.pem.
    Crl {
        /// Change how long this and later CRLs are valid, in minutes (5 to
        /// 43200); without it, the CA's current validity.
        #[arg(long)]
        validity_minutes: Option<u64>,
    },
    /// List issued certificates.
    List,
    /// Serve the current CRL over HTTP (GET /crl.pem), renewing it as it
    /// ages; with --renew-listen, also the certificate renewal endpoint.
    #[command(alias = "serve")]
    ServeCrl {
        /// Listener, host:port.
        #[arg(long, default_value = "127.0.0.1:9300")]
        listen: String,
        /// Also serve `POST /v1/renew` here, over mutual TLS: a service
        /// presents its current, unrevoked certificate and sends a CSR; the
        /// new certificate keeps the presented one's SPIFFE ID and DNS names.
        #[arg(long, requires_all = ["tls_cert", "tls_key"])]
        renew_listen: Option<String>,
        /// The renewal listener's certificate chain (PEM), e.g. issued with
        /// `ca issue --service ca --dns ca.internal`.
        #[arg(long)]
        tls_cert: Option<std::path::PathBuf>,
        /// The renewal listener's private key (PEM).
        #[arg(long)]
        tls_key: Option<std::path::PathBuf>,
        /// Lifetime of renewed certificates, in hours (at most 90 days).
        #[arg(long, default_value_t = 24)]
        renew_ttl_hours: u64,
    },
}
