//! Opening and creating the SQLite database, with the connection settings that
//! let the gateway and CLI commands share one file.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::error::{db_error, sqlite_code, StoreError, SQLITE_NOTADB};

/// How long a statement waits for another process's lock before failing with
/// [`StoreError::Busy`].
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite `application_id` header value marking a castellan database ("CSTL").
const APPLICATION_ID: i32 = 0x4353_544C;

/// Connections per process. SQLite runs one writer at a time, so more
/// connections only add concurrent readers.
pub(crate) const MAX_CONNECTIONS: u32 = 4;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Handle to the castellan database, cheap to clone (it wraps a connection pool).
///
/// Several processes may open the same file at once (`castellan serve` and CLI
/// commands). The database runs in WAL mode with `synchronous = NORMAL`: a
/// process crash loses no committed transaction, but a power loss or OS crash
/// may lose the last transactions committed before it (never corrupting the
/// file). WAL needs shared memory, so the file must be on a local file system.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: SqlitePool,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// Returns the current time as unix milliseconds, or 0 if the clock is before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Opens an existing castellan database and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_dir() => {
                return Err(not_castellan(path, "it is a directory"));
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing {
                    path: path.to_owned(),
                });
            }
            Err(source) => return Err(io_error("open", path, source)),
        }
        let store = Store::connect(path).await?;
        store.check_application_id().await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Creates a new castellan database at `path`, which must not exist yet.
    ///
    /// The file is created with mode 0600 on Unix because it stores wrapped
    /// secrets and token hashes. A failed creation removes the file again.
    pub async fn create(path: &Path) -> Result<Store, StoreError> {
        create_private_file(path)?;
        match Store::initialize(path).await {
            Ok(store) => Ok(store),
            Err(error) => {
                remove_database_files(path);
                Err(error)
            }
        }
    }

    /// Returns the path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, waiting for statements in progress.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn initialize(path: &Path) -> Result<Store, StoreError> {
        let store = Store::connect(path).await?;
        let set_id = format!("PRAGMA application_id = {APPLICATION_ID}");
        let result = sqlx::query(&set_id).execute(&store.pool).await;
        if let Err(error) = result {
            store.close().await;
            return Err(db_error("set application id", error));
        }
        if let Err(error) = store.migrate().await {
            store.close().await;
            return Err(error);
        }
        Ok(store)
    }

    async fn connect(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            // The pool would ping each connection it hands out, one more
            // round trip to the connection's thread per transaction. A local
            // file has no link to lose, and a failing statement reports errors.
            .test_before_acquire(false)
            // A connection's SQLite thread keeps the CPU priority of the
            // thread that opened it, so `castellan serve` opens them all
            // (`Store::open_all_connections`) and keeps them.
            .idle_timeout(None)
            .max_lifetime(None)
            .acquire_timeout(BUSY_TIMEOUT * 2)
            .connect_with(options)
            .await
            .map_err(|error| open_error(path, error))?;
        Ok(Store {
            pool,
            path: Arc::new(path.to_owned()),
        })
    }

    /// Opens as many connections as the pool holds, so that their SQLite
    /// threads start now, from the calling thread, and inherit its CPU
    /// priority. The pool keeps them open for as long as it lives.
    pub async fn open_all_connections(&self) -> Result<(), StoreError> {
        // NOTE: a connection is still closed when its caller stops waiting
        // in the middle of an audit insert, when rolling back a failed one
        // fails, or when it fails sqlx's check on its return to the pool.
        // Its replacement starts from the thread that next needs one, which
        // in `castellan serve` runs at lower priority.
        let mut connections = Vec::with_capacity(MAX_CONNECTIONS as usize);
        while connections.len() < MAX_CONNECTIONS as usize {
            let connection = self
                .pool
                .acquire()
                .await
                .map_err(|error| open_error(&self.path, error))?;
            connections.push(connection);
        }
        Ok(())
    }

    async fn check_application_id(&self) -> Result<(), StoreError> {
        let id: i32 = sqlx::query_scalar("PRAGMA application_id")
            .fetch_one(&self.pool)
            .await
            .map_err(|error| open_error(&self.path, error))?;
        if id != APPLICATION_ID {
            let detail = format!("its SQLite application id is {id:#x}, not {APPLICATION_ID:#x}");
            return Err(not_castellan(&self.path, &detail));
        }
        Ok(())
    }

    /// Applies pending migrations inside one `BEGIN IMMEDIATE` transaction, so
    /// two processes starting at once cannot both apply the same migration.
    ///
    /// The same transaction summarizes existing audit records into the usage
    /// tables when a migration asked for it, so an upgraded database does
    /// not show agents that made requests as unused.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.begin_write("migrate").await?;
        // `run_direct` is `run` without the `Acquire` bound, whose higher-ranked
        // lifetime makes the future fail to prove `Send` inside `tokio::spawn`.
        MIGRATOR
            .run_direct(&mut *tx)
            .await
            .map_err(|error| migrate_error(&self.path, error))?;
        crate::usage::run_pending_backfill(&mut tx).await?;
        tx.commit().await.map_err(|e| db_error("migrate", e))
    }

    /// Starts a write transaction that takes the write lock immediately.
    ///
    /// A deferred transaction that reads first and writes later can fail with
    /// `SQLITE_BUSY` at once, without waiting, when another process committed in
    /// between. Taking the lock up front makes every writer wait its turn.
    pub(crate) async fn begin_write(
        &self,
        operation: &'static str,
    ) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|error| db_error(operation, error))
    }

    /// Takes a connection from the pool for a sequence of reads.
    pub(crate) async fn acquire(
        &self,
        operation: &'static str,
    ) -> Result<PoolConnection<Sqlite>, StoreError> {
        self.pool
            .acquire()
            .await
            .map_err(|error| db_error(operation, error))
    }
}

fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(StoreError::AlreadyExists {
                path: path.to_owned(),
            })
        }
        Err(source) => Err(io_error("create", path, source)),
    }
}

/// Removes a half-created database and its WAL files. Failures are only
/// logged, because the creation error is the one the caller needs to see.
fn remove_database_files(path: &Path) {
    let mut paths = vec![path.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        paths.push(PathBuf::from(name));
    }
    for file in paths {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => tracing::warn!(
                path = %file.display(),
                %error,
                "failed to remove half-created database file"
            ),
        }
    }
}

fn not_castellan(path: &Path, detail: &str) -> StoreError {
    StoreError::NotCastellan {
        path: path.to_owned(),
        detail: detail.to_owned(),
    }
}

fn io_error(operation: &'static str, path: &Path, source: std::io::Error) -> StoreError {
    StoreError::Io {
        operation,
        path: path.to_owned(),
        source,
    }
}

fn open_error(path: &Path, error: sqlx::Error) -> StoreError {
    if sqlite_code(&error) == Some(SQLITE_NOTADB) {
        return not_castellan(path, "the file is not a SQLite database");
    }
    match error {
        sqlx::Error::Io(source) => io_error("open", path, source),
        error => db_error("open", error),
    }
}

fn migrate_error(path: &Path, error: MigrateError) -> StoreError {
    let detail = match &error {
        MigrateError::VersionMissing(found) => {
            let supported = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
            return StoreError::NewerSchema {
                path: path.to_owned(),
                found: *found,
                supported,
            };
        }
        MigrateError::VersionMismatch(version) => {
            format!("applied migration {version} differs from the one built into castellan")
        }
        MigrateError::Dirty(version) => {
            format!("migration {version} was left partially applied")
        }
        MigrateError::ExecuteMigration(_, version) => {
            format!("migration {version} failed to apply")
        }
        _ => "reading the applied migrations failed".to_owned(),
    };
    if let MigrateError::Execute(inner) = error {
        return db_error("migrate", inner);
    }
    StoreError::Migration {
        path: path.to_owned(),
        detail,
        source: Box::new(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_connections_open_and_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(&dir.path().join("castellan.db"))
            .await
            .unwrap();
        store.open_all_connections().await.unwrap();

        assert_eq!(store.pool.size(), MAX_CONNECTIONS);
        // A connection replaced for idleness or age would start from the
        // thread that next needs one, so the pool replaces none.
        let options = store.pool.options();
        assert_eq!(options.get_idle_timeout(), None);
        assert_eq!(options.get_max_lifetime(), None);
    }
}
