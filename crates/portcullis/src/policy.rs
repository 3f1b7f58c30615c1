//! `portcullis policy check|test`: the Cedar policies of a directory,
//! asked from the command line (a single request, or a file of expected
//! decisions for CI of policy repositories).

use crate::Failure;
use crate::cli::{Output, PolicyCommand};
use portcullis_policy::{Decision, PolicyEngine, Principal, Resource};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::Path;

/// One case of a test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    principal: Principal,
    action: String,
    resource: Resource,
    #[serde(default)]
    context: Map<String, Value>,
    expect: Expect,
    /// The deciding policies, if the case pins them.
    policies: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    case: Vec<Case>,
}

fn load(dir: &Path) -> Result<PolicyEngine, Failure> {
    PolicyEngine::load(dir).map_err(|e| Failure::Config(e.to_string()))
}

fn json<T: for<'de> Deserialize<'de>>(flag: &str, text: &str) -> Result<T, Failure> {
    serde_json::from_str(text).map_err(|e| Failure::Config(format!("--{flag}: {e}")))
}

fn verdict(d: &Decision) -> &'static str {
    if d.allowed { "ALLOW" } else { "DENY" }
}

/// Runs a `policy` subcommand.
pub fn run(command: PolicyCommand) -> Result<(), Failure> {
    match command {
        PolicyCommand::Check {
            dir,
            principal,
            action,
            resource,
            context,
            output,
        } => {
            let engine = load(&dir)?;
            let principal: Principal = json("principal", &principal)?;
            let resource: Resource = json("resource", &resource)?;
            let context: Map<String, Value> = json("context", &context)?;
            let d = engine.decide(&principal, &action, &resource, &context);
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&d).unwrap_or_else(|_| "{}".into())
                ),
                Output::Table => {
                    println!("{}", verdict(&d));
                    if !d.policies.is_empty() {
                        println!("decided by: {}", d.policies.join(", "));
                    }
                    for e in &d.errors {
                        println!("error: {e}");
                    }
                }
            }
            if d.allowed {
                Ok(())
            } else {
                Err(Failure::Runtime(anyhow::anyhow!("denied")))
            }
        }
        PolicyCommand::Test { dir, cases } => {
            let engine = load(&dir)?;
            let text = std::fs::read_to_string(&cases)
                .map_err(|e| Failure::Config(format!("{}: {e}", cases.display())))?;
            let file: Cases = toml::from_str(&text)
                .map_err(|e| Failure::Config(format!("{}: {e}", cases.display())))?;
            let mut failed = 0;
            for c in &file.case {
                let d = engine.decide(&c.principal, &c.action, &c.resource, &c.context);
                let want = c.expect == Expect::Allow;
                let policies_ok = c.policies.as_ref().is_none_or(|p| *p == d.policies);
                if d.allowed == want && policies_ok {
                    println!("ok - {}", c.name);
                } else {
                    failed += 1;
                    println!(
                        "not ok - {}: expected {}{}, got {} (decided by: [{}]{})",
                        c.name,
                        if want { "ALLOW" } else { "DENY" },
                        c.policies
                            .as_ref()
                            .map(|p| format!(" by [{}]", p.join(", ")))
                            .unwrap_or_default(),
                        verdict(&d),
                        d.policies.join(", "),
                        if d.errors.is_empty() {
                            String::new()
                        } else {
                            format!("; errors: {}", d.errors.join("; "))
                        }
                    );
                }
            }
            println!("{} cases, {failed} failed", file.case.len());
            if failed == 0 {
                Ok(())
            } else {
                Err(Failure::Runtime(anyhow::anyhow!(
                    "{failed} policy test case(s) failed"
                )))
            }
        }
    }
}
