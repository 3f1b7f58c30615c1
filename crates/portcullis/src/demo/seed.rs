//! What `portcullis dev` seeds: the demo people, their roles, the
//! customers and locations they work at, and the alarm systems there.

use super::customers::{CustomerSeed, EmployeeSeed};
use super::security::{ARM_SCOPE, READ_SCOPE, SystemSeed};
use anyhow::Context;
use serde_json::{Value, json};

/// The operator: may arm and disarm at her customer's locations.
pub const ALICE: &str = "alice";
/// The viewer: may only look, at another customer.
pub const BOB: &str = "bob";
/// The API client that is Acme's monitoring integration (role `viewer`).
pub const MONITOR_CLIENT: &str = "demo-service";
/// The gateway consumer (API key) that is Globex's alarm-receiving centre.
pub const PARTNER_CONSUMER: &str = "demo-partner";
/// The security service's client at the IAM server.
pub const SECURITY_CLIENT: &str = "security-service";

/// Two customers, each with its locations.
pub const CUSTOMERS: &[CustomerSeed] = &[
    CustomerSeed {
        id: "acme",
        name: "Acme Logistics",
        locations: &[
            ("acme-berlin", "Berlin warehouse"),
            ("acme-hamburg", "Hamburg depot"),
        ],
    },
    CustomerSeed {
        id: "globex",
        name: "Globex Retail",
        locations: &[("globex-paris", "Paris store")],
    },
];

/// The alarm systems, one or two per location.
pub const SYSTEMS: &[SystemSeed] = &[
    ("sys-berlin-dock", "acme-berlin", "Loading dock"),
    ("sys-berlin-office", "acme-berlin", "Office floor"),
    ("sys-hamburg-gate", "acme-hamburg", "Main gate"),
    ("sys-paris-front", "globex-paris", "Shop front"),
];

/// The employees of the customers: `alice_sub` and `bob_sub` are the
/// people's ids at the IAM server (their token `sub`).
pub fn employees(alice_sub: &str, bob_sub: &str) -> Vec<EmployeeSeed> {
    vec![
        EmployeeSeed {
            subject: alice_sub.into(),
            customer: "acme",
            name: "Alice".into(),
            kind: "person",
            role: "operator",
        },
        EmployeeSeed {
            subject: bob_sub.into(),
            customer: "globex",
            name: "Bob".into(),
            kind: "person",
            role: "viewer",
        },
        EmployeeSeed {
            subject: MONITOR_CLIENT.into(),
            customer: "acme",
            name: "Acme monitoring (API client)".into(),
            kind: "client",
            role: "viewer",
        },
        EmployeeSeed {
            subject: PARTNER_CONSUMER.into(),
            customer: "globex",
            name: "Globex alarm centre (API key)".into(),
            kind: "consumer",
            role: "viewer",
        },
    ]
}

/// The roles (RBAC at the IAM server): which scopes each grants, and the
/// clients that hold it. People hold theirs through their user record.
fn roles() -> Vec<Value> {
    let read = [READ_SCOPE, super::customers::READ_SCOPE];
    vec![
        json!({
            "name": "operator",
            "description": "Arms and disarms the alarm systems at their customer's locations",
            "scopes": [read[0], read[1], ARM_SCOPE],
            "groups": [],
            "clients": [],
        }),
        json!({
            "name": "viewer",
            "description": "Sees the alarm systems at their customer's locations",
            "scopes": read,
            "groups": [],
            "clients": [MONITOR_CLIENT],
        }),
    ]
}

/// Creates (or brings up to date) the roles through the admin API, and
/// returns the IAM ids of [`ALICE`] and [`BOB`].
pub async fn iam(admin: &str, token: &str) -> anyhow::Result<(String, String)> {
    let http = reqwest::Client::new();
    for role in roles() {
        let r = http
            .post(format!("{admin}/admin/roles"))
            .bearer_auth(token)
            .json(&role)
            .send()
            .await
            .context("creating a demo role")?;
        if r.status() == reqwest::StatusCode::CONFLICT {
            let mut patch = role.clone();
            let name = patch["name"].as_str().unwrap_or_default().to_owned();
            if let Some(o) = patch.as_object_mut() {
                o.remove("name");
            }
            let r = http
                .patch(format!("{admin}/admin/roles/{name}"))
                .bearer_auth(token)
                .json(&patch)
                .send()
                .await
                .context("updating a demo role")?;
            anyhow::ensure!(
                r.status().is_success(),
                "updating role {name}: {}",
                r.status()
            );
        } else {
            anyhow::ensure!(r.status().is_success(), "creating a role: {}", r.status());
        }
    }
    let mut ids = Vec::new();
    for user in [ALICE, BOB] {
        let v: Value = http
            .get(format!("{admin}/admin/users/{user}"))
            .bearer_auth(token)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("reading a demo user")?
            .json()
            .await
            .context("reading a demo user")?;
        ids.push(v["id"].as_str().context("a user without an id")?.to_owned());
    }
    let bob = ids.pop().unwrap_or_default();
    let alice = ids.pop().unwrap_or_default();
    Ok((alice, bob))
}

/// Writes the demo policies into `dir` unless it already has a schema
/// (so edits made there survive restarts).
pub fn policies(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.join("schema.cedarschema").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [
        (
            "schema.cedarschema",
            include_str!("../../assets/policies/schema.cedarschema"),
        ),
        (
            "systems.cedar",
            include_str!("../../assets/policies/systems.cedar"),
        ),
    ] {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    Ok(())
}
