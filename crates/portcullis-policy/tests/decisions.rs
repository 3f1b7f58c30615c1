//! The decision matrix of the sample policy set (tests/fixtures/security),
//! loading errors, and hot reload.

#![allow(clippy::unwrap_used)]

use portcullis_policy::{PolicyEngine, PolicyError, PolicyStore, Principal, Resource};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/security")
}

fn person(roles: &[&str], actors: &[&str]) -> Principal {
    Principal {
        id: "u_alice".into(),
        client_id: "web".into(),
        roles: roles.iter().map(|s| (*s).into()).collect(),
        scopes: vec!["openid".into()],
        actors: actors.iter().map(|s| (*s).into()).collect(),
        auth_method: "jwt".into(),
    }
}

fn system(location: &str) -> Resource {
    Resource::new("SecuritySystem", "sys-1").attr("location", location)
}

fn at(locations: &[&str]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("locations".into(), json!(locations));
    m
}

/// Name, who, action, resource, context, allowed, deciding policies.
type Case<'a> = (
    &'a str,
    &'a Principal,
    &'a str,
    Resource,
    &'a Map<String, Value>,
    bool,
    Vec<&'a str>,
);

#[test]
fn the_allow_deny_matrix() {
    let e = PolicyEngine::load(&fixtures()).unwrap();
    assert_eq!(e.len(), 5);
    let viewer = person(&["viewer"], &[]);
    let operator = person(&["operator"], &[]);
    let berlin = at(&["berlin"]);
    let frozen = at(&["frozen"]);
    // (who, action, resource, context, allowed, deciding policies)
    let cases: Vec<Case> = vec![
        (
            "read own",
            &viewer,
            "ReadSystem",
            system("berlin"),
            &berlin,
            true,
            vec!["read-own-locations"],
        ),
        (
            "read elsewhere: default deny",
            &viewer,
            "ReadSystem",
            system("paris"),
            &berlin,
            false,
            vec![],
        ),
        (
            "viewer arms: no permit",
            &viewer,
            "ArmSystem",
            system("berlin"),
            &berlin,
            false,
            vec![],
        ),
        (
            "operator arms own",
            &operator,
            "ArmSystem",
            system("berlin"),
            &berlin,
            true,
            vec!["operators-arm-own-locations"],
        ),
        (
            "operator arms elsewhere",
            &operator,
            "ArmSystem",
            system("paris"),
            &berlin,
            false,
            vec![],
        ),
        (
            "forbid beats permit",
            &operator,
            "ArmSystem",
            system("frozen"),
            &frozen,
            false,
            vec!["frozen-site"],
        ),
        (
            "unknown action",
            &operator,
            "Explode",
            system("berlin"),
            &berlin,
            false,
            vec![],
        ),
    ];
    for (name, who, action, res, ctx, allowed, policies) in cases {
        let d = e.decide(who, action, &res, ctx);
        assert_eq!(d.allowed, allowed, "{name}: {d:?}");
        assert_eq!(d.policies, policies, "{name}");
    }
}

#[test]
fn the_acting_service_counts_as_well_as_the_person() {
    let e = PolicyEngine::load(&fixtures()).unwrap();
    let berlin = at(&["berlin"]);
    let direct = e.decide(
        &person(&["operator"], &["orders"]),
        "ArmSystem",
        &system("berlin"),
        &berlin,
    );
    assert!(direct.allowed, "an operator through the orders service");
    let via = person(&["operator"], &["reporting", "orders"]);
    let d = e.decide(&via, "ArmSystem", &system("berlin"), &berlin);
    assert!(!d.allowed);
    assert_eq!(d.policies, ["no-arming-via-reporting"]);
    assert!(
        e.decide(&via, "ReadSystem", &system("berlin"), &berlin)
            .allowed,
        "reading is fine"
    );
    assert_eq!(
        Principal::actors_of(Some(&json!({"sub": "reporting", "act": {"sub": "orders"}}))),
        ["reporting", "orders"]
    );
}

