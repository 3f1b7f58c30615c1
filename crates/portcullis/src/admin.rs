//! `portcullis clients …`, `portcullis keys …` and `portcullis users …`:
//! clients of the admin API.

use crate::Failure;
use crate::cli::{
    AdminArgs, ClientFields, ClientsCommand, KeysCommand, Output, UserFields, UsersCommand,
};
use anyhow::{Context, anyhow};
use reqwest::Method;
use serde_json::{Map, Value, json};

struct Admin {
    http: reqwest::Client,
    base: String,
    token: String,
    output: Output,
}

impl Admin {
    fn new(args: AdminArgs) -> Result<Self, Failure> {
        let token = match args.admin_token {
            Some(t) => t,
            None => std::fs::read_to_string(".portcullis/admin-token")
                .map(|s| s.trim().to_owned())
                .map_err(|_| {
                    Failure::Config(
                        "no admin token: pass --admin-token or set PORTCULLIS_ADMIN_TOKEN".into(),
                    )
                })?,
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            http,
            base: args.admin_url.trim_end_matches('/').to_owned(),
            token,
            output: args.output,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .context("reading the admin API response")?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = value["error_description"]
                .as_str()
                .or(value["error"].as_str())
                .unwrap_or("request failed");
            return Err(Failure::Runtime(anyhow!(
                "admin API answered {status}: {msg}"
            )));
        }
        Ok(value)
    }
}

/// Repeated and space/comma-separated values as one list.
fn split(v: Vec<String>) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split([' ', ',']))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn fields_to_json(f: ClientFields, body: &mut Map<String, Value>) -> Result<(), Failure> {
    if let Some(n) = f.name {
        body.insert("name".into(), n.into());
    }
    for (key, v) in [
        ("allowed_scopes", f.scopes),
        ("default_scopes", f.default_scopes),
        ("allowed_audiences", f.audiences),
        ("default_audiences", f.default_audiences),
        ("grant_types", f.grant_types),
    ] {
        if !v.is_empty() {
            body.insert(key.into(), json!(split(v)));
        }
    }
    if let Some(path) = f.jwks_file {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?;
        let jwks: Value = serde_json::from_str(&text)
            .map_err(|e| Failure::Config(format!("{}: not JSON: {e}", path.display())))?;
        body.insert("jwks".into(), jwks);
    }
    if let Some(u) = f.jwks_uri {
        body.insert("jwks_uri".into(), u.into());
    }
    if let Some(t) = f.ttl {
        body.insert("access_token_ttl_secs".into(), t.into());
    }
    for (key, v) in [
        ("redirect_uris", f.redirect_uris),
        ("post_logout_redirect_uris", f.post_logout_redirect_uris),
    ] {
        if !v.is_empty() {
            body.insert(key.into(), json!(v));
        }
    }
    for (key, v) in [
        ("first_party", f.first_party),
        ("require_pkce", f.require_pkce),
        (
            "tls_client_certificate_bound_access_tokens",
            f.tls_bound_tokens,
        ),
    ] {
        if let Some(v) = v {
            body.insert(key.into(), v.into());
        }
    }
    for (key, v) in [
        ("token_endpoint_auth_method", f.auth_method),
        ("tls_client_auth_subject_dn", f.tls_subject_dn),
        ("tls_client_auth_san_dns", f.tls_san_dns),
        ("tls_client_auth_san_uri", f.tls_san_uri),
        ("tls_client_auth_san_ip", f.tls_san_ip),
        ("tls_client_auth_san_email", f.tls_san_email),
    ] {
        if let Some(v) = v {
            body.insert(key.into(), v.into());
        }
    }
    if !f.tls_cert_files.is_empty() {
        let mut pems = Vec::with_capacity(f.tls_cert_files.len());
        for path in &f.tls_cert_files {
            pems.push(
                std::fs::read_to_string(path)
                    .map_err(|e| Failure::Config(format!("{}: {e}", path.display())))?,
            );
        }
        body.insert("tls_client_certificates".into(), json!(pems));
    }
    Ok(())
}

