//! `portcullis policy check|test` as a user runs them, on the sample policy
//! set of crates/portcullis-policy/tests/fixtures.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../portcullis-policy/tests/fixtures")
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_decision_and_exits_1_when_denied() {
    let dir = fixtures().join("security");
    let dir = dir.to_str().unwrap();
    let resource = r#"{"type":"SecuritySystem","id":"s1","attrs":{"location":"berlin"}}"#;
    let ctx = r#"{"locations":["berlin"]}"#;
    let (code, out, _) = run(&[
        "policy",
        "check",
        "--dir",
        dir,
        "--principal",
        r#"{"id":"u1","roles":["operator"]}"#,
        "--action",
        "ArmSystem",
        "--resource",
        resource,
        "--context",
        ctx,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ALLOW") && out.contains("operators-arm-own-locations"),
        "{out}"
    );
    let (code, out, _) = run(&[
        "policy",
        "check",
        "--dir",
        dir,
        "--principal",
        r#"{"id":"u1","roles":["viewer"]}"#,
        "--action",
        "ArmSystem",
        "--resource",
        resource,
        "--context",
        ctx,
        "-o",
        "json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["allowed"], false);
    // Bad input is a usage error naming the flag.
    let (code, _, err) = run(&[
        "policy",
        "check",
        "--dir",
        dir,
        "--principal",
        "{",
        "--action",
        "ArmSystem",
        "--resource",
        resource,
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--principal"), "{err}");
}

#[test]
fn test_runs_a_file_of_expected_decisions() {
    let dir = fixtures().join("security");
    let cases = fixtures().join("security.cases.toml");
    let (code, out, err) = run(&[
        "policy",
        "test",
        "--dir",
        dir.to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("5 cases, 0 failed"), "{out}");

    // A wrong expectation fails the run and says why.
    let tmp = tempfile::tempdir().unwrap();
    let wrong = tmp.path().join("wrong.toml");
    let text = std::fs::read_to_string(&cases).unwrap().replacen(
        "expect = \"deny\"\npolicies = []",
        "expect = \"allow\"\npolicies = []",
        1,
    );
    std::fs::write(&wrong, text).unwrap();
    let (code, out, _) = run(&[
        "policy",
        "test",
        "--dir",
        dir.to_str().unwrap(),
        wrong.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        out.contains("not ok - a viewer may not arm: expected ALLOW"),
        "{out}"
    );
    assert!(out.contains("5 cases, 1 failed"), "{out}");

    // A broken policy set is a configuration error.
    for f in ["schema.cedarschema", "systems.cedar"] {
        std::fs::copy(dir.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("broken.cedar"), "forbid (").unwrap();
    let (code, _, err) = run(&[
        "policy",
        "test",
        "--dir",
        tmp.path().to_str().unwrap(),
        cases.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("broken.cedar"), "{err}");
}
