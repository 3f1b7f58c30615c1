//! The database test servers use: a SQLite file in the test's directory
//! (default), or, with `PORTCULLIS_TEST_DATABASE=postgres`, a fresh
//! PostgreSQL database per directory on the server of
//! `PORTCULLIS_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`).
//!
//! PostgreSQL databases are named `pc_t<pid>_<hash of the directory>`, so
//! a restart on the same directory finds its data again. They are dropped
//! by the next test process that creates one, once their process is gone.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Once;

/// Set to `postgres` to run tests against PostgreSQL.
pub const TEST_DATABASE_ENV: &str = "PORTCULLIS_TEST_DATABASE";
/// The PostgreSQL server (and a database to connect to) test databases are made on.
pub const TEST_POSTGRES_URL_ENV: &str = "PORTCULLIS_TEST_POSTGRES_URL";
/// The default for [`TEST_POSTGRES_URL_ENV`].
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Pool settings of test servers on PostgreSQL: small pools, since one
/// test binary runs many servers.
const TEST_POOL: &str = "max_connections=4&acquire_timeout=20";

/// Whether tests run against PostgreSQL.
pub fn on_postgres() -> bool {
    std::env::var(TEST_DATABASE_ENV).is_ok_and(|v| v == "postgres")
}

/// The database URL of a test server keeping its data in `dir`.
pub fn test_database_url(dir: &Path) -> String {
    if on_postgres() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        dir.hash(&mut h);
        let name = format!("pc_t{}_{:016x}", std::process::id(), h.finish());
        postgres_database(&name)
    } else {
        format!("sqlite://{}", dir.join("iam.db").display())
    }
}

/// The PostgreSQL server URL tests use.
pub fn postgres_server_url() -> String {
    std::env::var(TEST_POSTGRES_URL_ENV).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into())
}

/// Creates the PostgreSQL database `name` unless it exists; returns its URL.
/// Panics, naming the server, if PostgreSQL is unreachable.
pub fn postgres_database(name: &str) -> String {
    assert!(
        name.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "database name {name:?}"
    );
    let server = postgres_server_url();
    let mut url = url::Url::parse(&server).expect("PORTCULLIS_TEST_POSTGRES_URL is a URL");
    url.set_path(name);
    url.set_query(Some(TEST_POOL));
    let name = name.to_owned();
    // The caller may be inside a runtime: connect from a thread of our own.
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(create(&server, &name))
    })
    .join()
    .expect("creating the test database");
    url.into()
}

async fn create(server: &str, name: &str) {
    let mut conn = PgConnection::connect(server).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {server} ({e}). The PostgreSQL test run needs it: \
             start it (e.g. `service postgresql start`, database `test`, trust auth for \
             127.0.0.1) or set {TEST_POSTGRES_URL_ENV}; only tests on SQLite run without it \
             ({TEST_DATABASE_ENV} unset; tests/replicas.rs always needs PostgreSQL)"
        )
    });
    static SWEEP: Once = Once::new();
    let mut sweep = false;
    SWEEP.call_once(|| sweep = true);
    if sweep {
        drop_stale(&mut conn).await;
    }
    let done = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await;
    match done {
        Ok(_) => {}
        // 42P04: duplicate_database (a restart on the same directory).
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
        Err(e) => panic!("CREATE DATABASE {name}: {e}"),
    }
}

/// Drops the test databases of processes that have exited.
async fn drop_stale(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'pc\\_t%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let pid = name
            .strip_prefix("pc_t")
            .and_then(|r| r.split('_').next())
            .unwrap_or_default();
        let alive = pid.is_empty() || Path::new("/proc").join(pid).exists();
        if !alive && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut *conn)
                .await;
        }
    }
}