fn list(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// Prints the array `v[key]` as a table, one row per element.
fn table_of(v: &Value, key: &str, headers: &[&str], row: impl Fn(&Value) -> Vec<String>) {
    let rows: Vec<Vec<String>> = v[key].as_array().into_iter().flatten().map(row).collect();
    table(headers, &rows);
}

fn print_client(v: &Value) {
    let row = |k: &str, val: String| println!("{k:<20} {val}");
    row("client_id", v["client_id"].as_str().unwrap_or("").into());
    row("name", v["name"].as_str().unwrap_or("").into());
    row("auth methods", list(&v["token_endpoint_auth_methods"]));
    row("grant types", list(&v["grant_types"]));
    row("allowed scopes", list(&v["allowed_scopes"]));
    row("default scopes", list(&v["default_scopes"]));
    row("allowed audiences", list(&v["allowed_audiences"]));
    row("default audiences", list(&v["default_audiences"]));
    if let Some(t) = v["access_token_ttl_secs"].as_u64() {
        row("token ttl (s)", t.to_string());
    }
    if let Some(u) = v["jwks_uri"].as_str() {
        row("jwks_uri", u.into());
    }
    if v["redirect_uris"].as_array().is_some_and(|a| !a.is_empty()) {
        row("redirect uris", list(&v["redirect_uris"]));
        row("post-logout uris", list(&v["post_logout_redirect_uris"]));
        row("first party", v["first_party"].to_string());
        row("require pkce", v["require_pkce"].to_string());
    }
    row("enabled", v["enabled"].to_string());
    if let Some(s) = v["client_secret"].as_str() {
        println!("\nclient_secret        {s}\n(shown once: store it now)");
    }
}

fn emit(output: Output, v: &Value, human: impl FnOnce(&Value)) {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        Output::Table => human(v),
    }
}

/// `portcullis clients …`.
pub async fn clients(args: AdminArgs, cmd: ClientsCommand) -> Result<(), Failure> {
    let admin = Admin::new(args)?;
    let out = admin.output;
    match cmd {
        ClientsCommand::Create {
            id,
            disabled,
            public,
            fields,
        } => {
            let mut body = Map::new();
            if public {
                body.insert("public".into(), true.into());
            }
            if let Some(id) = id {
                body.insert("client_id".into(), id.into());
            }
            if disabled {
                body.insert("enabled".into(), false.into());
            }
            fields_to_json(fields, &mut body)?;
            let v = admin
                .call(Method::POST, "/admin/clients", Some(Value::Object(body)))
                .await?;
            emit(out, &v, print_client);
        }
        ClientsCommand::List => {
            let v = admin.call(Method::GET, "/admin/clients", None).await?;
            emit(out, &v, |v| {
                let headers = [
                    "CLIENT_ID",
                    "NAME",
                    "AUTH",
                    "SCOPES",
                    "AUDIENCES",
                    "ENABLED",
                ];
                table_of(v, "clients", &headers, |c| {
                    vec![
                        c["client_id"].as_str().unwrap_or("").into(),
                        c["name"].as_str().unwrap_or("").into(),
                        list(&c["token_endpoint_auth_methods"]),
                        list(&c["allowed_scopes"]),
                        list(&c["allowed_audiences"]),
                        c["enabled"].to_string(),
                    ]
                });
            });
        }
        ClientsCommand::Show { id } => {
            let v = admin
                .call(Method::GET, &format!("/admin/clients/{id}"), None)
                .await?;
            emit(out, &v, print_client);
        }
        ClientsCommand::Update {
            id,
            enable,
            disable,
            fields,
        } => {
            let mut body = Map::new();
            if enable || disable {
                body.insert("enabled".into(), enable.into());
            }
            fields_to_json(fields, &mut body)?;
            let v = admin
                .call(
                    Method::PATCH,
                    &format!("/admin/clients/{id}"),
                    Some(Value::Object(body)),
                )
                .await?;
            emit(out, &v, print_client);
        }
        ClientsCommand::Delete { id } => {
            admin
                .call(Method::DELETE, &format!("/admin/clients/{id}"), None)
                .await?;
            emit(out, &json!({ "deleted": id }), |_| println!("deleted {id}"));
        }
        ClientsCommand::RotateSecret { id } => {
            let v = admin
                .call(
                    Method::POST,
                    &format!("/admin/clients/{id}/rotate-secret"),
                    None,
                )
                .await?;
            emit(out, &v, |v| {
                println!("client_id      {}", v["client_id"].as_str().unwrap_or(""));
                println!(
                    "client_secret  {}",
                    v["client_secret"].as_str().unwrap_or("")
                );
                println!("(shown once: store it now; the old secret no longer works)");
            });
        }
    }
    Ok(())
}

