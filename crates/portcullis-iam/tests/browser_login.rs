//! The browser login at the IAM server: authorization endpoint, sign-in and
//! consent pages, SSO session, code redemption with PKCE, ID tokens.

#![allow(clippy::unwrap_used)]

mod browser;

use browser::*;
use portcullis_test_support::TestIam;
use serde_json::Value;

#[tokio::test]
async fn the_code_flow_with_pkce_issues_id_access_and_refresh_tokens_and_sso_skips_the_form() {
    let iam = TestIam::start().await;
    let secret = setup(&iam).await;
    let mut b = Browser::new();
    let page = b
        .get(&authorize_url(
            &iam,
            "spa",
            SPA_CB,
            &[("login_hint", "alice")],
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert!(
        page.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(page.body.contains(r#"name="username""#) && page.body.contains(r#"value="alice""#));
    assert!(!page.body.contains("<script"), "usable without JavaScript");

    let done = sign_in(&iam, &mut b, &page, "alice", PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert!(
        done.location
            .as_deref()
            .unwrap()
            .starts_with("https://spa.example/cb?code=")
    );
    let q = done.query();
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], iam.issuer, "RFC 9207");
    let session_cookie = done
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("portcullis_session="))
        .unwrap();
    assert!(session_cookie.contains("HttpOnly") && session_cookie.contains("SameSite=Lax"));

    let (status, t) = redeem(&iam, &q["code"], &[]).await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "email openid profile");
    let access = t["access_token"].as_str().unwrap();
    let at = payload(access);
    assert_eq!(at["client_id"], "spa");
    assert_eq!(at["aud"], "api");
    let id = t["id_token"].as_str().unwrap();
    let header: Value = payload(&format!("x.{}", id.split('.').next().unwrap()));
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "JWT");
    let c = payload(id);
    assert_eq!(c["aud"], "spa");
    assert_eq!(c["azp"], "spa");
    assert_eq!(c["iss"], iam.issuer);
    assert_eq!(c["sub"], at["sub"]);
    assert_eq!(c["nonce"], "n-1");
    assert_eq!(c["amr"][0], "pwd");
    assert_eq!(c["name"], "Alice Liddell");
    assert_eq!(c["preferred_username"], "alice");
    assert_eq!(c["email"], "alice@example.com");
    assert_eq!(c["email_verified"], true);
    assert!(c["auth_time"].as_u64().is_some() && c["sid"].as_str().is_some());
    assert_eq!(
        c["at_hash"].as_str().unwrap(),
        portcullis_core::jose::at_hash(portcullis_core::jose::SigningAlgorithm::Rs256, access)
    );
    // The ID token verifies against the published JWKS.
    let jwks = iam.jwks().await;
    let kid = header["kid"].as_str().unwrap();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(set.find(kid).unwrap()).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_audience(&["spa"]);
    v.set_issuer(&[&iam.issuer]);
    jsonwebtoken::decode::<Value>(id, &key, &v).unwrap();
    assert!(t["refresh_token"].as_str().unwrap().len() >= 43);
    assert!(active(&iam, &secret, access).await);

    // SSO: the next request (another client too) gets a code without a form.
    let again = b.get(&authorize_url(&iam, "spa", SPA_CB, &[])).await;
    assert_eq!(again.status, 302, "{}", again.body);
    assert!(again.query().contains_key("code"));
    let (status, t2) = redeem(&iam, &again.query()["code"], &[]).await;
    assert_eq!(status, 200);
    assert_eq!(payload(t2["id_token"].as_str().unwrap())["sid"], c["sid"]);
}

#[tokio::test]
async fn redirect_uri_variants_and_bad_clients_show_an_error_page_and_never_redirect() {
    let iam = TestIam::start().await;
    setup(&iam).await;
    let mut b = Browser::new();
    for bad in [
        "https://SPA.example/cb",
        "https://spa.example/CB",
        "https://spa.example/cb/%2E%2E/cb",
        "https://spa.example/x/%2E%2E/cb",
        "https://spa.example/cb%252F",
        "https://attacker@spa.example/cb",
        "https://spa.example@attacker.example/cb",
        "https://spa.example/cb?x=1",
        "https://spa.example/cb#frag",
        "https://spa.example/cb/",
        "https://spa.example:444/cb",
        "https://evil.example/cb",
        "http://spa.example/cb",
        "https://spa.example/cb2",
        "http://127.0.0.1.evil.example/cb",
        "http://127.0.0.1:8080/cb/../x",
    ] {
        let page = b.get(&authorize_url(&iam, "spa", bad, &[])).await;
        assert_eq!(page.status, 400, "{bad}");
        assert!(page.location.is_none(), "{bad} redirected");
        assert!(page.body.contains("not registered"), "{bad}: {}", page.body);
    }
    // Loopback redirect URIs may vary the port only.
    let page = b
        .get(&authorize_url(
            &iam,
            "spa",
            "http://127.0.0.1:53127/cb",
            &[],
        ))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    // Unknown client, a client without the code grant, and HTML in the id.
    for client in ["nobody", "<script>alert(1)</script>"] {
        let page = b.get(&authorize_url(&iam, client, SPA_CB, &[])).await;
        assert_eq!(page.status, 400);
        assert!(page.location.is_none());
        assert!(!page.body.contains("<script>"));
    }
    let missing = format!(
        "{}/oauth2/authorize?response_type=code&client_id=spa",
        iam.base
    );
    let page = b.get(&missing).await;
    assert_eq!((page.status, page.location.is_none()), (400, true));
}

#[tokio::test]
async fn request_errors_after_the_redirect_uri_is_known_go_back_to_the_client_encoded() {
    let iam = TestIam::start().await;
    setup(&iam).await;
    let mut b = Browser::new();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("response_type", "token")], "unsupported_response_type"),
        (&[("scope", "openid admin")], "invalid_scope"),
        (&[("code_challenge", "")], "invalid_request"),
        (&[("code_challenge_method", "plain")], "invalid_request"),
        (&[("code_challenge", &CHALLENGE[..42])], "invalid_request"),
        (&[("prompt", "none login")], "invalid_request"),
        (&[("max_age", "-1")], "invalid_request"),
        (&[("request", "eyJ...")], "request_not_supported"),
        (&[("prompt", "none")], "login_required"),
    ];
    for (extra, error) in cases {
        let url = authorize_url(&iam, "spa", SPA_CB, extra);
        let page = b.get(&url).await;
        assert_eq!(page.status, 302, "{extra:?}: {}", page.body);
        let q = page.query();
        assert_eq!(q["error"], *error, "{extra:?}: {q:?}");
        assert_eq!(q["state"], "st-1");
        assert_eq!(q["iss"], iam.issuer);
    }
    // CR/LF and HTML in the state and in an echoed scope: encoded, never raw.
    let url = authorize_url(
        &iam,
        "spa",
        SPA_CB,
        &[
            ("scope", "openid <b>\r\nX:y</b>"),
            ("state", "a\r\nSet-Cookie: x=1<script>"),
        ],
    );
    let url = url
        .replacen("state=st-1&", "", 1)
        .replacen("scope=openid+profile+email&", "", 1);
    let page = b.get(&url).await;
    assert_eq!(page.status, 302, "{}", page.body);
    let loc = page.location.clone().unwrap();
    assert!(
        !loc.contains('\r') && !loc.contains('\n') && !loc.contains('<'),
        "{loc}"
    );
    assert!(
        page.headers
            .get("set-cookie")
            .is_none_or(|c| !c.to_str().unwrap().starts_with("x="))
    );
    let q = page.query();
    assert_eq!(q["error"], "invalid_scope");
    assert_eq!(
        q["state"], "a\r\nSet-Cookie: x=1<script>",
        "returned unchanged, encoded"
    );
}

