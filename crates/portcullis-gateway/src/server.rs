//! The gateway server: accept loop (HTTP/1.1 in [`downstream`], HTTP/2 by
//! hyper),
//! hot reload (a new config is compiled beside the running one and swapped
//! in atomically; a bad one is refused and the old one keeps serving),
//! the admin listener, graceful drain.

use crate::config::{Config, RawConfig};
use crate::downstream::{self, Shared};
use crate::runtime::Runtime;
use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use portcullis_core::jose::{SigningAlgorithm, SigningKey};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the gateway could not start or reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// Reading the config file failed.
    #[error("{file}: {source}")]
    Read {
        /// File.
        file: String,
        /// Error.
        source: std::io::Error,
    },
    /// TOML syntax or an unknown key.
    #[error("{file}: {message}")]
    Parse {
        /// File.
        file: String,
        /// Parser message (names the key).
        message: String,
    },
    /// Validation.
    #[error("{file}: {error}")]
    Invalid {
        /// File.
        file: String,
        /// What.
        error: crate::config::ConfigError,
    },
    /// Binding a listener.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
    /// The BFF (session store, sealing key).
    #[error("{0}")]
    Bff(crate::bff::BffError),
    /// The policy directory.
    #[error("policies: {0}")]
    Policy(portcullis_policy::PolicyError),
    /// A TLS certificate, key or CRL file (listener or upstream).
    #[error("TLS: {0}")]
    Tls(String),
    /// The signing key file.
    #[error("signing key {file}: {message}")]
    Key {
        /// File.
        file: String,
        /// What.
        message: String,
    },
}

/// Reads and validates a config file.
pub fn load(path: &Path, overlay: &dyn Fn(&mut RawConfig)) -> Result<Config, GatewayError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| GatewayError::Read {
        file: file.clone(),
        source,
    })?;
    let mut raw: RawConfig = toml::from_str(&text).map_err(|e| GatewayError::Parse {
        file: file.clone(),
        message: e.to_string(),
    })?;
    overlay(&mut raw);
    raw.validate(&|v| std::env::var(v).ok())
        .map_err(|error| GatewayError::Invalid { file, error })
}

/// Loads the PKCS#8 PEM signing key, creating it if missing; ephemeral if no file.
fn signing_key(file: Option<&str>) -> Result<SigningKey, GatewayError> {
    let fail = |f: &str, m: String| GatewayError::Key {
        file: f.to_owned(),
        message: m,
    };
    let Some(f) = file else {
        tracing::warn!(
            "no signing_key_file: internal-token key is ephemeral; services refetch the JWKS after a restart"
        );
        return SigningKey::generate(SigningAlgorithm::Es256)
            .map_err(|e| fail("(ephemeral)", e.to_string()));
    };
    match std::fs::read_to_string(f) {
        Ok(pem) => {
            let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            let der = STANDARD
                .decode(b64.trim())
                .map_err(|e| fail(f, e.to_string()))?;
            SigningKey::from_pkcs8(SigningAlgorithm::Es256, der).map_err(|e| fail(f, e.to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(SigningAlgorithm::Es256)
                .map_err(|e| fail(f, e.to_string()))?;
            let b64 = STANDARD.encode(key.pkcs8_der());
            let lines: Vec<&str> = b64
                .as_bytes()
                .chunks(64)
                .filter_map(|c| std::str::from_utf8(c).ok())
                .collect();
            let pem = format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            );
            std::fs::write(f, pem).map_err(|e| fail(f, e.to_string()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600));
            }
            Ok(key)
        }
        Err(e) => Err(fail(f, e.to_string())),
    }
}

/// A running gateway.
pub struct RunningGateway {
    /// Proxy address.
    pub addr: SocketAddr,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// Internal-token issuer.
    pub issuer: String,
    current: Arc<ArcSwap<Runtime>>,
    key: Arc<SigningKey>,
    config_path: Option<PathBuf>,
    overlay: Arc<dyn Fn(&mut RawConfig) + Send + Sync>,
    /// What was read once, at start.
    started: StartOnly,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The listener's TLS configuration, if it speaks TLS.
    tls: Option<ProxyTls>,
}

/// The files the proxy listener's TLS was built from, and the tasks
/// polling them. The configuration itself is the running [`Runtime`]'s
/// `listener_tls`, so a connection reads it and the hosts that are asked
/// for a client certificate from one snapshot.
struct ProxyTls {
    running: std::sync::Mutex<RunningTls>,
}

struct RunningTls {
    files: crate::config::ListenerTls,
    watchers: Vec<tokio::task::JoinHandle<()>>,
}