/// `portcullis keys …`.
pub async fn keys(args: AdminArgs, cmd: KeysCommand) -> Result<(), Failure> {
    let admin = Admin::new(args)?;
    let out = admin.output;
    let row = |k: &Value| {
        let t = |f: &str| {
            k[f].as_u64()
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        };
        vec![
            k["kid"].as_str().unwrap_or("").into(),
            k["alg"].as_str().unwrap_or("").into(),
            k["state"].as_str().unwrap_or("").into(),
            t("activate_at"),
            t("retire_at"),
            t("unpublish_at"),
        ]
    };
    let headers = [
        "KID",
        "ALG",
        "STATE",
        "ACTIVATE_AT",
        "RETIRE_AT",
        "UNPUBLISH_AT",
    ];
    match cmd {
        KeysCommand::List => {
            let v = admin.call(Method::GET, "/admin/keys", None).await?;
            emit(out, &v, |v| table_of(v, "keys", &headers, row));
        }
        KeysCommand::Rotate { alg } => {
            let body = alg
                .map(|a| json!({ "alg": a }))
                .unwrap_or_else(|| json!({}));
            let v = admin
                .call(Method::POST, "/admin/keys/rotate", Some(body))
                .await?;
            emit(out, &v, |v| {
                table(&headers, &[row(v)]);
                println!(
                    "\nThe new key is published now and signs from {} (unix time).",
                    v["activate_at"]
                );
            });
        }
    }
    Ok(())
}

// ----- Users ---------------------------------------------------------------

/// A user id or username, checked before it goes into a URL path.
fn user_path(user: &str, suffix: &str) -> Result<String, Failure> {
    let ok = !user.is_empty()
        && user != "."
        && user != ".."
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if !ok {
        return Err(Failure::Config(format!(
            "{user:?} is not a user id or username"
        )));
    }
    Ok(format!("/admin/users/{user}{suffix}"))
}

/// The first line of stdin, without its line ending.
fn password_from_stdin() -> Result<String, Failure> {
    let line = std::io::stdin()
        .lines()
        .next()
        .transpose()
        .context("reading the password from stdin")?
        .unwrap_or_default();
    if line.is_empty() {
        return Err(Failure::Config("no password on stdin".into()));
    }
    Ok(line)
}

fn user_fields_to_json(f: UserFields, body: &mut Map<String, Value>) {
    match f.email {
        Some(e) if e.is_empty() => body.insert("email".into(), Value::Null),
        Some(e) => body.insert("email".into(), e.into()),
        None => None,
    };
    if let Some(v) = f.email_verified {
        body.insert("email_verified".into(), v.into());
    }
    if let Some(n) = f.display_name {
        body.insert("display_name".into(), n.into());
    }
    for (key, v) in [("roles", f.roles), ("groups", f.groups)] {
        if !v.is_empty() {
            body.insert(key.into(), json!(split(v)));
        }
    }
}

fn print_user(v: &Value) {
    let row = |k: &str, val: String| println!("{k:<16} {val}");
    row("id", v["id"].as_str().unwrap_or("").into());
    row("username", v["username"].as_str().unwrap_or("").into());
    row(
        "display name",
        v["display_name"].as_str().unwrap_or("").into(),
    );
    row("email", v["email"].as_str().unwrap_or("-").into());
    row("email verified", v["email_verified"].to_string());
    row("roles", list(&v["roles"]));
    row("groups", list(&v["groups"]));
    row("enabled", v["enabled"].to_string());
    row("password", v["has_password"].to_string());
}

/// `portcullis users …`.
pub async fn users(args: AdminArgs, cmd: UsersCommand) -> Result<(), Failure> {
    let admin = Admin::new(args)?;
    let out = admin.output;
    match cmd {
        UsersCommand::Create {
            username,
            password_stdin,
            disabled,
            fields,
        } => {
            let mut body = Map::new();
            body.insert("username".into(), username.into());
            if disabled {
                body.insert("enabled".into(), false.into());
            }
            user_fields_to_json(fields, &mut body);
            if password_stdin {
                body.insert("password".into(), password_from_stdin()?.into());
            }
            let v = admin
                .call(Method::POST, "/admin/users", Some(Value::Object(body)))
                .await?;
            emit(out, &v, print_user);
        }
        UsersCommand::List => {
            let v = admin.call(Method::GET, "/admin/users", None).await?;
            emit(out, &v, |v| {
                let headers = ["USERNAME", "ID", "EMAIL", "ROLES", "GROUPS", "ENABLED"];
                table_of(v, "users", &headers, |u| {
                    vec![
                        u["username"].as_str().unwrap_or("").into(),
                        u["id"].as_str().unwrap_or("").into(),
                        u["email"].as_str().unwrap_or("-").into(),
                        list(&u["roles"]),
                        list(&u["groups"]),
                        u["enabled"].to_string(),
                    ]
                });
            });
        }
        UsersCommand::Show { user } => {
            let v = admin
                .call(Method::GET, &user_path(&user, "")?, None)
                .await?;
            emit(out, &v, print_user);
        }
        UsersCommand::Update {
            user,
            username,
            enable,
            disable,
            fields,
        } => {
            let mut body = Map::new();
            if let Some(n) = username {
                body.insert("username".into(), n.into());
            }
            if enable || disable {
                body.insert("enabled".into(), enable.into());
            }
            user_fields_to_json(fields, &mut body);
            let v = admin
                .call(
                    Method::PATCH,
                    &user_path(&user, "")?,
                    Some(Value::Object(body)),
                )
                .await?;
            emit(out, &v, print_user);
        }
        UsersCommand::Delete { user } => {
            admin
                .call(Method::DELETE, &user_path(&user, "")?, None)
                .await?;
            emit(out, &json!({ "deleted": user }), |_| {
                println!("deleted {user}")
            });
        }
        UsersCommand::SetPassword { user } => {
            let path = user_path(&user, "/password")?;
            let password = password_from_stdin()?;
            admin
                .call(Method::POST, &path, Some(json!({ "password": password })))
                .await?;
            emit(out, &json!({ "password_set": user }), |_| {
                println!("password set for {user}")
            });
        }
        UsersCommand::Consents { user } => {
            let v = admin
                .call(Method::GET, &user_path(&user, "/consents")?, None)
                .await?;
            emit(out, &v, |v| {
                table_of(v, "consents", &["CLIENT", "SCOPE", "GRANTED_AT"], |c| {
                    vec![
                        c["client_id"].as_str().unwrap_or("").into(),
                        c["scope"].as_str().unwrap_or("").into(),
                        c["granted_at"].to_string(),
                    ]
                })
            });
        }
        UsersCommand::RevokeConsent { user, client } => {
            if client.is_empty()
                || !client
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
            {
                return Err(Failure::Config(format!("{client:?} is not a client id")));
            }
            let path = user_path(&user, &format!("/consents/{client}"))?;
            admin.call(Method::DELETE, &path, None).await?;
            emit(
                out,
                &json!({ "consent_revoked": { "user": user, "client": client } }),
                |_| println!("consent of {user} to {client} withdrawn; its tokens are revoked"),
            );
        }
    }
    Ok(())
}