#[tokio::test]
async fn codes_are_single_use_and_bound_to_client_redirect_uri_and_pkce_verifier() {
    let iam = TestIam::start().await;
    let secret = setup(&iam).await;
    let mut b = Browser::new();

    // PKCE: missing, wrong, 42 and 129 characters, each refused.
    let code = spa_code(&iam, &mut b).await;
    let long = "a".repeat(129);
    for verifier in [
        "",
        "x",
        &VERIFIER[..42],
        &long,
        "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
    ] {
        let (status, e) = redeem(&iam, &code, &[("code_verifier", verifier)]).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{verifier:?}: {e}"
        );
    }
    // Another redirect_uri, or none.
    for uri in ["http://127.0.0.1/cb", "https://spa.example/cb?", ""] {
        let (status, e) = redeem(&iam, &code, &[("redirect_uri", uri)]).await;
        assert_eq!(
            (status, e["error"].as_str()),
            (400, Some("invalid_grant")),
            "{uri:?}"
        );
    }
    // Another client.
    let (status, e) = redeem_as_web(&iam, &secret, &code, SPA_CB).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));

    // The right request still works (the refusals did not spend the code)...
    let (status, t) = redeem(&iam, &code, &[]).await;
    assert_eq!(status, 200, "{t}");
    let access = t["access_token"].as_str().unwrap();
    assert!(active(&iam, &secret, access).await);
    // ...once: a second redemption fails and revokes what the first issued.
    let (status, e) = redeem(&iam, &code, &[]).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));
    assert!(
        !active(&iam, &secret, access).await,
        "the first access token is revoked"
    );
    let (status, e) = token(
        &iam,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", "spa"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(
        (status, e["error"].as_str()),
        (400, Some("invalid_grant")),
        "and its refresh token"
    );

    // A verifier without a challenge: the web app does not require PKCE.
    let url = authorize_url(&iam, "web", WEB_CB, &[]).replace(
        &format!("&code_challenge={CHALLENGE}&code_challenge_method=S256"),
        "",
    );
    let page = b.get(&url).await;
    assert_eq!(page.status, 200, "third-party: consent page");
    let consent = b
        .post(
            &iam.url("/oauth2/consent"),
            &[
                ("request", &page.field("request")),
                ("csrf", &page.field("csrf")),
                ("decision", "allow"),
            ],
        )
        .await;
    let code = consent.query()["code"].clone();
    let (status, e) = redeem_as_web(&iam, &secret, &code, WEB_CB).await;
    assert_eq!((status, e["error"].as_str()), (400, Some("invalid_grant")));
    // A public client cannot use any other grant.
    let (status, e) = token(
        &iam,
        &[("grant_type", "client_credentials"), ("client_id", "spa")],
    )
    .await;
    assert_eq!((status, e["error"].as_str()), (401, Some("invalid_client")));
}

