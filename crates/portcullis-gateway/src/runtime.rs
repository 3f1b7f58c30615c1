//! A [`Config`] compiled into what requests use: sorted routes, shared
//! authenticators, limiters, pools, the internal-token minter. Replaced
//! whole on reload.

use crate::bff::Bff;
use crate::config::{Authenticator, Config, Route};
use crate::pipeline::authn::{ApiKeyIndex, BasicIndex, Introspector, Method};
use crate::pipeline::propagate::Minter;
use crate::pipeline::proxy::{UpstreamClient, client};
use crate::pipeline::ratelimit::{Limiter, LocalLimiter, RedisLimiter};
use crate::tls::{CertificateHosts, UpstreamTlsClient};
use crate::upstream::Pool;
use portcullis_core::jose::SigningKey;
use portcullis_service::{Validator, ValidatorConfig};
use std::collections::HashMap;
use std::sync::Arc;

/// A route with its compiled parts.
pub struct CompiledRoute {
    /// The route.
    pub route: Route,
    /// Methods in order.
    pub methods: Vec<Arc<Method>>,
    /// API-key query parameter to strip from the forwarded URI, if any.
    pub api_key_query: Option<String>,
    /// Limiter.
    pub limiter: Option<Arc<dyn Limiter>>,
    /// Pool.
    pub pool: Arc<Pool>,
    /// Has the `session` authenticator: the `Cookie` header is not forwarded.
    pub session: bool,
    /// The route's name as an interned metrics label.
    pub label: &'static str,
}