fn role_body(name: Option<String>, f: crate::cli::RoleFields) -> Value {
    let mut body = Map::new();
    if let Some(n) = name {
        body.insert("name".into(), n.into());
    }
    if let Some(d) = f.description {
        body.insert("description".into(), d.into());
    }
    for (k, v) in [
        ("scopes", f.scopes),
        ("groups", f.groups),
        ("clients", f.clients),
    ] {
        if let Some(v) = v {
            body.insert(k.into(), v.into());
        }
    }
    Value::Object(body)
}

fn role_path(name: &str) -> Result<String, Failure> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if !ok || name == "." || name == ".." {
        return Err(Failure::Config(format!("{name:?} is not a role name")));
    }
    Ok(format!("/admin/roles/{name}"))
}

fn print_role(v: &Value) {
    println!("name:        {}", v["name"].as_str().unwrap_or(""));
    println!("description: {}", v["description"].as_str().unwrap_or(""));
    println!("scopes:      {}", list(&v["scopes"]));
    println!("groups:      {}", list(&v["groups"]));
    println!("clients:     {}", list(&v["clients"]));
}

/// `portcullis roles …`.
pub async fn roles(args: AdminArgs, cmd: crate::cli::RolesCommand) -> Result<(), Failure> {
    use crate::cli::RolesCommand;
    let admin = Admin::new(args)?;
    let out = admin.output;
    match cmd {
        RolesCommand::Create { name, fields } => {
            let v = admin
                .call(
                    Method::POST,
                    "/admin/roles",
                    Some(role_body(Some(name), fields)),
                )
                .await?;
            emit(out, &v, print_role);
        }
        RolesCommand::List => {
            let v = admin.call(Method::GET, "/admin/roles", None).await?;
            emit(out, &v, |v| {
                table_of(
                    v,
                    "roles",
                    &["NAME", "SCOPES", "GROUPS", "CLIENTS", "DESCRIPTION"],
                    |r| {
                        vec![
                            r["name"].as_str().unwrap_or("").into(),
                            list(&r["scopes"]),
                            list(&r["groups"]),
                            list(&r["clients"]),
                            r["description"].as_str().unwrap_or("").into(),
                        ]
                    },
                )
            });
        }
        RolesCommand::Show { name } => {
            let v = admin.call(Method::GET, &role_path(&name)?, None).await?;
            emit(out, &v, print_role);
        }
        RolesCommand::Update { name, fields } => {
            let v = admin
                .call(
                    Method::PATCH,
                    &role_path(&name)?,
                    Some(role_body(None, fields)),
                )
                .await?;
            emit(out, &v, print_role);
        }
        RolesCommand::Delete { name } => {
            admin.call(Method::DELETE, &role_path(&name)?, None).await?;
            emit(out, &json!({ "deleted": name }), |_| {
                println!("deleted {name}")
            });
        }
    }
    Ok(())
}
