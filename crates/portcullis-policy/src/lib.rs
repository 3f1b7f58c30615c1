//! Authorization policies in the Cedar language: the decision point (PDP)
//! the gateway and services ask "may this principal do this action on this
//! resource?".
//!
//! A policy directory holds `schema.cedarschema` and any number of
//! `*.cedar` files. Everything is validated against the schema (strict
//! mode) when loaded; a set that does not validate is refused, and a
//! [`PolicyStore`] keeps serving the last good set. Decisions are default
//! deny, an explicit `forbid` beats any `permit`, and a policy that fails to
//! evaluate (a missing attribute, say) does not permit.
//!
//! The request is built from a token's principal:
//!
//! - principal `Principal::"<sub>"` with `client_id: String`,
//!   `roles: Set<String>`, `scopes: Set<String>`, `actors: Set<String>` (the
//!   services in its `act` chain) and `auth_method: String`;
//! - action `Action::"<name>"`;
//! - resource `<Type>::"<id>"` with the attributes the caller supplies;
//! - a context record of the caller's choosing.
//!
//! Each decision is logged as a structured event (`policy_decision`: who,
//! what, on which resource, the decision and the policies that decided).

mod value;

use arc_swap::ArcSwap;
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicyId,
    PolicySet, Request, RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use value::expression;

/// The schema file in a policy directory.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

/// Why a policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The schema does not parse.
    #[error("{path}: {message}")]
    Schema {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A policy file does not parse.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// The policies do not validate against the schema.
    #[error("policies do not validate against the schema: {0}")]
    Invalid(String),
}

/// Who is asking: a token's subject and what the token says about it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Principal {
    /// The subject (`sub`).
    pub id: String,
    /// The OAuth client the token was issued to.
    pub client_id: String,
    /// Roles.
    pub roles: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// The services that acted on the subject's behalf (the `act` chain,
    /// current actor first).
    pub actors: Vec<String>,
    /// How the caller authenticated (`jwt`, `session`, `api_key`, …).
    pub auth_method: String,
}

impl Principal {
    /// The actors named by an `act` claim (RFC 8693 §4.1), outermost first.
    pub fn actors_of(act: Option<&Value>) -> Vec<String> {
        let mut out = Vec::new();
        let mut cur = act;
        while let Some(a) = cur {
            match a.get("sub").and_then(Value::as_str) {
                Some(s) => out.push(s.to_owned()),
                None => break,
            }
            cur = a.get("act");
        }
        out
    }
}

/// What is acted on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// Entity type (declared in the schema).
    #[serde(rename = "type")]
    pub kind: String,
    /// Entity id.
    pub id: String,
    /// Attributes (strings, numbers, booleans, arrays as sets, objects as
    /// records).
    #[serde(default)]
    pub attrs: Map<String, Value>,
}

impl Resource {
    /// A resource without attributes.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            id: id.into(),
            attrs: Map::new(),
        }
    }

    /// Adds an attribute.
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attrs.insert(name.into(), value.into());
        self
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Allowed.
    pub allowed: bool,
    /// The policies that decided: the permits that allowed, or the forbids
    /// that denied (empty for a default deny).
    pub policies: Vec<String>,
    /// Evaluation errors (policies that could not be evaluated and so did
    /// not permit), and request errors.
    pub errors: Vec<String>,
}

impl Decision {
    fn deny(error: String) -> Self {
        Self {
            allowed: false,
            policies: Vec::new(),
            errors: vec![error],
        }
    }
}

