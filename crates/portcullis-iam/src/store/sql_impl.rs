//! The `Store` implementation both SQL back-ends share, written once: a
//! macro expanded in each back-end's module, where the names it uses
//! resolve to that back-end's `pool` field, `insert_revocation`, `login`
//! module and `CLIENT_EXISTS` statement (the shared statements and row
//! readers come from `rows`).

/// Implements [`super::Store`] for `$store` (a struct with a `pool` field).
macro_rules! sql_store_impl {
    ($store:ty) => {
        #[async_trait]
        impl Store for $store {
            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
                let row = sqlx::query("SELECT * FROM clients WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(client_from_row).transpose()
            }

            async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
                let rows = sqlx::query("SELECT * FROM clients ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(client_from_row).collect()
            }

            async fn create_client(&self, client: &Client) -> Result<(), StoreError> {
                unique(
                    bind_client(sqlx::query(INSERT_CLIENT), client)
                        .execute(&self.pool)
                        .await,
                )?;
                Ok(())
            }

            async fn upsert_client(
                &self,
                client: &Client,
                revoke: Option<&NewRevocation>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                bind_client(sqlx::query(UPSERT_CLIENT), client)
                    .execute(&mut *tx)
                    .await?;
                if let Some(r) = revoke {
                    insert_revocation(&mut tx, r).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn update_client(
                &self,
                client: &Client,
                revoke: Option<&NewRevocation>,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let exists = sqlx::query(CLIENT_EXISTS)
                    .bind(client.id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
                if !exists {
                    return Ok(false);
                }
                bind_client(sqlx::query(UPSERT_CLIENT), client)
                    .execute(&mut *tx)
                    .await?;
                if let Some(r) = revoke {
                    insert_revocation(&mut tx, r).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_client(
                &self,
                id: &ClientId,
                revoke: &NewRevocation,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let n = sqlx::query("DELETE FROM clients WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Ok(false);
                }
                insert_revocation(&mut tx, revoke).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
                let rows =
                    sqlx::query("SELECT * FROM signing_keys ORDER BY activate_at, created_at")
                        .fetch_all(&self.pool)
                        .await?;
                rows.iter().map(key_from_row).collect()
            }

            async fn insert_first_key(
                &self,
                key: &KeyRecord,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                lock_keys(&mut tx).await?;
                let n = sqlx::query(super::rows::INSERT_FIRST_KEY)
                    .bind(&key.kid)
                    .bind(key.alg.as_str())
                    .bind(&key.sealed_private)
                    .bind(key.public_jwk.to_string())
                    .bind(i(key.created_at))
                    .bind(i(key.activate_at))
                    .bind(i(now))
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(n == 1)
            }

            async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
                sqlx::query(INSERT_KEY)
                    .bind(&key.kid)
                    .bind(key.alg.as_str())
                    .bind(&key.sealed_private)
                    .bind(key.public_jwk.to_string())
                    .bind(i(key.created_at))
                    .bind(i(key.activate_at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_key(&self, kid: &str) -> Result<(), StoreError> {
                sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
                    .bind(kid)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn use_assertion_jti(
                &self,
                client_id: &ClientId,
                jti: &str,
                expires_at: UnixTime,
            ) -> Result<bool, StoreError> {
                let n = sqlx::query(USE_ASSERTION)
                    .bind(client_id.as_str())
                    .bind(jti)
                    .bind(i(expires_at))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn add_revocation(&self, r: &NewRevocation) -> Result<i64, StoreError> {
                let mut tx = self.pool.begin().await?;
                let seq = insert_revocation(&mut tx, r).await?;
                tx.commit().await?;
                Ok(seq)
            }

            async fn revocations_since(
                &self,
                cursor: i64,
                now: UnixTime,
                limit: u32,
            ) -> Result<Vec<Revocation>, StoreError> {
                let rows = sqlx::query(REVOCATIONS_SINCE)
                    .bind(cursor)
                    .bind(i(now))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(revocation_from_row).collect()
            }

            async fn is_revoked(
                &self,
                jti: &str,
                client_id: &str,
                issued_at: UnixTime,
            ) -> Result<bool, StoreError> {
                let row = sqlx::query(IS_REVOKED)
                    .bind(jti)
                    .bind(client_id)
                    .bind(i(issued_at))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.is_some())
            }

            async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError> {
                let mut n = 0;
                for sql in rows::PURGE {
                    loop {
                        let deleted = sqlx::query(sql)
                            .bind(i(now))
                            .bind(rows::PURGE_BATCH)
                            .execute(&self.pool)
                            .await?
                            .rows_affected();
                        n += deleted;
                        if deleted < rows::PURGE_BATCH as u64 {
                            break;
                        }
                        tokio::time::sleep(rows::PURGE_PAUSE).await;
                    }
                }
                Ok(n)
            }

            // ----- Roles ---------------------------------------------------------

            async fn list_roles(&self) -> Result<Vec<crate::model::Role>, StoreError> {
                let rows = sqlx::query("SELECT * FROM roles ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(super::rows::role_from_row).collect()
            }

            async fn create_role(&self, role: &crate::model::Role) -> Result<(), StoreError> {
                unique(
                    super::rows::bind_role(sqlx::query(super::rows::INSERT_ROLE), role)
                        .execute(&self.pool)
                        .await,
                )?;
                Ok(())
            }

            async fn update_role(&self, role: &crate::model::Role) -> Result<bool, StoreError> {
                let done = super::rows::bind_role(sqlx::query(super::rows::UPDATE_ROLE), role)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_role(&self, name: &str) -> Result<bool, StoreError> {
                let n = sqlx::query("DELETE FROM roles WHERE name = $1")
                    .bind(name)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            // ----- Users ---------------------------------------------------------

            async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
                let row = sqlx::query("SELECT * FROM users WHERE id = $1")
                    .bind(id.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(user_from_row).transpose()
            }

            async fn get_user_by_username(
                &self,
                username: &Username,
            ) -> Result<Option<User>, StoreError> {
                let row = sqlx::query("SELECT * FROM users WHERE username = $1")
                    .bind(username.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(user_from_row).transpose()
            }

            async fn list_users(&self) -> Result<Vec<User>, StoreError> {
                let rows = sqlx::query("SELECT * FROM users ORDER BY username")
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(user_from_row).collect()
            }

            async fn create_user(&self, user: &User) -> Result<(), StoreError> {
                unique(
                    bind_user(sqlx::query(INSERT_USER), user)
                        .execute(&self.pool)
                        .await,
                )?;
                Ok(())
            }

            async fn update_user(&self, user: &User) -> Result<bool, StoreError> {
                let done = bind_user(sqlx::query(UPDATE_USER), user)
                    .execute(&self.pool)
                    .await;
                Ok(unique(done)?.rows_affected() == 1)
            }

            async fn delete_user(&self, id: &UserId) -> Result<bool, StoreError> {
                let n = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn set_password_hash(
                &self,
                id: &UserId,
                phc: Option<&str>,
                updated_at: UnixTime,
            ) -> Result<bool, StoreError> {
                let n = sqlx::query(SET_PASSWORD)
                    .bind(phc)
                    .bind(i(updated_at))
                    .bind(id.as_str())
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(n == 1)
            }

            async fn upsert_user(&self, user: &User) -> Result<(), StoreError> {
                unique(
                    bind_user(sqlx::query(UPSERT_USER), user)
                        .execute(&self.pool)
                        .await,
                )?;
                Ok(())
            }

            // ----- Browser login -------------------------------------------------

            async fn create_session(
                &self,
                digest: &[u8],
                s: &LoginSession,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                login::create_session(&self.pool, digest, s, now).await
            }

            async fn get_session(
                &self,
                digest: &[u8],
                now: UnixTime,
            ) -> Result<Option<LoginSession>, StoreError> {
                login::get_session(&self.pool, digest, now).await
            }

            async fn end_session(&self, sid: &str, now: UnixTime) -> Result<bool, StoreError> {
                login::end_session(&self.pool, sid, now).await
            }

            async fn end_user_sessions(
                &self,
                user_id: &str,
                now: UnixTime,
            ) -> Result<u64, StoreError> {
                login::end_user_sessions(&self.pool, user_id, now).await
            }

            async fn insert_code(
                &self,
                digest: &[u8],
                code: &AuthCode,
                now: UnixTime,
            ) -> Result<(), StoreError> {
                login::insert_code(&self.pool, digest, code, now).await
            }

            async fn get_code(&self, digest: &[u8]) -> Result<Option<AuthCode>, StoreError> {
                login::get_code(&self.pool, digest).await
            }

            async fn redeem_code(
                &self,
                digest: &[u8],
                grant: &Grant,
                issued: &Issuance,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                login::redeem_code(&self.pool, digest, grant, issued, now).await
            }

            async fn revoke_code_grant(
                &self,
                digest: &[u8],
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                login::revoke_code_grant(&self.pool, digest, now).await
            }

            async fn rotate_refresh(
                &self,
                digest: &[u8],
                client_id: &str,
                issued: &Issuance,
                grace: u64,
                now: UnixTime,
            ) -> Result<RefreshOutcome, StoreError> {
                login::rotate_refresh(&self.pool, digest, client_id, issued, grace, now).await
            }

            async fn refresh_grant(&self, digest: &[u8]) -> Result<Option<Grant>, StoreError> {
                login::refresh_grant(&self.pool, digest).await
            }

            async fn revoke_grant(
                &self,
                grant_id: &str,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                login::revoke_grant(&self.pool, grant_id, now).await
            }

            async fn add_login_failure(
                &self,
                key: &str,
                window: u64,
                now: UnixTime,
            ) -> Result<u32, StoreError> {
                login::add_login_failure(&self.pool, key, window, now).await
            }

            async fn login_failures(
                &self,
                key: &str,
                window: u64,
                now: UnixTime,
            ) -> Result<(u32, UnixTime), StoreError> {
                login::login_failures(&self.pool, key, window, now).await
            }

            async fn clear_login_failures(&self, key: &str) -> Result<(), StoreError> {
                login::clear_login_failures(&self.pool, key).await
            }

            async fn consent(
                &self,
                user_id: &str,
                client_id: &str,
            ) -> Result<Option<Consent>, StoreError> {
                login::consent(&self.pool, user_id, client_id).await
            }

            async fn save_consent(&self, consent: &Consent) -> Result<(), StoreError> {
                login::save_consent(&self.pool, consent).await
            }

            async fn list_consents(&self, user_id: &str) -> Result<Vec<Consent>, StoreError> {
                login::list_consents(&self.pool, user_id).await
            }

            async fn revoke_consent(
                &self,
                user_id: &str,
                client_id: &str,
                now: UnixTime,
            ) -> Result<bool, StoreError> {
                login::revoke_consent(&self.pool, user_id, client_id, now).await
            }
        }
    };
}

/// The browser-login statements both back-ends share, expanded in each
/// back-end's login module, which defines `Pool`, `Tx`, `write_tx`,
/// `revoke_grants_where` (with its `By`), `REFRESH_LOCKED` (the
/// refresh-token lookup) and `LIVE_GRANTS_OF` (a user's grants to a
/// client), both locking their rows where the back-end can.
macro_rules! sql_login_fns {
    () => {
        use super::StoreError;
        use super::login::{AuthCode, Consent, Grant, Issuance, LoginSession, RefreshOutcome};
        use super::rows::{
            ADD_LOGIN_FAILURE, CREATE_SESSION, END_SESSION, END_USER_SESSIONS, GET_SESSION,
            INSERT_CODE, INSERT_GRANT, INSERT_GRANT_TOKEN, INSERT_REFRESH, LOGIN_FAILURES,
            REFRESH_GRANT, ROTATE_REFRESH, RefreshStep, SAVE_CONSENT, USE_CODE, code_from_row,
            consent_from_row, count, failures_from_row, grant_from_row, i, json_list, refresh_step,
            session_from_row,
        };
        use portcullis_core::UnixTime;
        use sqlx::Row;

        pub(super) async fn create_session(
            pool: &Pool,
            digest: &[u8],
            s: &LoginSession,
            now: UnixTime,
        ) -> Result<(), StoreError> {
            sqlx::query(CREATE_SESSION)
                .bind(digest)
                .bind(&s.sid)
                .bind(&s.user_id)
                .bind(i(s.auth_time))
                .bind(i(now))
                .bind(i(s.expires_at))
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(super) async fn get_session(
            pool: &Pool,
            digest: &[u8],
            now: UnixTime,
        ) -> Result<Option<LoginSession>, StoreError> {
            let row = sqlx::query(GET_SESSION)
                .bind(digest)
                .bind(i(now))
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(session_from_row).transpose()
        }

        pub(super) async fn end_session(
            pool: &Pool,
            sid: &str,
            now: UnixTime,
        ) -> Result<bool, StoreError> {
            let mut tx = write_tx(pool).await?;
            let n = sqlx::query(END_SESSION)
                .bind(i(now))
                .bind(sid)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            revoke_grants_where(&mut tx, By::Sid, sid, now).await?;
            tx.commit().await?;
            Ok(n == 1)
        }

        pub(super) async fn end_user_sessions(
            pool: &Pool,
            user_id: &str,
            now: UnixTime,
        ) -> Result<u64, StoreError> {
            let mut tx = write_tx(pool).await?;
            sqlx::query(END_USER_SESSIONS)
                .bind(i(now))
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            let n = revoke_grants_where(&mut tx, By::User, user_id, now).await?;
            tx.commit().await?;
            Ok(n)
        }

        pub(super) async fn insert_code(
            pool: &Pool,
            digest: &[u8],
            c: &AuthCode,
            now: UnixTime,
        ) -> Result<(), StoreError> {
            sqlx::query(INSERT_CODE)
                .bind(digest)
                .bind(&c.client_id)
                .bind(&c.redirect_uri)
                .bind(c.code_challenge.as_deref())
                .bind(c.nonce.as_deref())
                .bind(&c.scope)
                .bind(json_list(&c.audiences))
                .bind(&c.user_id)
                .bind(i(c.auth_time))
                .bind(&c.sid)
                .bind(i(now))
                .bind(i(c.expires_at))
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(super) async fn get_code(
            pool: &Pool,
            digest: &[u8],
        ) -> Result<Option<AuthCode>, StoreError> {
            let row = sqlx::query("SELECT * FROM auth_codes WHERE digest = $1")
                .bind(digest)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(code_from_row).transpose()
        }

        async fn record_issuance(
            tx: &mut Tx<'_>,
            grant_id: &str,
            issued: &Issuance,
            now: UnixTime,
        ) -> Result<(), StoreError> {
            sqlx::query(INSERT_GRANT_TOKEN)
                .bind(grant_id)
                .bind(&issued.access_jti)
                .bind(i(issued.access_exp))
                .execute(&mut **tx)
                .await?;
            if let Some((digest, idle_exp)) = &issued.refresh {
                sqlx::query(INSERT_REFRESH)
                    .bind(digest.as_slice())
                    .bind(grant_id)
                    .bind(i(now))
                    .bind(i(*idle_exp))
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(())
        }

        pub(super) async fn redeem_code(
            pool: &Pool,
            digest: &[u8],
            g: &Grant,
            issued: &Issuance,
            now: UnixTime,
        ) -> Result<bool, StoreError> {
            let mut tx = write_tx(pool).await?;
            let n = sqlx::query(USE_CODE)
                .bind(i(now))
                .bind(&g.id)
                .bind(digest)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                return Ok(false);
            }
            sqlx::query(INSERT_GRANT)
                .bind(&g.id)
                .bind(&g.client_id)
                .bind(&g.user_id)
                .bind(&g.sid)
                .bind(&g.scope)
                .bind(json_list(&g.audiences))
                .bind(i(g.auth_time))
                .bind(i(now))
                .bind(i(g.expires_at))
                .bind(g.cnf_x5t.as_deref())
                .execute(&mut *tx)
                .await?;
            record_issuance(&mut tx, &g.id, issued, now).await?;
            tx.commit().await?;
            Ok(true)
        }

        pub(super) async fn revoke_code_grant(
            pool: &Pool,
            digest: &[u8],
            now: UnixTime,
        ) -> Result<bool, StoreError> {
            let mut tx = write_tx(pool).await?;
            let grant: Option<String> =
                sqlx::query("SELECT grant_id FROM auth_codes WHERE digest = $1")
                    .bind(digest)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get("grant_id"))
                    .transpose()?
                    .flatten();
            let Some(grant) = grant else {
                return Ok(false);
            };
            revoke_grants_where(&mut tx, By::Id, &grant, now).await?;
            tx.commit().await?;
            Ok(true)
        }

        pub(super) async fn revoke_grant(
            pool: &Pool,
            grant_id: &str,
            now: UnixTime,
        ) -> Result<bool, StoreError> {
            let mut tx = write_tx(pool).await?;
            let n = revoke_grants_where(&mut tx, By::Id, grant_id, now).await?;
            tx.commit().await?;
            Ok(n == 1)
        }

        pub(super) async fn refresh_grant(
            pool: &Pool,
            digest: &[u8],
        ) -> Result<Option<Grant>, StoreError> {
            let row = sqlx::query(REFRESH_GRANT)
                .bind(digest)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(grant_from_row).transpose()
        }

        pub(super) async fn rotate_refresh(
            pool: &Pool,
            digest: &[u8],
            client_id: &str,
            issued: &Issuance,
            grace: u64,
            now: UnixTime,
        ) -> Result<RefreshOutcome, StoreError> {
            let mut tx = write_tx(pool).await?;
            let row = sqlx::query(REFRESH_LOCKED)
                .bind(digest)
                .fetch_optional(&mut *tx)
                .await?;
            let step = match row {
                Some(row) => refresh_step(&row, client_id, grace, now)?,
                None => RefreshStep::Invalid,
            };
            let grant = match step {
                RefreshStep::Invalid => return Ok(RefreshOutcome::Invalid),
                RefreshStep::Replay(grant) => {
                    revoke_grants_where(&mut tx, By::Id, &grant.id, now).await?;
                    tx.commit().await?;
                    return Ok(RefreshOutcome::Replayed { grant_id: grant.id });
                }
                // Within the grace window a concurrent refresh gets tokens too.
                RefreshStep::Serve(grant) => grant,
                RefreshStep::Rotate(grant) => {
                    let n = sqlx::query(ROTATE_REFRESH)
                        .bind(i(now))
                        .bind(digest)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    if n != 1 {
                        // Lost a race with a concurrent rotation: within the grace
                        // window by definition, so it is served like one.
                        tracing::debug!("concurrent refresh-token rotation");
                    }
                    grant
                }
            };
            record_issuance(&mut tx, &grant.id, issued, now).await?;
            tx.commit().await?;
            Ok(RefreshOutcome::Rotated(grant))
        }

        pub(super) async fn add_login_failure(
            pool: &Pool,
            key: &str,
            window: u64,
            now: UnixTime,
        ) -> Result<u32, StoreError> {
            let row = sqlx::query(ADD_LOGIN_FAILURE)
                .bind(key)
                .bind(i(now))
                .bind(i(window))
                .fetch_one(pool)
                .await?;
            Ok(count(row.try_get(0)?))
        }

        pub(super) async fn login_failures(
            pool: &Pool,
            key: &str,
            window: u64,
            now: UnixTime,
        ) -> Result<(u32, UnixTime), StoreError> {
            let row = sqlx::query(LOGIN_FAILURES)
                .bind(key)
                .fetch_optional(pool)
                .await?;
            failures_from_row(row.as_ref(), window, now)
        }

        pub(super) async fn clear_login_failures(pool: &Pool, key: &str) -> Result<(), StoreError> {
            sqlx::query("DELETE FROM login_failures WHERE key = $1")
                .bind(key)
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(super) async fn consent(
            pool: &Pool,
            user_id: &str,
            client_id: &str,
        ) -> Result<Option<Consent>, StoreError> {
            let row = sqlx::query("SELECT * FROM consents WHERE user_id = $1 AND client_id = $2")
                .bind(user_id)
                .bind(client_id)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(consent_from_row).transpose()
        }

        pub(super) async fn save_consent(pool: &Pool, c: &Consent) -> Result<(), StoreError> {
            sqlx::query(SAVE_CONSENT)
                .bind(&c.user_id)
                .bind(&c.client_id)
                .bind(&c.scope)
                .bind(i(c.granted_at))
                .execute(pool)
                .await?;
            Ok(())
        }

        pub(super) async fn list_consents(
            pool: &Pool,
            user_id: &str,
        ) -> Result<Vec<Consent>, StoreError> {
            let rows = sqlx::query("SELECT * FROM consents WHERE user_id = $1 ORDER BY client_id")
                .bind(user_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(consent_from_row).collect()
        }

        pub(super) async fn revoke_consent(
            pool: &Pool,
            user_id: &str,
            client_id: &str,
            now: UnixTime,
        ) -> Result<bool, StoreError> {
            let mut tx = write_tx(pool).await?;
            let n = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
                .bind(user_id)
                .bind(client_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let ids: Vec<String> = sqlx::query_scalar(LIVE_GRANTS_OF)
                .bind(user_id)
                .bind(client_id)
                .fetch_all(&mut *tx)
                .await?;
            for id in ids {
                revoke_grants_where(&mut tx, By::Id, &id, now).await?;
            }
            tx.commit().await?;
            Ok(n == 1)
        }
    };
}