impl ProxyTls {
    fn start(
        files: &crate::config::ListenerTls,
    ) -> Result<(Self, Arc<crate::tls::Listener>), GatewayError> {
        let listener = Self::build(files)?;
        let watchers = listener.watch();
        let running = RunningTls {
            files: files.clone(),
            watchers,
        };
        Ok((
            Self {
                running: std::sync::Mutex::new(running),
            },
            listener,
        ))
    }

    fn build(
        files: &crate::config::ListenerTls,
    ) -> Result<Arc<crate::tls::Listener>, GatewayError> {
        crate::tls::Listener::new(files).map(Arc::new).map_err(|e| {
            let ca = files
                .client_ca
                .as_ref()
                .map(|ca| format!(", client_ca {}", ca.display()))
                .unwrap_or_default();
            GatewayError::Tls(format!(
                "[tls] cert {}, key {}{ca}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })
    }

    /// A configuration built from `files` if they are not the running ones;
    /// an error if they do not load.
    fn prepare(
        &self,
        files: &crate::config::ListenerTls,
    ) -> Result<Option<Arc<crate::tls::Listener>>, GatewayError> {
        let unchanged = self.running.lock().is_ok_and(|r| r.files == *files);
        if unchanged {
            return Ok(None);
        }
        Self::build(files).map(Some)
    }

    /// Polls `files` (which `listener`, now serving new connections, was
    /// built from) instead of the old ones.
    fn watch(&self, listener: &crate::tls::Listener, files: &crate::config::ListenerTls) {
        let watchers = listener.watch();
        if let Ok(mut running) = self.running.lock() {
            running.files = files.clone();
            for old in std::mem::replace(&mut running.watchers, watchers) {
                old.abort();
            }
        }
    }

    fn stop_watching(&self) {
        if let Ok(mut running) = self.running.lock() {
            for w in running.watchers.drain(..) {
                w.abort();
            }
        }
    }
}

/// The settings a gateway reads once, when it starts: listeners, threads,
/// the internal tokens' issuer and key, hyper's header timeout and read
/// buffer, whether the listener speaks TLS. A reload applies everything
/// else (the `[tls]` files too) and names these if the new file changes
/// them.
#[derive(Debug, Clone, PartialEq)]
struct StartOnly {
    listen: SocketAddr,
    admin_listen: SocketAddr,
    workers: usize,
    issuer: Option<String>,
    signing_key_file: Option<String>,
    header_timeout: Duration,
    max_header_bytes: usize,
    tls: bool,
}

impl StartOnly {
    fn of(c: &Config) -> Self {
        Self {
            listen: c.listen,
            admin_listen: c.admin_listen,
            workers: c.workers,
            issuer: c.issuer.clone(),
            signing_key_file: c.signing_key_file.clone(),
            header_timeout: c.header_timeout,
            max_header_bytes: c.max_header_bytes,
            tls: c.tls.is_some(),
        }
    }

    /// The keys whose value in `new` differs from this one.
    fn changed_in(&self, new: &StartOnly) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |differs: bool, key: &'static str| {
            if differs {
                keys.push(key);
            }
        };
        check(self.listen != new.listen, "listen");
        check(self.admin_listen != new.admin_listen, "admin_listen");
        check(self.workers != new.workers, "workers");
        check(self.issuer != new.issuer, "issuer");
        check(
            self.signing_key_file != new.signing_key_file,
            "signing_key_file",
        );
        check(
            self.header_timeout != new.header_timeout,
            "timeouts.header_ms",
        );
        check(
            self.max_header_bytes != new.max_header_bytes,
            "limits.max_header_bytes",
        );
        check(self.tls != new.tls, "tls");
        keys
    }
}

/// What a reload did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Reloaded {
    /// Keys the new file changes that keep their running value until a
    /// restart (see [`RunningGateway::reload`]); empty in most reloads.
    pub needs_restart: Vec<&'static str>,
}

impl RunningGateway {
    /// Re-reads the config file and swaps it in; on error the running
    /// config stays and the error is returned. Routes, upstreams,
    /// authenticators, consumers, limits, timeouts other than `header_ms`,
    /// `[access_log]`, the BFF, policies and the `[tls]` files change at once; the
    /// start-time settings (`listen`, `admin_listen`, `workers`, `issuer`,
    /// `signing_key_file`, `timeouts.header_ms`, `limits.max_header_bytes`,
    /// TLS on or off) keep their running values, are logged as a warning
    /// and returned in [`Reloaded::needs_restart`]. `[tls]` files that do
    /// not load refuse the whole reload.
    pub async fn reload(&self) -> Result<Reloaded, GatewayError> {
        let Some(path) = &self.config_path else {
            return Ok(Reloaded::default());
        };
        let refused = |e: GatewayError| {
            metrics::counter!("portcullis_gateway_reloads_total", "result" => "rejected")
                .increment(1);
            tracing::error!(error = %e, "config reload refused; the running configuration stays");
            e
        };
        let config = load(path, &*self.overlay).map_err(refused)?;
        let needs_restart = self.started.changed_in(&StartOnly::of(&config));
        // Built before anything is swapped: files that do not load refuse
        // the whole reload.
        let new_tls = match (&self.tls, &config.tls) {
            (Some(running), Some(files)) => running
                .prepare(files)
                .map_err(refused)?
                .map(|listener| (listener, files.clone())),
            _ => None,
        };
        let previous = self.current.load_full();
        let mut rt = Runtime::build(
            config,
            self.key.clone(),
            self.issuer.clone(),
            Some(&previous),
        )
        .await
        .map_err(refused)?;
        // New connections get the new files' configuration; open ones keep
        // theirs. Whether the listener speaks TLS at all stays as started.
        rt.listener_tls = match &new_tls {
            Some((listener, _)) => Some(listener.clone()),
            None => previous.listener_tls.clone(),
        };
        drop(previous);
        crate::pipeline::access_log::configure(&rt.config.access_log);
        self.current.store(Arc::new(rt));
        if let (Some(running), Some((listener, files))) = (&self.tls, new_tls) {
            running.watch(&listener, &files);
            tracing::info!(cert = %files.cert.display(), "listener TLS rebuilt from the new [tls] files");
        }
        metrics::counter!("portcullis_gateway_reloads_total", "result" => "applied").increment(1);
        tracing::info!(file = %path.display(), "configuration reloaded");
        if !needs_restart.is_empty() {
            tracing::warn!(
                keys = ?needs_restart,
                "these settings take effect after a restart; their running values stay"
            );
        }
        Ok(Reloaded { needs_restart })
    }

