//! Starting and stopping the IAM server: store, keys, clients, listeners,
//! background housekeeping, graceful drain.

use crate::client_auth::ClientAuthenticator;
use crate::clients::{ClientError, ClientRegistry};
use crate::config::{Config, Mode, TlsConfig};
use crate::http::{self, AppState, paths};
use crate::keys::{KeyRing, KeyRingError, KeyRingOptions};
use crate::store::{self, StoreError};
use crate::users::{UserError, UserRegistry};
use axum::extract::ConnectInfo;
use axum::serve::ListenerExt;
use portcullis_ca::Reloading;
use portcullis_ca::tls::Acceptor;
use portcullis_core::jose::SigningAlgorithm;
use portcullis_core::{Clock, Issuer, SystemClock};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::ServiceExt;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Keys could not be loaded or created.
    #[error("signing keys: {0}")]
    Keys(#[from] KeyRingError),
    /// A declared client could not be applied.
    #[error("declared clients: {0}")]
    Clients(#[from] ClientError),
    /// The user registry could not start or a declared user not be applied.
    #[error("users: {0}")]
    Users(#[from] UserError),
    /// The derived issuer is invalid.
    #[error("issuer: {0}")]
    Issuer(String),
    /// The `[redis]` client could not be made.
    #[error("{0}")]
    Redis(portcullis_redis::RedisError),
    /// A listener's TLS files do not load.
    #[error("{table}: {source}")]
    Tls {
        /// `tls` or `admin_tls`.
        table: &'static str,
        /// What failed.
        source: portcullis_ca::tls::TlsError,
    },
}

/// A running server.
pub struct RunningIam {
    /// Bound public address.
    pub public_addr: SocketAddr,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// Issuer identifier.
    pub issuer: Issuer,
    shutdown: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    background: JoinHandle<()>,
    tls_watchers: Vec<JoinHandle<()>>,
    grace: Duration,
}

impl RunningIam {
    /// Stops accepting, waits for in-flight requests (up to the grace
    /// period), stops background work.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for w in &self.tls_watchers {
            w.abort();
        }
        let drain = async {
            for s in self.servers {
                let _ = s.await;
            }
        };
        if tokio::time::timeout(self.grace, drain).await.is_err() {
            tracing::warn!("shutdown grace period elapsed with requests still in flight");
        }
        // Housekeeping stops at its next tick, but finishes creating a key it
        // began: an abandoned insert could land after a successor started.
        let mut background = self.background;
        if tokio::time::timeout(self.grace, &mut background)
            .await
            .is_err()
        {
            background.abort();
        }
    }
}