#[tokio::test]
async fn sign_in_and_consent_forms_refuse_cross_site_posts_and_do_not_tell_which_field_was_wrong() {
    let iam = TestIam::start().await;
    setup(&iam).await;
    let mut b = Browser::new();
    let page = b.get(&authorize_url(&iam, "spa", SPA_CB, &[])).await;
    let (request, csrf) = (page.field("request"), page.field("csrf"));
    // Login CSRF: the attacker's browser (no cookie, or its own) posts the form.
    let mut attacker = Browser::new();
    let form = [
        ("request", request.as_str()),
        ("csrf", csrf.as_str()),
        ("username", "alice"),
        ("password", PASSWORD),
    ];
    let r = attacker.post(&iam.url("/oauth2/login"), &form).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(attacker.cookies.is_empty(), "no session was made");
    let _ = attacker.get(&authorize_url(&iam, "spa", SPA_CB, &[])).await;
    let r = attacker.post(&iam.url("/oauth2/login"), &form).await;
    assert_eq!(r.status, 403);
    // A forged or altered sealed request.
    let r = b
        .post(
            &iam.url("/oauth2/login"),
            &[
                ("request", "AAAA"),
                ("csrf", &csrf),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 400);

    // Same answer for a wrong password and an unknown user.
    let wrong = sign_in(&iam, &mut b, &page, "alice", "wrong").await;
    let unknown = sign_in(&iam, &mut b, &page, "mallory", "wrong").await;
    assert_eq!((wrong.status, unknown.status), (401, 401));
    assert!(wrong.body.contains("Incorrect username or password."));
    assert_eq!(
        wrong.body.replace("alice", "USER"),
        unknown.body.replace("mallory", "USER")
    );
    assert_eq!(wrong.headers["x-frame-options"], "DENY");

    // Third-party consent: deny goes back with access_denied.
    let page = b.get(&authorize_url(&iam, "web", WEB_CB, &[])).await;
    let done = sign_in(&iam, &mut b, &page, "alice", PASSWORD).await;
    assert_eq!(done.status, 200, "a consent page");
    assert!(
        done.body.contains("Web &lt;b&gt;App&lt;/b&gt;") || done.body.contains("Web &#60;b&#62;"),
        "{}",
        done.body
    );
    let deny = b
        .post(
            &iam.url("/oauth2/consent"),
            &[
                ("request", &done.field("request")),
                ("csrf", &done.field("csrf")),
                ("decision", "deny"),
            ],
        )
        .await;
    assert_eq!(deny.status, 303);
    assert_eq!(deny.query()["error"], "access_denied");
    // prompt=none for a third-party client with a session: consent_required.
    let page = b
        .get(&authorize_url(&iam, "web", WEB_CB, &[("prompt", "none")]))
        .await;
    assert_eq!(page.query()["error"], "consent_required");
    // prompt=login forces the form despite the session; max_age too.
    let page = b
        .get(&authorize_url(&iam, "spa", SPA_CB, &[("prompt", "login")]))
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"name="password""#));
}

#[tokio::test]
async fn unreadable_form_posts_get_an_html_error_page_not_json() {
    let iam = TestIam::start_with(|c| c.max_body_bytes = Some(4096)).await;
    let http = portcullis_test_support::http_client();
    let cases: [(&str, &str, String, u16); 3] = [
        ("/oauth2/login", "application/json", "{}".into(), 415),
        (
            "/oauth2/consent",
            "application/x-www-form-urlencoded",
            format!("request={}", "a".repeat(8192)),
            413,
        ),
        (
            "/oauth2/login",
            "application/x-www-form-urlencoded",
            "username=a&username=<script>".into(),
            400,
        ),
    ];
    for (path, content_type, body, status) in cases {
        let r = http
            .post(iam.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path} {content_type}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        let html = r.text().await.unwrap();
        assert!(!html.contains("<script>"), "{html}");
    }
}

#[tokio::test]
async fn consent_is_remembered_within_the_approved_scopes_and_can_be_withdrawn() {
    let iam = TestIam::start().await;
    let secret = setup(&iam).await;
    let mut b = Browser::new();
    async fn allow(iam: &TestIam, b: &mut Browser, page: Page) -> Page {
        let (request, csrf) = (page.field("request"), page.field("csrf"));
        let form = [
            ("request", request.as_str()),
            ("csrf", csrf.as_str()),
            ("decision", "allow"),
        ];
        b.post(&iam.url("/oauth2/consent"), &form).await
    }
    // First approval: openid only.
    let page = b
        .get(&authorize_url(&iam, "web", WEB_CB, &[("scope", "openid")]))
        .await;
    let page = sign_in(&iam, &mut b, &page, "alice", PASSWORD).await;
    assert_eq!(page.status, 200, "a consent page");
    let done = allow(&iam, &mut b, page).await;
    assert!(done.query().contains_key("code"));

    // Within what was approved: no page, also with prompt=none.
    let again = b
        .get(&authorize_url(&iam, "web", WEB_CB, &[("scope", "openid")]))
        .await;
    assert_eq!(again.status, 302, "{}", again.body);
    assert!(again.query().contains_key("code"));
    let quiet = b
        .get(&authorize_url(
            &iam,
            "web",
            WEB_CB,
            &[("scope", "openid"), ("prompt", "none")],
        ))
        .await;
    assert!(quiet.query().contains_key("code"), "{:?}", quiet.location);

    // A wider request asks again; the approval then covers both.
    let wider = b.get(&authorize_url(&iam, "web", WEB_CB, &[])).await;
    assert_eq!(wider.status, 200, "profile was never approved");
    let done = allow(&iam, &mut b, wider).await;
    let code = done.query()["code"].clone();
    let (status, tokens) = redeem_as_web(&iam, &secret, &code, WEB_CB).await;
    assert_eq!(status, 200, "{tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let within = b
        .get(&authorize_url(
            &iam,
            "web",
            WEB_CB,
            &[("scope", "profile openid")],
        ))
        .await;
    assert_eq!(within.status, 302);
    // prompt=consent asks even so.
    let forced = b
        .get(&authorize_url(
            &iam,
            "web",
            WEB_CB,
            &[("prompt", "consent")],
        ))
        .await;
    assert_eq!(forced.status, 200);
    assert!(forced.body.contains("decision"));

    // The admin API lists it, and withdrawing it revokes the client's tokens.
    let r = iam
        .admin_call(reqwest::Method::GET, "/admin/users/alice/consents", None)
        .await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["consents"][0]["client_id"], "web");
    assert_eq!(v["consents"][0]["scope"], "openid profile");
    let r = iam
        .admin_call(
            reqwest::Method::DELETE,
            "/admin/users/alice/consents/web",
            None,
        )
        .await;
    assert_eq!(r.status(), 204);
    let (status, e) = token(
        &iam,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "web"),
        ],
    )
    .await;
    assert!(status == 400 || status == 401, "{status} {e}");
    let r = iam
        .http
        .post(iam.token_url())
        .basic_auth("web", Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_grant");
    let page = b
        .get(&authorize_url(&iam, "web", WEB_CB, &[("scope", "openid")]))
        .await;
    assert_eq!(page.status, 200, "asked again after withdrawal");
    let r = iam
        .admin_call(
            reqwest::Method::DELETE,
            "/admin/users/alice/consents/web",
            None,
        )
        .await;
    assert_eq!(r.status(), 404);
}
