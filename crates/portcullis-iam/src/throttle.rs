//! Sign-in throttling: failures are counted per account (`user:<name>`,
//! lowercased, known or not, so the answer never tells whether the account
//! exists) and per client IP (`ip:<address>`, which tolerates four times as
//! many, for shared addresses). Past the free failures each new one doubles
//! the wait (1 s, 2 s, 4 s … up to `throttle_max_delay_secs`); during the
//! wait every attempt is refused without checking the password. Counts live
//! in the store, so a restart does not reset them.

use crate::http::SharedState;
use crate::login::throttle_delay;
use crate::store::StoreError;

fn keys(username: &str, ip: &str) -> [(String, u32); 2] {
    let name: String = username.trim().to_lowercase().chars().take(64).collect();
    [(format!("user:{name}"), 1), (format!("ip:{ip}"), 4)]
}

/// Whether a sign-in may be tried now.
pub async fn check(s: &SharedState, username: &str, ip: &str) -> Result<bool, StoreError> {
    let now = s.clock.now();
    let c = &s.login;
    for (key, factor) in keys(username, ip) {
        let (n, last) = s.store.login_failures(&key, c.throttle_window, now).await?;
        let delay = throttle_delay(n, c.throttle_free_failures * factor, c.throttle_max_delay);
        if delay > 0 && now < last + delay {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Counts a failed sign-in.
pub async fn failed(s: &SharedState, username: &str, ip: &str) -> Result<(), StoreError> {
    let now = s.clock.now();
    for (key, _) in keys(username, ip) {
        s.store
            .add_login_failure(&key, s.login.throttle_window, now)
            .await?;
    }
    Ok(())
}

/// Forgets the account's failures after a successful sign-in (the IP's
/// stay: one good password does not clear a spray from that address).
pub async fn succeeded(s: &SharedState, username: &str) -> Result<(), StoreError> {
    let [(key, _), _] = keys(username, "");
    s.store.clear_login_failures(&key).await
}
