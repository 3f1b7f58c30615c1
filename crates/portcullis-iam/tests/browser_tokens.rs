//! After the browser login: refresh-token rotation and replay, userinfo,
//! RP-initiated logout, sign-in throttling, disabled users.

#![allow(clippy::unwrap_used)]

mod browser;

use browser::*;
use portcullis_test_support::TestIam;
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;

async fn refresh(iam: &TestIam, token: &str) -> (u16, Value) {
    browser::token(
        iam,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", token),
        ],
    )
    .await
}

fn grace(secs: u64) -> impl FnOnce(&mut portcullis_iam::config::RawConfig) {
    move |c| c.login.refresh_token_reuse_grace_secs = Some(secs)
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_replay_revokes_the_family_also_after_a_restart() {
    let mut iam = TestIam::start_with(grace(0)).await;
    let secret = setup(&iam).await;
    let mut b = Browser::new();
    let code = spa_code(&iam, &mut b).await;
    let (_, t1) = redeem(&iam, &code, &[]).await;
    let r1 = t1["refresh_token"].as_str().unwrap().to_owned();

    let (status, t2) = refresh(&iam, &r1).await;
    assert_eq!(status, 200, "{t2}");
    let r2 = t2["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(r1, r2, "rotated");
    assert_eq!(t2["scope"], "email openid profile");
    assert!(t2["id_token"].is_string());
    let a2 = t2["access_token"].as_str().unwrap().to_owned();
    // Bound to the client: another one cannot use it (and spends nothing).
    let r = iam
        .http
        .post(iam.token_url())
        .basic_auth("web", Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &r2)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A wider scope is refused.
    let (status, e) = browser::token(
        &iam,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", &r2),
            ("scope", "openid api:read"),
        ],
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_scope")));
    // A narrower one is fine.
    let (status, t3) = browser::token(
        &iam,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", &r2),
            ("scope", "openid"),
        ],
    )
    .await;
    assert_eq!(status, 200, "r2 was not spent by the refused request: {t3}");
    assert_eq!(t3["scope"], "openid");
    let r3 = t3["refresh_token"].as_str().unwrap().to_owned();

    // Restart: everything is in the store.
    iam.stop().await;
    let dir = std::mem::replace(&mut iam.dir, tempfile::tempdir().unwrap());
    let mut raw = portcullis_test_support::test_config(dir.path());
    raw.login.refresh_token_reuse_grace_secs = Some(0);
    let iam = TestIam::start_in(dir, raw, Arc::new(portcullis_core::SystemClock)).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // r1 was rotated long ago: replay → the whole family is revoked.
    let (status, e) = refresh(&iam, &r1).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "{e}"
    );
    assert!(
        !active(&iam, &secret, &a2).await,
        "access tokens of the family are revoked"
    );
    let (status, _) = refresh(&iam, &r3).await;
    assert_eq!(status, 400, "the newest token of the family too");
}

#[tokio::test]
async fn a_concurrent_refresh_within_the_grace_window_is_served() {
    let iam = TestIam::start_with(grace(30)).await;
    setup(&iam).await;
    let mut b = Browser::new();
    let code = spa_code(&iam, &mut b).await;
    let (_, t1) = redeem(&iam, &code, &[]).await;
    let r1 = t1["refresh_token"].as_str().unwrap();
    let (a, b2) = tokio::join!(refresh(&iam, r1), refresh(&iam, r1));
    assert_eq!((a.0, b2.0), (200, 200), "{a:?} {b2:?}");
}

