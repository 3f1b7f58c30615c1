//! Users: the admin API, password checks, config-declared users, argon2
//! parameters.

#![allow(clippy::unwrap_used)]

use portcullis_core::{Secret, SystemClock};
use portcullis_iam::config::{RawConfig, RawUser};
use portcullis_iam::model::{UserId, Username};
use portcullis_iam::users::{UserInput, UserRegistry};
use portcullis_test_support::{TEST_ADMIN_TOKEN, TestIam, test_config};
use reqwest::Method;
use serde_json::{Value, json};
use std::str::FromStr;
use std::sync::Arc;

/// A registry over a server's database (a second connection, as a replica
/// would have), hashing with the parameters `raw` configures.
async fn registry(raw: RawConfig) -> UserRegistry {
    let config = raw.validate(&|_| None).unwrap();
    let store = portcullis_iam::store::open(&config.database_url)
        .await
        .unwrap();
    UserRegistry::new(store, Arc::new(SystemClock), &config.passwords)
        .await
        .unwrap()
}

/// The stored PHC string of `username`.
async fn stored_hash(iam: &TestIam, username: &str) -> String {
    let url = format!("sqlite://{}", iam.dir.path().join("iam.db").display());
    let store = portcullis_iam::store::open(&url).await.unwrap();
    let u = store
        .get_user_by_username(&Username::from_str(username).unwrap())
        .await
        .unwrap()
        .unwrap();
    u.password_hash.unwrap().expose().to_owned()
}

