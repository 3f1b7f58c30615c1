//! `portcullis token get|inspect`: a token from the command line, and what a
//! token says and whether it holds (for debugging).

use crate::Failure;
use crate::cli::{Output, TokenCommand};
use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use portcullis_core::jose::TokenVerifier;
use serde_json::Value;
use std::io::Read;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// A JWT segment's JSON, unverified.
fn segment(token: &str, n: usize) -> Option<Value> {
    let part = token.split('.').nth(n)?;
    serde_json::from_slice(&B64.decode(part).ok()?).ok()
}

async fn get_json(url: &str) -> Result<Value, Failure> {
    let r = http()
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    if !r.status().is_success() {
        return Err(Failure::Runtime(anyhow::anyhow!(
            "GET {url}: {}",
            r.status()
        )));
    }
    Ok(r.json()
        .await
        .with_context(|| format!("GET {url}: not JSON"))?)
}

fn now() -> u64 {
    portcullis_core::Clock::now(&portcullis_core::SystemClock)
}

/// Runs a `token` subcommand.
pub async fn run(command: TokenCommand) -> Result<(), Failure> {
    match command {
        TokenCommand::Get {
            issuer,
            client_id,
            client_secret_env,
            scope,
            resource,
            output,
        } => {
            let secret = std::env::var(&client_secret_env).map_err(|_| {
                Failure::Config(format!(
                    "the client secret is read from ${client_secret_env}, which is not set"
                ))
            })?;
            let meta = get_json(&format!(
                "{}/.well-known/oauth-authorization-server",
                issuer.trim_end_matches('/')
            ))
            .await?;
            let endpoint = meta["token_endpoint"].as_str().ok_or_else(|| {
                Failure::Runtime(anyhow::anyhow!("discovery has no token_endpoint"))
            })?;
            let mut form = vec![("grant_type", "client_credentials".to_owned())];
            if let Some(s) = scope {
                form.push(("scope", s.replace(',', " ")));
            }
            for r in resource {
                form.push(("resource", r));
            }
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let r = http()
                .post(endpoint)
                .basic_auth(enc(&client_id), Some(enc(&secret)))
                .form(&form)
                .send()
                .await
                .context("token request")?;
            let status = r.status();
            let body: Value = r.json().await.context("token response: not JSON")?;
            if !status.is_success() {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "the server refused: {} {}",
                    body["error"].as_str().unwrap_or("?"),
                    body["error_description"].as_str().unwrap_or("")
                )));
            }
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                ),
                Output::Table => println!("{}", body["access_token"].as_str().unwrap_or("")),
            }
            Ok(())
        }
        TokenCommand::Inspect {
            token,
            issuer,
            audience,
        } => {
            let token = match token.as_deref() {
                Some(t) if t != "-" => t.trim().to_owned(),
                _ => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .context("reading the token from stdin")?;
                    s.trim().to_owned()
                }
            };
            let (Some(header), Some(claims)) = (segment(&token, 0), segment(&token, 1)) else {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "not a JWT: three base64url JSON segments expected"
                )));
            };
            println!(
                "header: {}",
                serde_json::to_string_pretty(&header).unwrap_or_default()
            );
            println!(
                "claims: {}",
                serde_json::to_string_pretty(&claims).unwrap_or_default()
            );
            let t = now();
            if let Some(exp) = claims["exp"].as_u64() {
                if exp > t {
                    println!("expires in {} s", exp - t);
                } else {
                    println!("expired {} s ago", t - exp);
                }
            }
            let pinned = issuer.is_some();
            let Some(iss) = issuer.or_else(|| claims["iss"].as_str().map(str::to_owned)) else {
                return Err(Failure::Runtime(anyhow::anyhow!(
                    "INVALID: no issuer to verify against"
                )));
            };
            if !pinned {
                println!(
                    "note: verified against the token's own iss ({iss}); pass --issuer to pin it"
                );
            }
            let base = iss.trim_end_matches('/');
            let jwks_uri =
                match get_json(&format!("{base}/.well-known/openid-configuration")).await {
                    Ok(m) => m["jwks_uri"].as_str().map(str::to_owned),
                    Err(_) => None,
                }
                .unwrap_or_else(|| format!("{base}/.well-known/jwks.json"));
            let jwks = get_json(&jwks_uri).await?;
            let keys = jwks["keys"].as_array().cloned().unwrap_or_default();
            match TokenVerifier::new(iss.clone(), &keys, 0).verify(&token, t) {
                Ok(c) if audience.as_deref().is_some_and(|a| !c.aud.contains(a)) => {
                    println!(
                        "INVALID: the audience is not {:?}",
                        audience.unwrap_or_default()
                    );
                    Err(Failure::Runtime(anyhow::anyhow!("invalid token")))
                }
                Ok(_) => {
                    println!(
                        "VALID: signature by a key of {jwks_uri}, issuer, type and times check out"
                    );
                    Ok(())
                }
                Err(e) => {
                    println!("INVALID: {e}");
                    Err(Failure::Runtime(anyhow::anyhow!("invalid token")))
                }
            }
        }
    }
}