#[tokio::test]
async fn userinfo_answers_for_the_user_and_logout_ends_the_session_and_its_tokens() {
    let iam = TestIam::start().await;
    let secret = setup(&iam).await;
    let mut b = Browser::new();
    let code = spa_code(&iam, &mut b).await;
    let (_, t) = redeem(&iam, &code, &[]).await;
    let access = t["access_token"].as_str().unwrap();
    let id_token = t["id_token"].as_str().unwrap();
    let r = iam
        .http
        .get(iam.url("/oauth2/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let u: Value = r.json().await.unwrap();
    assert_eq!(u["sub"], payload(id_token)["sub"]);
    assert_eq!(u["email"], "alice@example.com");
    assert_eq!(u["preferred_username"], "alice");
    let r = iam
        .http
        .get(iam.url("/oauth2/userinfo"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let logout = |extra: &[(&str, &str)]| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in extra {
            q.append_pair(k, v);
        }
        format!("{}/oauth2/logout?{}", iam.base, q.finish())
    };
    // Unregistered return address, or no hint: an error page, no redirect.
    for bad in [
        logout(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://evil.example/"),
        ]),
        logout(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://spa.example/bye?x"),
        ]),
        logout(&[("post_logout_redirect_uri", "https://spa.example/bye")]),
        logout(&[
            ("id_token_hint", access),
            ("post_logout_redirect_uri", "https://spa.example/bye"),
        ]),
    ] {
        let p = b.get(&bad).await;
        assert_eq!((p.status, p.location.is_none()), (400, true), "{bad}");
    }
    let p = b
        .get(&logout(&[
            ("id_token_hint", id_token),
            ("post_logout_redirect_uri", "https://spa.example/bye"),
            ("state", "bye-1"),
        ]))
        .await;
    assert_eq!(p.status, 302, "{}", p.body);
    assert_eq!(p.query()["state"], "bye-1");
    assert!(p.location.unwrap().starts_with("https://spa.example/bye?"));
    assert!(
        !b.cookies.contains_key("portcullis_session"),
        "the cookie is cleared"
    );
    assert!(
        !active(&iam, &secret, access).await,
        "the session's access token is revoked"
    );
    let (status, _) = refresh(&iam, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "and its refresh token");
    // The SSO session is over, even with the old cookie value.
    let page = b
        .get(&authorize_url(&iam, "spa", SPA_CB, &[("prompt", "none")]))
        .await;
    assert_eq!(page.query()["error"], "login_required");
}

#[tokio::test]
async fn disabling_a_user_revokes_their_sessions_and_refresh_tokens() {
    let iam = TestIam::start().await;
    setup(&iam).await;
    let mut b = Browser::new();
    let code = spa_code(&iam, &mut b).await;
    let (_, t) = redeem(&iam, &code, &[]).await;
    let sub = payload(t["id_token"].as_str().unwrap())["sub"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = iam
        .admin_call(
            Method::PATCH,
            &format!("/admin/users/{sub}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (status, _) = refresh(&iam, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);
    let page = b
        .get(&authorize_url(&iam, "spa", SPA_CB, &[("prompt", "none")]))
        .await;
    assert_eq!(page.query()["error"], "login_required");
}

#[tokio::test]
async fn a_hundred_failed_sign_ins_are_throttled_without_telling_whether_the_user_exists() {
    let iam = TestIam::start().await;
    setup(&iam).await;
    let mut b = Browser::new();
    let page = b.get(&authorize_url(&iam, "spa", SPA_CB, &[])).await;
    let mut throttled = 0;
    for n in 0..100 {
        let user = if n % 2 == 0 { "alice" } else { "nobody" };
        let r = sign_in(&iam, &mut b, &page, user, "wrong").await;
        assert!(matches!(r.status, 401 | 429), "{}", r.status);
        if r.status == 429 {
            throttled += 1;
            assert!(r.body.contains("Too many failed sign-in attempts"));
        }
    }
    assert!(throttled >= 80, "only {throttled} of 100 throttled");
    // Even the right password is refused while the account is throttled.
    let r = sign_in(&iam, &mut b, &page, "alice", PASSWORD).await;
    assert_eq!(r.status, 429);
}

#[tokio::test]
async fn codes_expire_after_a_minute_and_max_age_and_the_session_lifetime_follow_the_clock() {
    let clock = portcullis_test_support::ManualClock::now_real();
    let iam = TestIam::start_full(|c| c.login.session_ttl_secs = Some(3600), clock.clone()).await;
    setup(&iam).await;
    let mut b = Browser::new();
    let code = spa_code(&iam, &mut b).await;
    clock.advance(61);
    let (status, e) = redeem(&iam, &code, &[]).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));

    clock.advance(100);
    let page = b
        .get(&authorize_url(&iam, "spa", SPA_CB, &[("max_age", "120")]))
        .await;
    assert_eq!(page.status, 200, "authenticated 161 s ago: sign in again");
    let page = b
        .get(&authorize_url(&iam, "spa", SPA_CB, &[("max_age", "600")]))
        .await;
    assert_eq!(page.status, 302, "recent enough");
    let (status, t) = redeem(&iam, &page.query()["code"], &[]).await;
    assert_eq!(status, 200);
    let id = payload(t["id_token"].as_str().unwrap());
    assert_eq!(
        id["auth_time"].as_u64().unwrap() + 161,
        id["iat"].as_u64().unwrap()
    );

    clock.advance(3600);
    let page = b
        .get(&authorize_url(&iam, "spa", SPA_CB, &[("prompt", "none")]))
        .await;
    assert_eq!(
        page.query()["error"],
        "login_required",
        "the SSO session expired"
    );
}

#[tokio::test]
async fn a_code_redeemed_twice_at_once_succeeds_once() {
    let iam = TestIam::start().await;
    setup(&iam).await;
    let mut b = Browser::new();
    for _ in 0..5 {
        let code = spa_code(&iam, &mut b).await;
        let (x, y) = tokio::join!(redeem(&iam, &code, &[]), redeem(&iam, &code, &[]));
        let mut statuses = [x.0, y.0];
        statuses.sort();
        assert_eq!(statuses, [200, 400], "{x:?} {y:?}");
    }
}

#[tokio::test]
async fn revoking_a_refresh_token_revokes_its_grant() {
    let iam = TestIam::start().await;
    let secret = setup(&iam).await;
    let mut b = Browser::new();
    let code = spa_code(&iam, &mut b).await;
    let (_, t) = redeem(&iam, &code, &[]).await;
    let (access, rt) = (
        t["access_token"].as_str().unwrap(),
        t["refresh_token"].as_str().unwrap(),
    );
    // Another client cannot.
    let r = iam
        .http
        .post(iam.url("/oauth2/revoke"))
        .basic_auth("web", Some(&secret))
        .form(&[("token", rt)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A public client proves nothing, so it may not introspect.
    let r = iam
        .http
        .post(iam.url("/oauth2/introspect"))
        .form(&[("token", access), ("client_id", "spa")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The public client itself can revoke (RFC 7009 §2.1).
    let r = iam
        .http
        .post(iam.url("/oauth2/revoke"))
        .form(&[("token", rt), ("client_id", "spa")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!active(&iam, &secret, access).await);
    let (status, _) = refresh(&iam, rt).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn refresh_tokens_have_an_idle_and_an_absolute_lifetime() {
    let clock = portcullis_test_support::ManualClock::now_real();
    let iam = TestIam::start_full(
        |c| {
            c.login.refresh_token_idle_ttl_secs = Some(100);
            c.login.refresh_token_max_ttl_secs = Some(250);
        },
        clock.clone(),
    )
    .await;
    setup(&iam).await;
    let mut b = Browser::new();
    let code = spa_code(&iam, &mut b).await;
    let (_, t) = redeem(&iam, &code, &[]).await;
    let mut rt = t["refresh_token"].as_str().unwrap().to_owned();
    for step in 0..2 {
        clock.advance(90);
        let (status, t) = refresh(&iam, &rt).await;
        assert_eq!(status, 200, "step {step}: {t}");
        rt = t["refresh_token"].as_str().unwrap().to_owned();
    }
    clock.advance(90);
    let (status, e) = refresh(&iam, &rt).await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "270 s > the absolute 250 s"
    );

    // Idle: a fresh grant whose token is left unused past 100 s.
    let code = spa_code(&iam, &mut b).await;
    let (_, t) = redeem(&iam, &code, &[]).await;
    clock.advance(101);
    let (status, _) = refresh(&iam, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);
}
