//! Connecting to Postgres as a service's own role, and watching it.

use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::readiness::Dependency;

/// A checked Postgres URL and pool size ([`crate::settings::PostgresArgs`]).
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    pub url: String,
    pub max_connections: u32,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to postgres: {0}")]
pub struct PostgresConnectError(#[source] pub sqlx::Error);

/// How every session of a pool starts: settings applied with
/// `set_config(name, value, false)` (e.g. the reader's statement timeout,
/// the writer's row-level-security scope), then statements run (e.g. the
/// writer's staging table).
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub settings: Vec<(&'static str, String)>,
    pub statements: Vec<&'static str>,
}

/// Opens a pool whose every session starts as `session` says.
pub async fn connect(
    settings: &PostgresSettings,
    session: Session,
) -> Result<PgPool, PostgresConnectError> {
    let session = std::sync::Arc::new(session);
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _meta| {
            let session = session.clone();
            Box::pin(async move {
                for (name, value) in &session.settings {
                    sqlx::query("SELECT set_config($1, $2, false)")
                        .bind(name)
                        .bind(value)
                        .execute(&mut *conn)
                        .await?;
                }
                for statement in &session.statements {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(*statement))
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect(&settings.url)
        .await
        .map_err(PostgresConnectError)
}

/// Keeps `dependency` in step with whether `pool` can run a query (sqlx
/// reports no connection events, so this probes; see
/// [`crate::readiness::PROBE_INTERVAL`]).
pub fn watch(pool: PgPool, dependency: Dependency, stop: CancellationToken) -> JoinHandle<()> {
    dependency.up();
    dependency.probe(stop, move || {
        let pool = pool.clone();
        async move {
            let wait = crate::readiness::PROBE_TIMEOUT.mul_f32(0.8);
            match tokio::time::timeout(wait, pool.acquire()).await {
                Ok(Ok(mut conn)) => sqlx::query("SELECT 1").execute(&mut *conn).await.is_ok(),
                Ok(Err(_)) => false,
                // Every connection is busy working: loaded, not lost.
                Err(_) => {
                    pool.num_idle() == 0 && pool.size() >= pool.options().get_max_connections()
                }
            }
        }
    })
}

/// [`connect`] for a service whose hard dependency is Postgres: declares
/// `postgres` on `readiness` and [`watch`]es it until `stop`.
pub async fn connect_ready(
    settings: &PostgresSettings,
    session: Session,
    readiness: &crate::readiness::Readiness,
    stop: CancellationToken,
) -> Result<(PgPool, Dependency), PostgresConnectError> {
    let pool = connect(settings, session).await?;
    let dependency = readiness.dependency("postgres");
    watch(pool.clone(), dependency.clone(), stop);
    Ok((pool, dependency))
}
