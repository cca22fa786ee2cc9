//! A fresh PostgreSQL database per test, on the server `.ci/run` makes sure answers
//! (`PRINTERNIZER_STATS_TEST_PG`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Where a PostgreSQL superuser can create databases. `.ci/run` makes sure one answers there.
pub fn pg_admin_url() -> String {
    std::env::var("PRINTERNIZER_STATS_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_db_name(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("URL with a database");
    format!("{base}/{name}")
}

async fn admin() -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is needed for these tests and does not answer at {} ({e}); \
                 run .ci/run or set PRINTERNIZER_STATS_TEST_PG",
                pg_admin_url()
            )
        });
    tokio::spawn(conn);
    client
}

const PREFIX: &str = "printernizer_stats_test_";

/// A fresh PostgreSQL database, dropped (with its connections) on drop.
pub struct PgDb {
    pub name: String,
    pub url: String,
}

impl PgDb {
    pub async fn create() -> Self {
        static CLEANED: AtomicBool = AtomicBool::new(false);
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = admin().await;
        let mine = format!("{PREFIX}{}_", std::process::id());
        if !CLEANED.swap(true, Ordering::SeqCst) {
            // Left behind by an earlier, aborted run (never one of this process's own).
            let rows = admin
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE $1",
                    &[&format!("{PREFIX}%")],
                )
                .await
                .expect("list databases");
            for r in rows {
                let name: String = r.get(0);
                if name.starts_with(&mine) {
                    continue;
                }
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await;
            }
        }
        let name = format!(
            "{PREFIX}{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create database");
        Self {
            url: with_db_name(&pg_admin_url(), &name),
            name,
        }
    }

    /// Runs one query in this database and returns the first column of each row as text.
    pub async fn query_text(&self, sql: &str) -> Vec<String> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .simple_query(sql)
            .await
            .expect("query")
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some(r.get(0).unwrap_or_default().to_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// Drops the database now (terminating its connections).
    pub async fn drop_now(&self) {
        let _ = admin()
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&pg_admin_url(), tokio_postgres::NoTls).await
                {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}