/// Starts the server with the system clock.
pub async fn start(config: Config) -> Result<RunningIam, StartError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// Starts the server with an injected clock.
pub async fn start_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
) -> Result<RunningIam, StartError> {
    crate::metrics::handle();
    if config.mode == Mode::Development {
        tracing::warn!("development mode: do not use with real credentials");
    }
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let public = bind(config.listen).await?;
    let admin = bind(config.admin_listen).await?;
    let public_addr = public.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let admin_addr = admin.local_addr().map_err(|source| StartError::Bind {
        addr: config.admin_listen,
        source,
    })?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let issuer = match config.issuer {
        Some(i) => i,
        None => Issuer::from_str(&format!("{scheme}://{public_addr}"))
            .map_err(|e| StartError::Issuer(e.to_string()))?,
    };
    let load_tls = |table: &'static str, tls: &Option<TlsConfig>| {
        tls.as_ref()
            .map(|t| {
                let reloading = Reloading::new(t.files.clone())
                    .map_err(|source| StartError::Tls { table, source })?;
                Ok::<_, StartError>((Arc::new(reloading), t.clone()))
            })
            .transpose()
    };
    let public_tls = load_tls("tls", &config.tls)?;
    let admin_tls = load_tls("admin_tls", &config.admin_tls)?;

    let store = store::open(&config.database_url).await?;
    let master = Arc::new(config.master_key);
    let keys = Arc::new(
        KeyRing::init_with(
            store.clone(),
            master.clone(),
            clock.clone(),
            KeyRingOptions {
                issuer: issuer.to_string(),
                alg: config.signing_alg,
                // ID tokens are signed with RS256, which OIDC requires.
                chains: vec![SigningAlgorithm::Rs256],
                publish_delay: config.key_publish_delay,
                max_ttl: config.max_access_token_ttl.max(config.login.id_token_ttl),
            },
        )
        .await?,
    );
    let clients = Arc::new(ClientRegistry::new(
        store.clone(),
        master,
        clock.clone(),
        config.mode,
        config.max_access_token_ttl,
        config.client_cache_ttl,
    ));
    clients.apply_declared(&config.clients).await?;
    if config.passwords.below_recommended() {
        tracing::warn!(
            memory_kib = config.passwords.memory_kib(),
            iterations = config.passwords.iterations(),
            "password hashing parameters are below OWASP's recommended minimum"
        );
    }
    let users = Arc::new(UserRegistry::new(store.clone(), clock.clone(), &config.passwords).await?);
    users.apply_declared(&config.users).await?;
    let auth = ClientAuthenticator::new(
        clients.clone(),
        store.clone(),
        clock.clone(),
        vec![issuer.to_string(), issuer.join(paths::TOKEN)],
        config.client_assertion_max_lifetime,
    );
    let state = Arc::new(AppState {
        issuer: issuer.clone(),
        access_token_ttl: config.access_token_ttl,
        max_access_token_ttl: config.max_access_token_ttl,
        jwks_max_age: config.jwks_max_age,
        clock: clock.clone(),
        store: store.clone(),
        keys: keys.clone(),
        clients,
        users,
        auth,
        admin_token: config.admin_token,
        signing_alg: config.signing_alg,
        body_limit: config.max_body_bytes,
        cookies: crate::login::Cookies::for_issuer(issuer.as_str()),
        login: config.login.clone(),
        exchange: config.token_exchange.clone(),
        roles: Arc::new(crate::rbac::RoleRegistry::new(store.clone(), clock.clone())),
        mtls: config.tls.as_ref().is_some_and(TlsConfig::client_certs),
    });
    if state.admin_token.is_none() {
        tracing::warn!("no admin_token configured: the admin API answers 503");
    }

    let (tx, rx) = watch::channel(false);
    let mut tls_watchers = Vec::new();
    let mut serve = |listener: TcpListener,
                     router: axum::Router,
                     tls: Option<(Arc<Reloading>, TlsConfig)>,
                     mut rx: watch::Receiver<bool>| {
        let shutdown = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        match tls {
            None => serve_plain(listener, router, shutdown),
            Some((reloading, t)) => {
                tls_watchers.push(reloading.watch(t.reload_interval));
                let acceptor = Acceptor::new(reloading).with_handshake_timeout(t.handshake_timeout);
                tokio::spawn(portcullis_ca::tls::serve(
                    listener,
                    acceptor,
                    move |addr: SocketAddr| {
                        // What `into_make_service_with_connect_info` does.
                        router
                            .clone()
                            .map_request(move |mut req: axum::extract::Request<_>| {
                                req.extensions_mut().insert(ConnectInfo(addr));
                                req
                            })
                    },
                    shutdown,
                ))
            }
        }
    };
    let servers = vec![
        serve(
            public,
            http::public_router(state.clone()),
            public_tls,
            rx.clone(),
        ),
        serve(
            admin,
            http::admin_router(state.clone(), config.max_body_bytes),
            admin_tls,
            rx.clone(),
        ),
    ];
    if let Some(cfg) = &config.redis {
        let redis = portcullis_redis::Redis::connect(cfg.clone()).map_err(StartError::Redis)?;
        crate::fanout::spawn(
            store.clone(),
            clock.clone(),
            redis,
            issuer.as_str().to_owned(),
            rx.clone(),
        );
    }
    let rx_background = rx;
    let background = tokio::spawn(housekeeping(
        keys,
        store,
        clock,
        config.key_refresh,
        rx_background,
    ));
    tracing::info!(%public_addr, %admin_addr, %issuer, "IAM server listening");
    Ok(RunningIam {
        public_addr,
        admin_addr,
        issuer,
        shutdown: tx,
        servers,
        background,
        tls_watchers,
        grace: Duration::from_secs(config.shutdown_grace),
    })
}

/// Serves `router` over plain HTTP until `shutdown`.
fn serve_plain(
    listener: TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "listener failed");
        }
    })
}

/// Creates the first keys of the ID-token chain if the store has none (off
/// the start-up path: an RSA key takes a random 50-300 ms), then reloads keys
/// (rotations made by other replicas or the CLI) and purges expired
/// assertion jtis and revocations, until told to stop.
async fn housekeeping(
    keys: Arc<KeyRing>,
    store: Arc<dyn store::Store>,
    clock: Arc<dyn Clock>,
    refresh: u64,
    mut stop: watch::Receiver<bool>,
) {
    if let Err(e) = keys.ensure_chains().await {
        // The code grant tries again before it spends a code.
        tracing::error!(error = %e, "could not create the ID-token signing key");
    }
    let mut tick = tokio::time::interval(Duration::from_secs(refresh));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        if let Err(e) = keys.reload().await {
            tracing::error!(error = %e, "key reload failed; serving the keys loaded before");
        }
        n += 1;
        if n.is_multiple_of((60 / refresh).max(1)) {
            match store.purge_expired(clock.now()).await {
                Ok(0) => {}
                Ok(rows) => tracing::debug!(rows, "purged expired rows"),
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            }
        }
    }
}