/// A validated policy set.
pub struct PolicyEngine {
    /// The set sliced by action: for each action some policy names with
    /// `action == Action::"…"`, the policies that can apply to it (those
    /// plus every policy whose action is unconstrained or a list/group).
    /// Evaluating a slice decides exactly as the whole set: a policy outside
    /// it cannot apply to that action.
    by_action: HashMap<String, PolicySet>,
    /// The policies that can apply to an action no policy names.
    unnamed: PolicySet,
    schema: Schema,
    /// Policy id → `file:line`-like name (`@id("…")` if given).
    names: HashMap<PolicyId, String>,
    count: usize,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.count)
            .finish()
    }
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The `*.cedar` files of `dir`, sorted.
fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cedar"))
        .collect();
    files.sort();
    Ok(files)
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, String> {
    let t = EntityTypeName::from_str(kind).map_err(|e| format!("entity type {kind:?}: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(t, EntityId::new(id)))
}

fn string_set(v: &[String]) -> RestrictedExpression {
    RestrictedExpression::new_set(
        v.iter()
            .map(|s| RestrictedExpression::new_string(s.clone())),
    )
}

impl PolicyEngine {
    /// Loads and validates `dir/schema.cedarschema` and `dir/*.cedar`.
    pub fn load(dir: &Path) -> Result<Self, PolicyError> {
        let schema_path = dir.join(SCHEMA_FILE);
        let schema_text = read(&schema_path)?;
        let files = policy_files(dir)?
            .into_iter()
            .map(|p| read(&p).map(|t| (p, t)))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_sources(
            (&schema_path.display().to_string(), &schema_text),
            files.iter().map(|(p, t)| {
                (
                    p.file_name()
                        .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                    t.as_str(),
                )
            }),
        )
    }

    /// Parses and validates a schema and named policy sources.
    pub fn from_sources<'a>(
        schema: (&str, &str),
        sources: impl IntoIterator<Item = (String, &'a str)>,
    ) -> Result<Self, PolicyError> {
        let (schema_name, schema_text) = schema;
        let (schema, _warnings) =
            Schema::from_cedarschema_str(schema_text).map_err(|e| PolicyError::Schema {
                path: schema_name.to_owned(),
                message: format!("{e}"),
            })?;
        let mut policies = PolicySet::new();
        let mut names = HashMap::new();
        let mut count = 0;
        for (file, text) in sources {
            let set = PolicySet::from_str(text).map_err(|e| PolicyError::Parse {
                path: file.clone(),
                message: format!("{e}"),
            })?;
            for (n, p) in set.policies().enumerate() {
                let name = p
                    .annotation("id")
                    .map_or_else(|| format!("{file}#{n}"), str::to_owned);
                let id = PolicyId::new(format!("p{count}"));
                names.insert(id.clone(), name);
                policies.add(p.new_id(id)).map_err(|e| PolicyError::Parse {
                    path: file.clone(),
                    message: format!("{e}"),
                })?;
                count += 1;
            }
        }
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        if !result.validation_passed() {
            let msgs: Vec<String> = result
                .validation_errors()
                .map(|e| {
                    let who = names
                        .get(e.policy_id())
                        .cloned()
                        .unwrap_or_else(|| e.policy_id().to_string());
                    format!("{who}: {e}")
                })
                .collect();
            return Err(PolicyError::Invalid(msgs.join("; ")));
        }
        let (by_action, unnamed) = slice(&policies)?;
        Ok(Self {
            by_action,
            unnamed,
            schema,
            names,
            count,
        })
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the set is empty (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The schema the set was validated against.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Decides, and logs the decision.
    pub fn decide(
        &self,
        who: &Principal,
        action: &str,
        resource: &Resource,
        context: &Map<String, Value>,
    ) -> Decision {
        let d = self.evaluate(who, action, resource, context);
        tracing::info!(
            target: "portcullis::policy",
            event = "policy_decision",
            principal = %who.id,
            client_id = %who.client_id,
            actors = ?who.actors,
            action,
            resource_type = %resource.kind,
            resource_id = %resource.id,
            decision = if d.allowed { "allow" } else { "deny" },
            policies = ?d.policies,
            errors = d.errors.len(),
        );
        d
    }

    fn evaluate(
        &self,
        who: &Principal,
        action: &str,
        resource: &Resource,
        context: &Map<String, Value>,
    ) -> Decision {
        let built = (|| -> Result<(Request, Entities), String> {
            let p = uid("Principal", &who.id)?;
            let a = uid("Action", action)?;
            let r = uid(&resource.kind, &resource.id)?;
            let mut pattrs = HashMap::new();
            pattrs.insert(
                "client_id".to_owned(),
                RestrictedExpression::new_string(who.client_id.clone()),
            );
            pattrs.insert("roles".to_owned(), string_set(&who.roles));
            pattrs.insert("scopes".to_owned(), string_set(&who.scopes));
            pattrs.insert("actors".to_owned(), string_set(&who.actors));
            pattrs.insert(
                "auth_method".to_owned(),
                RestrictedExpression::new_string(who.auth_method.clone()),
            );
            let principal =
                Entity::new(p.clone(), pattrs, HashSet::new()).map_err(|e| e.to_string())?;
            let mut rattrs = HashMap::new();
            for (k, v) in &resource.attrs {
                let x = expression(v).ok_or_else(|| {
                    format!("resource attribute {k:?}: null is not a Cedar value")
                })?;
                rattrs.insert(k.clone(), x);
            }
            let res = Entity::new(r.clone(), rattrs, HashSet::new()).map_err(|e| e.to_string())?;
            let mut ctx = Vec::with_capacity(context.len());
            for (k, v) in context {
                let x = expression(v)
                    .ok_or_else(|| format!("context {k:?}: null is not a Cedar value"))?;
                ctx.push((k.clone(), x));
            }
            let context = Context::from_pairs(ctx).map_err(|e| e.to_string())?;
            let request = Request::new(p, a, r, context, None).map_err(|e| e.to_string())?;
            let entities =
                Entities::from_entities([principal, res], None).map_err(|e| e.to_string())?;
            Ok((request, entities))
        })();
        let (request, entities) = match built {
            Ok(v) => v,
            Err(e) => return Decision::deny(e),
        };
        let set = self.by_action.get(action).unwrap_or(&self.unnamed);
        let response = Authorizer::new().is_authorized(&request, set, &entities);
        let name = |id: &PolicyId| {
            self.names
                .get(id)
                .cloned()
                .unwrap_or_else(|| id.to_string())
        };
        Decision {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            policies: response.diagnostics().reason().map(name).collect(),
            errors: response
                .diagnostics()
                .errors()
                .map(|e| e.to_string())
                .collect(),
        }
    }
}

/// Slices `all` by action (see [`PolicyEngine`]): `action == A` policies
/// go to A's slice only; unconstrained and `action in [...]` policies (an
/// action group may contain any action) go to every slice.
fn slice(all: &PolicySet) -> Result<(HashMap<String, PolicySet>, PolicySet), PolicyError> {
    use cedar_policy::ActionConstraint;
    let add = |set: &mut PolicySet, p: &cedar_policy::Policy| {
        set.add(p.clone())
            .map_err(|e| PolicyError::Invalid(e.to_string()))
    };
    let mut named: HashMap<String, Vec<&cedar_policy::Policy>> = HashMap::new();
    let mut shared = Vec::new();
    for p in all.policies() {
        match p.action_constraint() {
            ActionConstraint::Eq(uid) => named
                .entry(uid.id().unescaped().to_owned())
                .or_default()
                .push(p),
            _ => shared.push(p),
        }
    }
    let mut unnamed = PolicySet::new();
    for p in &shared {
        add(&mut unnamed, p)?;
    }
    let mut by_action = HashMap::new();
    for (action, own) in named {
        let mut set = unnamed.clone();
        for p in own {
            add(&mut set, p)?;
        }
        by_action.insert(action, set);
    }
    Ok((by_action, unnamed))
}

/// A policy directory, reloaded when its files change. A set that does not
/// load is logged and refused; the last good one keeps deciding.
pub struct PolicyStore {
    dir: PathBuf,
    current: ArcSwap<PolicyEngine>,
    stamp: std::sync::Mutex<Vec<(PathBuf, Option<SystemTime>)>>,
}

impl std::fmt::Debug for PolicyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyStore")
            .field("dir", &self.dir)
            .finish()
    }
}

fn stamp(dir: &Path) -> Vec<(PathBuf, Option<SystemTime>)> {
    let mut files = policy_files(dir).unwrap_or_default();
    files.push(dir.join(SCHEMA_FILE));
    files
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).and_then(|m| m.modified()).ok();
            (p, m)
        })
        .collect()
}