    /// Stops accepting and drains in-flight requests (up to `grace`).
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        if let Some(tls) = &self.tls {
            tls.stop_watching();
        }
        let drain = async {
            for t in self.tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(grace, drain).await.is_err() {
            tracing::warn!("shutdown grace elapsed with requests in flight");
        }
    }
}

/// Starts the gateway with `config`; `config_path` enables reload.
pub async fn start(
    config: Config,
    config_path: Option<PathBuf>,
    overlay: Arc<dyn Fn(&mut RawConfig) + Send + Sync>,
) -> Result<RunningGateway, GatewayError> {
    // Install the recorder now, so requests before the first scrape count.
    portcullis_core::telemetry::prometheus();
    let started = StartOnly::of(&config);
    crate::pipeline::access_log::configure(&config.access_log);
    let listeners = bind_workers(config.listen, config.workers)?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: config.admin_listen,
            source,
        })?;
    let addr = listeners[0]
        .local_addr()
        .map_err(|source| GatewayError::Bind {
            addr: config.listen,
            source,
        })?;
    let admin_addr = admin.local_addr().map_err(|source| GatewayError::Bind {
        addr: config.admin_listen,
        source,
    })?;
    let issuer = config
        .issuer
        .clone()
        .unwrap_or_else(|| format!("http://{admin_addr}"));
    let key = Arc::new(signing_key(config.signing_key_file.as_deref())?);
    let header_timeout = config.header_timeout;
    let idle_timeout = config.idle_timeout;
    let max_header = config.max_header_bytes;
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header).unwrap_or(u32::MAX));
    let (tls, listener_tls) = match config.tls.as_ref().map(ProxyTls::start).transpose()? {
        Some((tls, listener)) => (Some(tls), Some(listener)),
        None => (None, None),
    };
    let mut rt = Runtime::build(config, key.clone(), issuer.clone(), None).await?;
    rt.listener_tls = listener_tls;
    let speaks_tls = rt.listener_tls.is_some();
    let current = Arc::new(ArcSwap::from_pointee(rt));
    let (tx, rx) = watch::channel(false);

    let mut drained = Vec::with_capacity(listeners.len());
    for (i, listener) in listeners.into_iter().enumerate() {
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let rx = rx.clone();
        let shared = Arc::new(Shared {
            current: current.clone(),
            max_header,
            header_timeout,
            idle_timeout,
            h2: h2.clone(),
        });
        std::thread::Builder::new()
            .name(format!("gateway-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "gateway worker: no event loop");
                        return;
                    }
                };
                rt.block_on(async move {
                    // Ends with the runtime, when the drain is done.
                    tokio::spawn(timer_anchor());
                    match TcpListener::from_std(listener) {
                        Ok(l) => accept_loop(l, speaks_tls, shared, rx).await,
                        Err(e) => tracing::error!(error = %e, "gateway worker: listener"),
                    }
                });
                let _ = done.send(());
            })
            .map_err(|source| GatewayError::Bind { addr, source })?;
        drained.push(finished);
    }
    // Resolves when every worker has drained its connections.
    let proxy_task = tokio::spawn(async move {
        for d in drained {
            let _ = d.await;
        }
    });
    let admin_app = crate::admin::router(current.clone());
    let mut arx = rx.clone();
    let admin_task = tokio::spawn(async move {
        let _ = axum::serve(admin, admin_app)
            .with_graceful_shutdown(async move {
                let _ = arx.wait_for(|s| *s).await;
            })
            .await;
    });
    tracing::info!(%addr, %admin_addr, %issuer, "gateway listening");
    Ok(RunningGateway {
        addr,
        admin_addr,
        issuer,
        current,
        key,
        config_path,
        overlay,
        started,
        shutdown: tx,
        tasks: vec![proxy_task, admin_task],
        tls,
    })
}

