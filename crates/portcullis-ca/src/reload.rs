//! A server configuration that follows its files: certificates renewed and
//! CRLs republished are picked up without a restart.
//!
//! rustls fixes the CRLs of a `ServerConfig` when it is built, so a reload
//! rebuilds the whole configuration and swaps it in; connections already
//! accepted keep the one they started with. A file that does not load
//! leaves the running configuration in place.

use crate::tls::{ClientVerifier, ServerTlsFiles, TlsError, build_server};
use arc_swap::ArcSwap;
use rustls::ServerConfig;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// What a file looked like when last loaded: modification time and length.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &ServerTlsFiles) -> Stamp {
    files
        .paths()
        .into_iter()
        .map(|p: &Path| {
            let meta = std::fs::metadata(p).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// One built configuration, and the verifier that can tell a verified
/// client chain from an admitted self-signed certificate.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) self_signed: Option<Arc<ClientVerifier>>,
}

impl Loaded {
    fn build(files: &ServerTlsFiles) -> Result<Self, TlsError> {
        let (config, self_signed) = build_server(files)?;
        Ok(Self {
            config: Arc::new(config),
            self_signed,
        })
    }
}

/// A hot-reloadable [`ServerConfig`]. Take [`Reloading::current`] for each
/// accepted connection (e.g. `TlsAcceptor::from(reloading.current())`), or
/// let [`crate::tls::Acceptor`] do it and read the peer's certificate too.
#[derive(Debug)]
pub struct Reloading {
    files: ServerTlsFiles,
    current: ArcSwap<Loaded>,
    loaded: Mutex<Stamp>,
}

impl Reloading {
    /// Builds the first configuration; fails if the files do not load.
    pub fn new(files: ServerTlsFiles) -> Result<Self, TlsError> {
        let loaded = stamp(&files);
        let config = Loaded::build(&files)?;
        Ok(Self {
            files,
            current: ArcSwap::from_pointee(config),
            loaded: Mutex::new(loaded),
        })
    }

    /// The configuration to use for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load().config.clone()
    }

    /// The files the configuration is built from.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    pub(crate) fn snapshot(&self) -> Arc<Loaded> {
        self.current.load_full()
    }

    /// Rebuilds from the files now. On error the running configuration
    /// stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        // A poisoned lock holds only a stamp; a stale one causes one extra reload.
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let before = stamp(&self.files);
        // Record the stamp even on failure, so a bad file is reported once,
        // not on every poll; fixing it changes the stamp again.
        *loaded = before;
        let config = Loaded::build(&self.files)?;
        self.current.store(Arc::new(config));
        Ok(())
    }

    /// Rebuilds if any file's modification time or length changed since the
    /// last load. Returns whether a new configuration is in place.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let changed = {
            let loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
            *loaded != stamp(&self.files)
        };
        if !changed {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// Polls the files every `every` on the tokio runtime, reloading on
    /// change and logging failures. Stops when the returned handle is
    /// aborted or `self` is the last reference left.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                match this.reload_if_changed() {
                    Ok(true) => {
                        tracing::info!(cert = %this.files.cert_chain.display(), "TLS configuration reloaded")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS files changed but do not load; keeping the running configuration")
                    }
                }
            }
        })
    }
}