impl PolicyStore {
    /// Loads `dir`; fails if it does not load.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, PolicyError> {
        let dir = dir.into();
        let engine = PolicyEngine::load(&dir)?;
        Ok(Self {
            stamp: std::sync::Mutex::new(stamp(&dir)),
            dir,
            current: ArcSwap::from_pointee(engine),
        })
    }

    /// The current set.
    pub fn engine(&self) -> Arc<PolicyEngine> {
        self.current.load_full()
    }

    /// Decides with the current set.
    pub fn decide(
        &self,
        who: &Principal,
        action: &str,
        resource: &Resource,
        context: &Map<String, Value>,
    ) -> Decision {
        self.current.load().decide(who, action, resource, context)
    }

    /// Reloads now. On error the current set stays and the error is returned.
    pub fn reload(&self) -> Result<(), PolicyError> {
        match PolicyEngine::load(&self.dir) {
            Ok(engine) => {
                tracing::info!(dir = %self.dir.display(), policies = engine.len(), "policies reloaded");
                self.current.store(Arc::new(engine));
                Ok(())
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), error = %e, "policy reload refused; the previous policies stay");
                Err(e)
            }
        }
    }

    /// Reloads if a file changed since the last look (mtime or presence).
    pub fn reload_if_changed(&self) -> Option<Result<(), PolicyError>> {
        let now = stamp(&self.dir);
        {
            let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            if *last == now {
                return None;
            }
            *last = now;
        }
        Some(self.reload())
    }

    /// Polls the directory every `every` and reloads on change, until the
    /// returned task is aborted (or the store dropped).
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(store) = weak.upgrade() else { return };
                let _ = store.reload_if_changed();
            }
        })
    }
}