/// Binds `workers` listening sockets on `addr` with `SO_REUSEPORT` (one per
/// worker: the kernel spreads new connections over them, and a connection
/// is served start to end on the thread that accepted it, its upstream
/// connections too: no hand-off between threads per request). A port of 0
/// is resolved by the first bind and reused by the others.
pub fn bind_workers(
    addr: SocketAddr,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>, GatewayError> {
    let bind = |at: SocketAddr| -> std::io::Result<std::net::TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        #[cfg(unix)]
        if workers > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(1024)?;
        Ok(socket.into())
    };
    let fail = |source| GatewayError::Bind { addr, source };
    let first = bind(addr).map_err(fail)?;
    let at = first.local_addr().map_err(fail)?;
    let mut all = vec![first];
    // Without SO_REUSEPORT a second socket could not bind: one worker.
    let workers = if cfg!(unix) { workers } else { 1 };
    for _ in 1..workers {
        all.push(bind(at).map_err(fail)?);
    }
    Ok(all)
}

/// Keeps one of the worker's timers due within a second, all the time,
/// and writes the worker's gathered access-log lines when they are due.
///
/// tokio wakes a runtime's event loop (an eventfd write, then one more
/// `epoll_wait` to take it) whenever a timer is registered that is due
/// sooner than the earliest one the loop last went to sleep for: a loop
/// asleep in `epoll_wait` would oversleep it otherwise. A worker registers
/// its timers from its own thread while it is awake, so for it the wake-up
/// is pure cost, and hyper registers one per request (the header-read
/// timeout, made anew for each request head): under load that was about
/// 0.3 eventfd writes per request. With this timer always due sooner than
/// any timeout, registering one never wakes the loop; it costs one wake-up
/// a second (more with `[access_log] flush_ms` under a second).
async fn timer_anchor() {
    loop {
        tokio::time::sleep(crate::pipeline::access_log::tick_period()).await;
        crate::pipeline::access_log::tick();
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: bool,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let mut stopping = stop.clone();
    // Each connection holds a sender; the drain is over when all are gone.
    let (alive, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let (shared, stop, alive) = (shared.clone(), stop.clone(), alive.clone());
                tokio::spawn(async move {
                    let _alive = alive;
                    if !tls {
                        return downstream::serve(stream, peer, None, shared, stop).await;
                    }
                    // One snapshot: the configuration and the hosts it asks
                    // for certificates belong to the same reload.
                    let (hosts, listener) = {
                        let rt = shared.current.load();
                        (rt.certificate_hosts.clone(), rt.listener_tls.clone())
                    };
                    let Some(listener) = listener else { return };
                    match listener.accept(stream, &hosts).await {
                        Ok((stream, cert)) => downstream::serve(stream, peer, cert, shared, stop).await,
                        Err(e) => tracing::debug!(%peer, error = %e, "TLS handshake refused"),
                    }
                });
            }
            _ = stopping.wait_for(|s| *s) => break,
        }
    }
    // What is gathered, and every line of the drain, is written at once:
    // the process exits when the shutdown grace runs out, drained or not.
    crate::pipeline::access_log::stop_gathering();
    drop(listener);
    drop(alive);
    let _ = drained.recv().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_socket_shares_the_port_and_gets_connections() {
        let listeners = bind_workers("127.0.0.1:0".parse().unwrap(), 4).unwrap();
        assert_eq!(listeners.len(), 4);
        let port = listeners[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap().port(), port);
        }
        // The kernel spreads new connections over the sockets by their
        // address hash: with 64 connections, each of 4 gets some (a miss
        // has a probability of about 4 × (3/4)^64 ≈ 4e-8).
        let clients: Vec<_> = (0..64)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        let mut accepted = 0;
        for l in &listeners {
            let mut n = 0;
            while l.accept().is_ok() {
                n += 1;
            }
            assert!(n > 0, "a worker's socket got no connection");
            accepted += n;
        }
        assert_eq!(accepted, clients.len());
    }

    #[test]
    fn a_taken_port_is_refused_with_its_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = bind_workers(addr, 2).unwrap_err();
        assert!(e.to_string().contains(&addr.to_string()), "{e}");
    }

    #[test]
    fn every_start_time_setting_is_named_when_a_reload_changes_it() {
        let a = RawConfig::default().validate(&|_| None).unwrap();
        assert!(StartOnly::of(&a).changed_in(&StartOnly::of(&a)).is_empty());
        let mut b = a.clone();
        b.listen = "127.0.0.1:9".parse().unwrap();
        b.admin_listen = "127.0.0.1:10".parse().unwrap();
        b.workers += 1;
        b.issuer = Some("https://gw".into());
        b.signing_key_file = Some("k.pem".into());
        b.header_timeout += Duration::from_secs(1);
        b.max_header_bytes += 1;
        b.tls = Some(crate::config::ListenerTls {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            client_ca: None,
            crls: Vec::new(),
            enforce_crl_expiry: false,
        });
        // Settings a reload applies are not named.
        b.request_timeout += Duration::from_secs(1);
        b.max_body_bytes += 1;
        assert_eq!(
            StartOnly::of(&a).changed_in(&StartOnly::of(&b)),
            [
                "listen",
                "admin_listen",
                "workers",
                "issuer",
                "signing_key_file",
                "timeouts.header_ms",
                "limits.max_header_bytes",
                "tls"
            ]
        );
        // Other `[tls]` files reload; only turning TLS on or off is named.
        let mut c = b.clone();
        if let Some(t) = c.tls.as_mut() {
            t.cert = "other.pem".into();
            t.client_ca = Some("ca.pem".into());
            t.enforce_crl_expiry = true;
        }
        // ... and a change of any of them, the CRL policy too, is one that
        // `ProxyTls::prepare` rebuilds the listener for (it compares them).
        assert_ne!(b.tls, c.tls);
        assert!(StartOnly::of(&b).changed_in(&StartOnly::of(&c)).is_empty());
    }

    #[test]
    fn workers_default_to_the_cpus_and_zero_is_refused() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            RawConfig::default().validate(&|_| None).unwrap().workers,
            cpus
        );
        let raw = |w| RawConfig {
            workers: Some(w),
            ..Default::default()
        };
        assert_eq!(raw(3).validate(&|_| None).unwrap().workers, 3);
        let e = raw(0).validate(&|_| None).unwrap_err().to_string();
        assert!(e.contains("workers"), "{e}");
    }

    #[test]
    fn the_access_log_gathers_64_kib_by_default_and_its_limits_are_checked() {
        use crate::config::{AccessLog, MAX_ACCESS_LOG_BUFFER, RawAccessLog};
        let c = RawConfig::default().validate(&|_| None).unwrap();
        assert_eq!(
            c.access_log,
            AccessLog {
                buffer_bytes: 65_536,
                flush: Duration::from_secs(1)
            }
        );
        let raw = |buffer_bytes, flush_ms| RawConfig {
            access_log: RawAccessLog {
                buffer_bytes,
                flush_ms,
            },
            ..Default::default()
        };
        assert_eq!(
            raw(Some(65_536), Some(250))
                .validate(&|_| None)
                .unwrap()
                .access_log,
            AccessLog {
                buffer_bytes: 65_536,
                flush: Duration::from_millis(250)
            }
        );
        assert_eq!(
            raw(Some(0), None)
                .validate(&|_| None)
                .unwrap()
                .access_log
                .buffer_bytes,
            0
        );
        for (buffer, flush, key) in [
            (
                Some(MAX_ACCESS_LOG_BUFFER + 1),
                None,
                "access_log.buffer_bytes",
            ),
            (None, Some(9), "access_log.flush_ms"),
            (None, Some(60_001), "access_log.flush_ms"),
        ] {
            let e = raw(buffer, flush).validate(&|_| None).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let typo = toml::from_str::<RawConfig>("[access_log]\nbufer_bytes = 1\n").unwrap_err();
        assert!(typo.to_string().contains("bufer_bytes"), "{typo}");
    }
}