async fn call(iam: &TestIam, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let r = iam.admin_call(method, path, body).await;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!(!text.contains("$argon2"), "a response shows a hash: {text}");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The id of the user `verify_password` accepts, if any.
async fn login(users: &UserRegistry, name: &str, password: &str) -> Option<UserId> {
    let user = users.verify_password(name, &pw(password)).await.unwrap();
    user.map(|u| u.id)
}

/// `POST /admin/users`.
async fn create(iam: &TestIam, body: Value) -> (u16, Value) {
    call(iam, Method::POST, "/admin/users", Some(body)).await
}

/// `POST /admin/users/{user}/password`; returns the status.
async fn set_password(iam: &TestIam, user: &str, password: &str) -> u16 {
    let path = format!("/admin/users/{user}/password");
    let body = json!({ "password": password });
    call(iam, Method::POST, &path, Some(body)).await.0
}

/// Sends `body`; expects a 400 `invalid_request` whose description says `message`.
async fn expect_400(iam: &TestIam, method: Method, path: &str, body: Value, message: &str) {
    let (status, v) = call(iam, method, path, Some(body.clone())).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(v["error"], "invalid_request");
    let d = v["error_description"].as_str().unwrap();
    assert!(d.contains(message), "{body}: {d}");
}

fn pw(s: &str) -> Secret {
    Secret::new(s)
}

#[tokio::test]
async fn user_lifecycle_through_the_admin_api() {
    let iam = TestIam::start().await;
    let (status, alice) = create(
        &iam,
        json!({
            "username": "Alice",
            "password": "correct horse battery",
            "email": "alice@example.com",
            "email_verified": true,
            "display_name": "Alice Liddell",
            "roles": ["admin", "orders:write", "admin"],
            "groups": ["staff"],
        }),
    )
    .await;
    assert_eq!(status, 201, "{alice}");
    let id = alice["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("u_") && id.len() == 24, "{id}");
    assert_eq!(alice["username"], "alice", "stored lowercased");
    assert_eq!(alice["roles"], json!(["admin", "orders:write"]));
    assert_eq!(alice["has_password"], true);
    assert_eq!(alice["email_verified"], true);
    assert!(alice.get("password").is_none());

    // Without a password, and with defaults.
    let (status, bob) = create(&iam, json!({"username": "bob"})).await;
    assert_eq!(status, 201);
    assert_eq!(bob["has_password"], false);
    assert_eq!(bob["display_name"], "bob");
    assert_eq!(bob["enabled"], true);
    assert!(bob.get("email").is_none());

    let (_, list) = call(&iam, Method::GET, "/admin/users", None).await;
    let names: Vec<&str> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    // Shown by id or by username in any case.
    for key in [id.as_str(), "alice", "ALICE"] {
        let (status, shown) = call(&iam, Method::GET, &format!("/admin/users/{key}"), None).await;
        assert_eq!(status, 200, "{key}");
        assert_eq!(shown["id"], id.as_str());
    }
    assert_eq!(
        call(&iam, Method::GET, "/admin/users/nobody", None).await.0,
        404
    );
    assert_eq!(
        call(&iam, Method::GET, "/admin/users/u_nobody", None)
            .await
            .0,
        404
    );

    // Update: only the fields given; a new email is unverified; null removes.
    let (status, updated) = call(
        &iam,
        Method::PATCH,
        &format!("/admin/users/{id}"),
        Some(json!({"email": "alice@example.org", "groups": []})),
    )
    .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["email"], "alice@example.org");
    assert_eq!(updated["email_verified"], false);
    assert_eq!(updated["groups"], json!([]));
    assert_eq!(updated["display_name"], "Alice Liddell");
    assert_eq!(updated["has_password"], true);
    let (_, cleared) = call(
        &iam,
        Method::PATCH,
        "/admin/users/alice",
        Some(json!({"email": null, "username": "alice2", "enabled": false})),
    )
    .await;
    assert!(cleared.get("email").is_none());
    assert_eq!(cleared["username"], "alice2");
    assert_eq!(cleared["enabled"], false);
    assert_eq!(cleared["id"], id.as_str(), "the id never changes");

    // Set a password for bob.
    assert_eq!(set_password(&iam, "bob", "bob's new password").await, 204);
    let (_, bob) = call(&iam, Method::GET, "/admin/users/bob", None).await;
    assert_eq!(bob["has_password"], true);

    // Delete; then 404s.
    assert_eq!(
        call(&iam, Method::DELETE, &format!("/admin/users/{id}"), None)
            .await
            .0,
        204
    );
    for (m, path) in [
        (Method::GET, format!("/admin/users/{id}")),
        (Method::DELETE, format!("/admin/users/{id}")),
        (Method::PATCH, "/admin/users/alice2".to_owned()),
    ] {
        let body = (m == Method::PATCH).then(|| json!({}));
        assert_eq!(call(&iam, m, &path, body).await.0, 404, "{path}");
    }
    assert_eq!(set_password(&iam, id.as_str(), "long enough").await, 404);
}

#[tokio::test]
async fn duplicate_usernames_conflict_whatever_their_case() {
    let iam = TestIam::start().await;
    for name in ["Bob", "carol"] {
        let (status, _) = create(&iam, json!({ "username": name })).await;
        assert_eq!(status, 201);
    }
    for name in ["bob", "BOB", "bOb"] {
        let (status, v) =
            create(&iam, json!({ "username": name, "password": "long enough" })).await;
        assert_eq!(status, 409, "{name}");
        assert_eq!(v["error"], "conflict");
    }
    let (status, _) = call(
        &iam,
        Method::PATCH,
        "/admin/users/carol",
        Some(json!({"username": "BOB"})),
    )
    .await;
    assert_eq!(status, 409, "renaming onto a taken name");
    let (_, list) = call(&iam, Method::GET, "/admin/users", None).await;
    assert_eq!(list["users"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn invalid_input_gets_a_precise_400() {
    let iam = TestIam::start().await;
    let long = "x".repeat(1025);
    let cases = [
        (json!({}), "username: required"),
        (json!({"username": ""}), "username: 1 to 64 characters"),
        (
            json!({"username": "a".repeat(65)}),
            "username: 1 to 64 characters",
        ),
        (json!({"username": "has space"}), "username: only letters"),
        (json!({"username": "u_alice"}), "reserved for user ids"),
        (json!({"username": ".."}), "reserved"),
        (
            json!({"username": "a", "password": "short"}),
            "password: at least 8 characters",
        ),
        (
            json!({"username": "a", "password": long}),
            "password: at most 1024 bytes",
        ),
        (
            json!({"username": "a", "email": "nope"}),
            "email: not an email",
        ),
        (
            json!({"username": "a", "email_verified": true}),
            "email_verified: there is no email",
        ),
        (json!({"username": "a", "roles": ["two words"]}), "roles:"),
        (json!({"username": "a", "groups": [""]}), "groups:"),
        (
            json!({"username": "a", "display_name": ""}),
            "display_name:",
        ),
        (json!({"username": "a", "id": "u_mine"}), "unknown field"),
        (
            json!({"username": "a", "password_hash": "$argon2id$"}),
            "unknown field",
        ),
    ];
    for (body, message) in cases {
        expect_400(&iam, Method::POST, "/admin/users", body, message).await;
    }
    let (status, _) = create(&iam, json!({"username": "dave"})).await;
    assert_eq!(status, 201);
    let set = "/admin/users/dave/password";
    for (m, path, body, message) in [
        (
            Method::POST,
            set,
            json!({"password": "short"}),
            "password: at least 8 characters",
        ),
        (
            Method::POST,
            set,
            json!({"password": "x".repeat(1025)}),
            "password: at most 1024 bytes",
        ),
        (Method::POST, set, json!({}), "missing field `password`"),
        (
            Method::PATCH,
            "/admin/users/dave",
            json!({"password": "long enough"}),
            "set it with POST /admin/users/{id}/password",
        ),
    ] {
        expect_400(&iam, m, path, body, message).await;
    }
    let (_, dave) = call(&iam, Method::GET, "/admin/users/dave", None).await;
    assert_eq!(dave["has_password"], false, "nothing was set");
}

#[tokio::test]
async fn user_routes_require_the_admin_token() {
    let iam = TestIam::start().await;
    let routes = [
        (Method::GET, "/admin/users"),
        (Method::POST, "/admin/users"),
        (Method::GET, "/admin/users/alice"),
        (Method::PATCH, "/admin/users/alice"),
        (Method::DELETE, "/admin/users/alice"),
        (Method::POST, "/admin/users/alice/password"),
    ];
    for (m, path) in routes {
        for auth in [None, Some("Bearer wrong-token-0123456789")] {
            let mut r = iam
                .http
                .request(m.clone(), format!("{}{path}", iam.admin))
                .json(&json!({"username": "alice", "password": "long enough"}));
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{m} {path} {auth:?}");
        }
    }
    // Nothing was created by the refused requests.
    let (_, list) = call(&iam, Method::GET, "/admin/users", None).await;
    assert_eq!(list["users"], json!([]));
    // Not on the public listener.
    let r = iam
        .http
        .get(iam.url("/admin/users"))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn verify_password_accepts_only_the_right_password_of_an_enabled_user() {
    let dir = tempfile::tempdir().unwrap();
    let users = registry(test_config(dir.path())).await;
    let create = |name: &str, password: Option<&str>| UserInput {
        username: Some(name.into()),
        password: password.map(pw),
        ..Default::default()
    };
    let alice = users
        .create(create("alice", Some("correct horse")), "test")
        .await
        .unwrap();
    users.create(create("nopass", None), "test").await.unwrap();
    let off = users
        .create(create("off", Some("correct horse")), "test")
        .await
        .unwrap();
    users
        .update(
            &off.id,
            UserInput {
                enabled: Some(false),
                ..Default::default()
            },
            "test",
        )
        .await
        .unwrap();

    let alice_id = Some(alice.id.clone());
    assert_eq!(login(&users, "alice", "correct horse").await, alice_id);
    assert_eq!(
        login(&users, "ALICE", "correct horse").await,
        alice_id,
        "usernames are case-insensitive"
    );
    for (name, password, why) in [
        ("alice", "wrong horse", "wrong password"),
        ("alice", "Correct horse", "passwords are case-sensitive"),
        ("nobody", "correct horse", "unknown user"),
        ("not a username!", "correct horse", "impossible username"),
        ("nopass", "", "no password set"),
        ("nopass", "correct horse", "no password set"),
        ("off", "correct horse", "disabled"),
    ] {
        assert_eq!(login(&users, name, password).await, None, "{why}");
    }
    let huge = "x".repeat(100_000);
    assert_eq!(login(&users, "alice", &huge).await, None, "oversize");

    // A new password replaces the old one at once.
    users
        .set_password(&alice.id, &pw("battery staple"), "test")
        .await
        .unwrap();
    assert_eq!(login(&users, "alice", "correct horse").await, None);
    assert_eq!(login(&users, "alice", "battery staple").await, alice_id);
}

#[tokio::test]
async fn argon2_parameters_from_config_are_used() {
    let iam = TestIam::start_with(|c| {
        c.passwords.memory_kib = Some(2048);
        c.passwords.iterations = Some(3);
        c.passwords.parallelism = Some(2);
    })
    .await;
    let (status, _) = create(
        &iam,
        json!({"username": "erin", "password": "correct horse"}),
    )
    .await;
    assert_eq!(status, 201);
    let phc = stored_hash(&iam, "erin").await;
    let fields: Vec<&str> = phc.split('$').collect();
    assert_eq!(fields[1], "argon2id", "{phc}");
    assert_eq!(fields[2], "v=19");
    assert_eq!(fields[3], "m=2048,t=3,p=2");
    // A random salt: the same password hashes differently.
    create(
        &iam,
        json!({"username": "frank", "password": "correct horse"}),
    )
    .await;
    let other = stored_hash(&iam, "frank").await;
    assert_ne!(fields[4], other.split('$').nth(4).unwrap());
}

#[tokio::test]
async fn declared_users_are_present_after_start_and_upserted_on_restart() {
    let declare = |roles: &[&str], memory_kib: u32| {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        move |c: &mut RawConfig| {
            c.mode = Some("development".into());
            c.passwords.memory_kib = Some(memory_kib);
            c.users = vec![
                RawUser {
                    username: "Dev".into(),
                    password: Some("dev password".into()),
                    email: Some("dev@example.com".into()),
                    email_verified: Some(true),
                    roles: roles.clone(),
                    ..Default::default()
                },
                RawUser {
                    username: "ops".into(),
                    groups: vec!["oncall".into()],
                    ..Default::default()
                },
            ];
        }
    };
    let mut iam = TestIam::start_with(declare(&["admin"], 1024)).await;
    let (_, dev) = call(&iam, Method::GET, "/admin/users/dev", None).await;
    assert_eq!(dev["roles"], json!(["admin"]));
    assert_eq!(dev["email_verified"], true);
    assert_eq!(dev["has_password"], true);
    let (_, ops) = call(&iam, Method::GET, "/admin/users/ops", None).await;
    assert_eq!(ops["has_password"], false);
    // A password set through the API on a user declared without one is kept.
    assert_eq!(set_password(&iam, "ops", "ops password").await, 204);
    let hash_before = stored_hash(&iam, "dev").await;
    let ops_hash = stored_hash(&iam, "ops").await;

    let restart = |iam: &mut TestIam, tweak: Box<dyn FnOnce(&mut RawConfig)>| {
        let dir = std::mem::replace(&mut iam.dir, tempfile::tempdir().unwrap());
        let mut raw = test_config(dir.path());
        tweak(&mut raw);
        (dir, raw)
    };

    // Same declaration: a no-op (same updated_at, same hash).
    iam.stop().await;
    let (dir, raw) = restart(&mut iam, Box::new(declare(&["admin"], 1024)));
    let mut iam = TestIam::start_in(dir, raw, Arc::new(SystemClock)).await;
    let (_, again) = call(&iam, Method::GET, "/admin/users/dev", None).await;
    assert_eq!(again["updated_at"], dev["updated_at"]);
    assert_eq!(stored_hash(&iam, "dev").await, hash_before);

    // Changed declaration: replaced in place (same id), password kept.
    iam.stop().await;
    let (dir, raw) = restart(&mut iam, Box::new(declare(&["admin", "auditor"], 1024)));
    let mut iam = TestIam::start_in(dir, raw, Arc::new(SystemClock)).await;
    let (_, changed) = call(&iam, Method::GET, "/admin/users/dev", None).await;
    assert_eq!(changed["id"], dev["id"]);
    assert_eq!(changed["created_at"], dev["created_at"]);
    assert_eq!(changed["roles"], json!(["admin", "auditor"]));
    assert_eq!(stored_hash(&iam, "dev").await, hash_before);
    assert_eq!(stored_hash(&iam, "ops").await, ops_hash);
    let (_, list) = call(&iam, Method::GET, "/admin/users", None).await;
    assert_eq!(list["users"].as_array().unwrap().len(), 2);

    // New argon2 parameters: the declared password is re-hashed with them.
    iam.stop().await;
    let (dir, raw) = restart(&mut iam, Box::new(declare(&["admin", "auditor"], 2048)));
    let verify_raw = raw.clone();
    let iam = TestIam::start_in(dir, raw, Arc::new(SystemClock)).await;
    let rehashed = stored_hash(&iam, "dev").await;
    assert!(rehashed.contains("$m=2048,"), "{rehashed}");
    let users = registry(verify_raw).await;
    assert!(login(&users, "dev", "dev password").await.is_some());
    assert!(login(&users, "ops", "ops password").await.is_some());
}

#[tokio::test]
async fn declared_password_hashes_are_stored_as_given() {
    use argon2::PasswordHasher;
    let params = argon2::Params::new(512, 1, 1, None).unwrap();
    let phc = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(b"from a hash")
        .unwrap()
        .to_string();
    let declared = phc.clone();
    let iam = TestIam::start_with(move |c| {
        c.users = vec![RawUser {
            username: "prod".into(),
            password_hash: Some(declared),
            ..Default::default()
        }];
    })
    .await;
    assert_eq!(stored_hash(&iam, "prod").await, phc);
    let users = registry(test_config(iam.dir.path())).await;
    assert!(login(&users, "prod", "from a hash").await.is_some());
}