/// Everything a request needs.
pub struct Runtime {
    /// Config it was built from.
    pub config: Config,
    /// Routes, indexed for matching.
    pub routes: crate::pipeline::route::Table,
    /// Compiled routes by name (looked up on every request: foldhash, not SipHash;
    /// the names come from the config).
    pub compiled: foldhash::HashMap<String, CompiledRoute>,
    /// Upstream client.
    pub client: UpstreamClient,
    /// Internal-token minter.
    pub minter: Minter,
    /// The BFF, with `[bff]`.
    pub bff: Option<Arc<Bff>>,
    /// The policy decision point, with `policies`.
    pub policies: Option<Arc<portcullis_policy::PolicyStore>>,
    /// Which TLS connections are asked for a client certificate.
    pub certificate_hosts: CertificateHosts,
    /// The proxy listener's TLS configuration, if it speaks TLS (set by
    /// the server: built from `[tls]`, or carried over from the previous
    /// runtime when a reload leaves the files as they were).
    pub listener_tls: Option<Arc<crate::tls::Listener>>,
    /// Redis, with `[redis]` (kept across reloads while its config is the same).
    pub redis: Option<portcullis_redis::Redis>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Runtime {
    /// Compiles `config`; starts JWKS clients and health checks. The BFF
    /// of `previous` is kept (sessions, locks, provider metadata) if its
    /// configuration did not change.
    pub async fn build(
        config: Config,
        key: Arc<SigningKey>,
        issuer: String,
        previous: Option<&Runtime>,
    ) -> Result<Self, crate::server::GatewayError> {
        let policies = match &config.policies {
            None => None,
            Some(dir) => Some(Arc::new(
                portcullis_policy::PolicyStore::open(dir)
                    .map_err(crate::server::GatewayError::Policy)?,
            )),
        };
        let redis = match &config.redis {
            None => None,
            Some(cfg) => match previous.and_then(|p| p.redis.as_ref()) {
                Some(r) if r.config() == cfg => Some(r.clone()),
                _ => Some(portcullis_redis::Redis::connect(cfg.clone()).map_err(|e| {
                    crate::server::GatewayError::Invalid {
                        file: "[redis]".into(),
                        error: crate::config::ConfigError::new("redis.url", e.to_string()),
                    }
                })?),
            },
        };
        let bff = match &config.bff {
            None => None,
            Some(cfg) => match previous.and_then(|p| p.bff.as_ref()) {
                Some(b)
                    if b.config() == cfg
                        && (cfg.session_store != crate::bff::store::REDIS
                            || b.redis_config() == config.redis.as_ref()) =>
                {
                    Some(b.clone())
                }
                _ => Some(
                    Bff::start(cfg.clone(), redis.as_ref())
                        .await
                        .map_err(crate::server::GatewayError::Bff)?,
                ),
            },
        };
        let limit_feature = portcullis_redis::Feature::new("rate_limit");
        let consumers: Vec<Arc<crate::config::Consumer>> =
            config.consumers.iter().cloned().map(Arc::new).collect();
        let mut api_keys: ApiKeyIndex = HashMap::new();
        let mut basic: BasicIndex = HashMap::new();
        for c in &consumers {
            for (d, exp) in &c.api_keys {
                api_keys.insert(*d, (c.clone(), *exp));
            }
            if let Some((u, phc)) = &c.basic {
                basic.insert(u.clone(), (c.clone(), phc.clone()));
            }
        }
        let (api_keys, basic) = (Arc::new(api_keys), Arc::new(basic));
        let mut methods: HashMap<String, Arc<Method>> = HashMap::new();
        for (name, a) in &config.authenticators {
            let m = match a {
                Authenticator::Anonymous => Method::Anonymous,
                Authenticator::ApiKey { header, query } => Method::ApiKey {
                    header: header.clone(),
                    query: query.clone(),
                    index: api_keys.clone(),
                },
                Authenticator::Basic => Method::Basic {
                    index: basic.clone(),
                    verified: moka::sync::Cache::builder()
                        .max_capacity(10_000)
                        .time_to_live(std::time::Duration::from_secs(60))
                        .build(),
                },
                Authenticator::Jwt {
                    issuer,
                    audience,
                    algorithms,
                } => {
                    let mut cfg = ValidatorConfig::new(issuer.clone(), audience.clone())
                        .algorithms(algorithms);
                    cfg.redis = redis.clone();
                    Method::Jwt(Validator::start(cfg).await)
                }
                Authenticator::Mtls {
                    trust_domain,
                    identities,
                } => Method::Mtls {
                    trust_domain: trust_domain.clone(),
                    identities: identities.clone(),
                },
                Authenticator::Session => match &bff {
                    Some(b) => Method::Session(b.clone()),
                    // Validation refuses `session` without `[bff]`.
                    None => continue,
                },
                Authenticator::Introspection {
                    endpoint,
                    client_id,
                    client_secret,
                    cache_ttl,
                } => Method::Introspection(Arc::new(Introspector::new(
                    endpoint.clone(),
                    client_id.clone(),
                    client_secret.clone(),
                    *cache_ttl,
                ))),
            };
            methods.insert(name.clone(), Arc::new(m));
        }
        let mut tasks = Vec::new();
        if let Some(p) = &policies {
            tasks.push(p.watch(std::time::Duration::from_secs(1)));
        }
        let mut pools: HashMap<String, Arc<Pool>> = HashMap::new();
        for (name, u) in &config.upstreams {
            let tls = match &u.tls {
                None => None,
                Some(t) => {
                    let c = UpstreamTlsClient::new(
                        t.clone(),
                        config.connect_timeout,
                        config.idle_timeout,
                    )
                    .map_err(|e| {
                        crate::server::GatewayError::Tls(format!("upstream {name}: {e}"))
                    })?;
                    let c = Arc::new(c);
                    tasks.push(c.watch(Arc::from(name.as_str())));
                    Some(c)
                }
            };
            let p = Arc::new(Pool::new(u, tls));
            tasks.extend(p.spawn_health_checks());
            pools.insert(name.clone(), p);
        }
        let routes = crate::pipeline::route::Table::new(config.routes.clone());
        let mut compiled = foldhash::HashMap::default();
        for r in routes.routes() {
            let ms: Vec<Arc<Method>> = r
                .auth
                .iter()
                .filter_map(|a| methods.get(a).cloned())
                .collect();
            let api_key_query = r
                .auth
                .iter()
                .find_map(|a| match config.authenticators.get(a) {
                    Some(Authenticator::ApiKey { query, .. }) => query.clone(),
                    _ => None,
                });
            let limiter = r
                .rate_limit
                .map(|(ps, burst, _)| match (r.cluster_lease, &redis) {
                    (Some(lease), Some(redis)) => Arc::new(RedisLimiter::new(
                        redis.clone(),
                        limit_feature.clone(),
                        &r.name,
                        (ps, burst, lease),
                    )) as Arc<dyn Limiter>,
                    _ => Arc::new(LocalLimiter::new(ps, burst)) as Arc<dyn Limiter>,
                });
            let session = r
                .auth
                .iter()
                .any(|a| matches!(config.authenticators.get(a), Some(Authenticator::Session)));
            let Some(pool) = pools.get(&r.upstream).cloned() else {
                continue;
            };
            compiled.insert(
                r.name.clone(),
                CompiledRoute {
                    route: r.clone(),
                    methods: ms,
                    api_key_query,
                    limiter,
                    pool,
                    session,
                    label: portcullis_core::telemetry::label(&r.name),
                },
            );
        }
        let certificate_hosts = certificate_hosts(&config);
        let client = client(config.connect_timeout, config.idle_timeout);
        let minter = Minter::new(key, issuer, config.internal_token_ttl);
        Ok(Self {
            config,
            routes,
            compiled,
            client,
            minter,
            bff,
            policies,
            certificate_hosts,
            listener_tls: None,
            redis,
            tasks,
        })
    }
}

/// Hosts whose routes use an `mtls` authenticator (see [`crate::tls`]).
fn certificate_hosts(config: &Config) -> CertificateHosts {
    let mut hosts = std::collections::HashSet::new();
    for r in &config.routes {
        let mtls = r.auth.iter().any(|a| {
            matches!(
                config.authenticators.get(a),
                Some(Authenticator::Mtls { .. })
            )
        });
        match (&r.host, mtls) {
            (_, false) => {}
            (None, true) => return CertificateHosts::All,
            // Route hosts are kept without port (`route::bare_host`), as
            // SNI names are.
            (Some(h), true) => {
                hosts.insert(h.clone());
            }
        }
    }
    if hosts.is_empty() {
        CertificateHosts::None
    } else {
        CertificateHosts::Hosts(hosts)
    }
}
