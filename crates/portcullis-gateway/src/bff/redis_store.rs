//! The Redis back-end of [`SessionStore`], for several gateway replicas
//! (`[bff] session_store = "redis"`, using the gateway's `[redis]`).
//!
//! - A session is one hash under `{prefix}bff:s:<hex sha256(cookie)>` that
//!   expires (`EXPIREAT`) at its absolute end or after the idle timeout from
//!   its last recorded use, whichever comes first (so idle sessions leave
//!   Redis too); the BFF also checks both on every read, as with SQLite.
//! - A pending login is one JSON string under `{prefix}bff:l:<hex>` with its
//!   own expiry, taken with `GETDEL` (single use across replicas).
//! - `update_tokens` is a compare-and-swap on the `version` field in a Lua
//!   script, so of two replicas refreshing at once exactly one wins.
//! - A session's token refresh is locked across gateways under
//!   `{prefix}bff:r:<hex>` (`SET NX PX`, released only by its holder), so a
//!   refresh token is used once however many gateways find it due.
//! - `touch` only writes a session that still exists (a late touch never
//!   resurrects a logged-out session without a TTL).
//! - `purge` does nothing: Redis expires the keys.
//!
//! Sessions fail closed: every Redis error is counted under the feature
//! `bff_sessions` and answered 503 by the BFF; the connection manager
//! reconnects by itself, so Redis coming back needs no restart.

use super::store::{PendingLogin, SessionRow, SessionStore, SessionStoreError};
use async_trait::async_trait;
use base64::Engine;
use portcullis_redis::redis::{self, AsyncCommands};
use portcullis_redis::{Feature, Redis};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Sets the tokens if `version` still matches: 1 if done, 0 otherwise.
const UPDATE_TOKENS: &str = r"
local v = redis.call('HGET', KEYS[1], 'version')
if not v or v ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'tokens', ARGV[2], 'access_expires_at', ARGV[3])
redis.call('HINCRBY', KEYS[1], 'version', 1)
return 1
";

/// Records use of a session that still exists and moves its expiry to
/// `ARGV[2]` (last use + idle timeout), never past its absolute end.
const TOUCH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'last_seen', ARGV[1])
  local at = tonumber(ARGV[2])
  local ends = tonumber(redis.call('HGET', KEYS[1], 'expires_at'))
  if ends and ends < at then at = ends end
  redis.call('EXPIREAT', KEYS[1], at)
end
return 0
";

/// Releases a refresh lock if this store still holds it.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A pending login as stored (the verifier is already sealed).
#[derive(Serialize, Deserialize)]
struct StoredLogin {
    state: String,
    nonce: String,
    verifier: String,
    return_to: String,
    expires_at: u64,
}

/// Sessions and pending logins in Redis.
pub struct RedisSessions {
    redis: Redis,
    /// The idle timeout, seconds.
    idle: u64,
    feature: Feature,
    update: redis::Script,
    touch: redis::Script,
    unlock: redis::Script,
    /// This store's name in refresh locks.
    owner: String,
}

impl RedisSessions {
    /// Uses `redis` (nothing is sent until the first call); sessions unused
    /// for `idle` seconds expire.
    pub fn new(redis: Redis, idle: u64) -> Self {
        Self {
            redis,
            idle,
            feature: Feature::new("bff_sessions"),
            update: redis::Script::new(UPDATE_TOKENS),
            touch: redis::Script::new(TOUCH),
            unlock: redis::Script::new(UNLOCK),
            owner: portcullis_core::crypto::random_token(16)
                .unwrap_or_else(|_| format!("pid-{}", std::process::id())),
        }
    }

    fn lock_key(&self, key: &[u8; 32]) -> String {
        self.redis.key(&format!("bff:r:{}", hex(key)))
    }

    fn session_key(&self, key: &[u8; 32]) -> String {
        self.redis.key(&format!("bff:s:{}", hex(key)))
    }

    fn login_key(&self, key: &[u8; 32]) -> String {
        self.redis.key(&format!("bff:l:{}", hex(key)))
    }

    /// Counts the outcome in the feature's health and converts the error.
    fn record<T>(&self, r: redis::RedisResult<T>) -> Result<T, SessionStoreError> {
        self.feature.record(&r);
        r.map_err(|e| SessionStoreError::Redis(e.to_string()))
    }
}

/// Lower-case hex of a row key.
fn hex(key: &[u8; 32]) -> String {
    use std::fmt::Write;
    key.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD_NO_PAD
}

fn bad_reply(what: &str) -> SessionStoreError {
    SessionStoreError::Redis(format!("unexpected session data: {what}"))
}