#[test]
fn missing_attributes_and_bad_values_deny() {
    let e = PolicyEngine::load(&fixtures()).unwrap();
    let bare = Resource::new("SecuritySystem", "sys-1");
    let d = e.decide(
        &person(&["operator"], &[]),
        "ReadSystem",
        &bare,
        &at(&["berlin"]),
    );
    assert!(!d.allowed);
    assert!(
        !d.errors.is_empty(),
        "the failed evaluation is reported: {d:?}"
    );
    // No context at all.
    let d = e.decide(
        &person(&[], &[]),
        "ReadSystem",
        &system("berlin"),
        &Map::new(),
    );
    assert!(!d.allowed);
    // A null attribute is not a Cedar value: refused before evaluation.
    let d = e.decide(
        &person(&[], &[]),
        "ReadSystem",
        &Resource::new("SecuritySystem", "s").attr("location", Value::Null),
        &at(&["berlin"]),
    );
    assert!(!d.allowed && d.errors[0].contains("null"), "{d:?}");
    // A resource type the schema does not know.
    let d = e.decide(
        &person(&[], &[]),
        "ReadSystem",
        &Resource::new("Bad Type", "x"),
        &at(&[]),
    );
    assert!(!d.allowed);
}

fn copy_fixtures(to: &Path) {
    for f in ["schema.cedarschema", "systems.cedar", "guards.cedar"] {
        std::fs::copy(fixtures().join(f), to.join(f)).unwrap();
    }
}

#[test]
fn sets_that_do_not_parse_or_validate_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixtures(dir.path());
    std::fs::write(
        dir.path().join("typo.cedar"),
        "permit (principal, action, resource) when { principal.rolez.contains(\"x\") };",
    )
    .unwrap();
    let e = PolicyEngine::load(dir.path()).unwrap_err();
    assert!(matches!(e, PolicyError::Invalid(_)), "{e}");
    assert!(e.to_string().contains("typo.cedar"), "{e}");
    std::fs::write(
        dir.path().join("typo.cedar"),
        "permit (principal action resource);",
    )
    .unwrap();
    let e = PolicyEngine::load(dir.path()).unwrap_err();
    assert!(
        matches!(&e, PolicyError::Parse { path, .. } if path == "typo.cedar"),
        "{e}"
    );
    std::fs::remove_file(dir.path().join("typo.cedar")).unwrap();
    std::fs::remove_file(dir.path().join("schema.cedarschema")).unwrap();
    let e = PolicyEngine::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("schema.cedarschema"), "{e}");
}

#[tokio::test]
async fn a_bad_reload_keeps_the_old_set_and_a_good_one_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixtures(dir.path());
    let store = Arc::new(PolicyStore::open(dir.path()).unwrap());
    let viewer = person(&["viewer"], &[]);
    let berlin = at(&["berlin"]);
    assert!(
        store
            .decide(&viewer, "ReadSystem", &system("berlin"), &berlin)
            .allowed
    );
    assert!(store.reload_if_changed().is_none(), "nothing changed");

    // Broken: refused, the old set decides.
    std::fs::write(dir.path().join("systems.cedar"), "permit (").unwrap();
    assert!(matches!(store.reload_if_changed(), Some(Err(_))));
    assert!(
        store
            .decide(&viewer, "ReadSystem", &system("berlin"), &berlin)
            .allowed
    );

    // Fixed, and stricter: picked up by the watcher without a restart.
    let watcher = store.watch(std::time::Duration::from_millis(50));
    std::fs::write(
        dir.path().join("systems.cedar"),
        "@id(\"operators-only\") permit (principal, action == Action::\"ReadSystem\", resource) when { principal.roles.contains(\"operator\") };",
    )
    .unwrap();
    let mut denied = false;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if !store
            .decide(&viewer, "ReadSystem", &system("berlin"), &berlin)
            .allowed
        {
            denied = true;
            break;
        }
    }
    watcher.abort();
    assert!(denied, "the new set was picked up");
    assert_eq!(store.engine().len(), 4);
}