fn parse_row(mut h: HashMap<String, Vec<u8>>) -> Result<SessionRow, SessionStoreError> {
    let mut text = |k: &str| {
        h.remove(k)
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| bad_reply(k))
    };
    let num = |s: String, k: &str| s.parse::<u64>().map_err(|_| bad_reply(k));
    let subject = text("subject")?;
    let profile = text("profile")?;
    let scope = text("scope")?;
    let csrf = text("csrf")?;
    let access_expires_at = num(text("access_expires_at")?, "access_expires_at")?;
    let created_at = num(text("created_at")?, "created_at")?;
    let last_seen = num(text("last_seen")?, "last_seen")?;
    let expires_at = num(text("expires_at")?, "expires_at")?;
    let version = text("version")?
        .parse::<i64>()
        .map_err(|_| bad_reply("version"))?;
    let tokens = h.remove("tokens").ok_or_else(|| bad_reply("tokens"))?;
    Ok(SessionRow {
        subject,
        profile,
        scope,
        tokens,
        access_expires_at,
        csrf,
        created_at,
        last_seen,
        expires_at,
        version,
    })
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn put_login(&self, key: &[u8; 32], l: &PendingLogin) -> Result<(), SessionStoreError> {
        let stored = StoredLogin {
            state: l.state.clone(),
            nonce: l.nonce.clone(),
            verifier: b64().encode(&l.verifier),
            return_to: l.return_to.clone(),
            expires_at: l.expires_at,
        };
        let json = serde_json::to_string(&stored).map_err(|e| bad_reply(&e.to_string()))?;
        let mut c = self.redis.conn();
        let r: redis::RedisResult<()> = redis::cmd("SET")
            .arg(self.login_key(key))
            .arg(json)
            .arg("EXAT")
            .arg(l.expires_at.max(1))
            .query_async(&mut c)
            .await;
        self.record(r)
    }

    async fn take_login(&self, key: &[u8; 32]) -> Result<Option<PendingLogin>, SessionStoreError> {
        let mut c = self.redis.conn();
        let r: redis::RedisResult<Option<String>> = redis::cmd("GETDEL")
            .arg(self.login_key(key))
            .query_async(&mut c)
            .await;
        let Some(json) = self.record(r)? else {
            return Ok(None);
        };
        let s: StoredLogin = serde_json::from_str(&json).map_err(|_| bad_reply("login"))?;
        let verifier = b64()
            .decode(&s.verifier)
            .map_err(|_| bad_reply("login verifier"))?;
        Ok(Some(PendingLogin {
            state: s.state,
            nonce: s.nonce,
            verifier,
            return_to: s.return_to,
            expires_at: s.expires_at,
        }))
    }

    async fn create(&self, key: &[u8; 32], s: &SessionRow) -> Result<(), SessionStoreError> {
        let k = self.session_key(key);
        let mut c = self.redis.conn();
        let r: redis::RedisResult<()> = redis::pipe()
            .atomic()
            .del(&k)
            .ignore()
            .hset_multiple(
                &k,
                &[
                    ("subject", s.subject.as_bytes()),
                    ("profile", s.profile.as_bytes()),
                    ("scope", s.scope.as_bytes()),
                    ("tokens", s.tokens.as_slice()),
                    (
                        "access_expires_at",
                        s.access_expires_at.to_string().as_bytes(),
                    ),
                    ("csrf", s.csrf.as_bytes()),
                    ("created_at", s.created_at.to_string().as_bytes()),
                    ("last_seen", s.last_seen.to_string().as_bytes()),
                    ("expires_at", s.expires_at.to_string().as_bytes()),
                    ("version", s.version.to_string().as_bytes()),
                ],
            )
            .ignore()
            .cmd("EXPIREAT")
            .arg(&k)
            .arg(
                s.expires_at
                    .min(s.last_seen.saturating_add(self.idle))
                    .max(1),
            )
            .ignore()
            .query_async(&mut c)
            .await;
        self.record(r)
    }

    async fn get(&self, key: &[u8; 32]) -> Result<Option<SessionRow>, SessionStoreError> {
        let mut c = self.redis.conn();
        let r: redis::RedisResult<HashMap<String, Vec<u8>>> =
            c.hgetall(self.session_key(key)).await;
        let h = self.record(r)?;
        if h.is_empty() {
            return Ok(None);
        }
        parse_row(h).map(Some)
    }

    async fn update_tokens(
        &self,
        key: &[u8; 32],
        version: i64,
        tokens: &[u8],
        access_expires_at: u64,
    ) -> Result<bool, SessionStoreError> {
        let mut c = self.redis.conn();
        let r: redis::RedisResult<i64> = self
            .update
            .key(self.session_key(key))
            .arg(version.to_string())
            .arg(tokens)
            .arg(access_expires_at.to_string())
            .invoke_async(&mut c)
            .await;
        Ok(self.record(r)? == 1)
    }

    async fn touch(&self, key: &[u8; 32], now: u64) -> Result<(), SessionStoreError> {
        let mut c = self.redis.conn();
        let r: redis::RedisResult<i64> = self
            .touch
            .key(self.session_key(key))
            .arg(now.to_string())
            .arg(now.saturating_add(self.idle).to_string())
            .invoke_async(&mut c)
            .await;
        self.record(r).map(|_| ())
    }

    async fn delete(&self, key: &[u8; 32]) -> Result<bool, SessionStoreError> {
        let mut c = self.redis.conn();
        let r: redis::RedisResult<u64> = c.del(self.session_key(key)).await;
        Ok(self.record(r)? == 1)
    }

    async fn purge(&self, _now: u64, _idle: u64, _limit: u32) -> Result<u64, SessionStoreError> {
        Ok(0)
    }

    fn cacheable(&self) -> bool {
        false
    }

    async fn lock_refresh(
        &self,
        key: &[u8; 32],
        ttl: std::time::Duration,
    ) -> Result<bool, SessionStoreError> {
        let mut c = self.redis.conn();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let r: redis::RedisResult<Option<String>> = redis::cmd("SET")
            .arg(self.lock_key(key))
            .arg(&self.owner)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut c)
            .await;
        Ok(self.record(r)?.is_some())
    }

    async fn unlock_refresh(&self, key: &[u8; 32]) -> Result<(), SessionStoreError> {
        let mut c = self.redis.conn();
        let r: redis::RedisResult<i64> = self
            .unlock
            .key(self.lock_key(key))
            .arg(&self.owner)
            .invoke_async(&mut c)
            .await;
        self.record(r).map(|_| ())
    }
}
