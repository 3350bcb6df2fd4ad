//! Live changes: the configuration file (on SIGHUP or when it changes on
//! disk) and the store (tokens, suspensions and secrets changed by CLI
//! commands) reach the running gateway without dropping requests.
//!
//! Each change builds a complete new [`Snapshot`] and swaps it in; requests
//! in flight keep the snapshot they started with.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use castellan_model::Config;
use tokio::sync::{Mutex, Notify};

use crate::proxy::Gateway;
use crate::state::{ConfigState, CredentialState, LoadError, Loader, Snapshot};

/// How often the store's change counter is read. Revocations, suspensions
/// and secret changes take effect within this interval plus a reload.
pub const STORE_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often the configuration file's modification time is checked.
pub const CONFIG_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How long a changed configuration file must stay unchanged before the
/// poll loads it. A file rewritten in place can be caught half written,
/// and a prefix of it can be a valid configuration that lacks later rules,
/// deny rules among them.
pub const CONFIG_SETTLE_TIME: Duration = Duration::from_millis(200);

/// How long a reload may take to read and compile the configuration
/// before it is abandoned, so that one stuck on a file does not hold back
/// the reloads after it. At `bench/scale.sh`'s scale a compile takes under
/// a second.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// First and longest wait between checks whether a replaced snapshot is
/// still held by requests; see [`retire`].
const RETIRE_FIRST_WAIT: Duration = Duration::from_millis(10);
const RETIRE_LONGEST_WAIT: Duration = Duration::from_secs(1);

/// Location of the configuration file.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    pub path: PathBuf,
}

impl ConfigSource {
    fn fingerprint(&self) -> Option<(SystemTime, u64)> {
        let metadata = std::fs::metadata(&self.path).ok()?;
        Some((metadata.modified().ok()?, metadata.len()))
    }

    /// Waits for `wait`, then returns whether the file still has the
    /// fingerprint `seen`. It returns false when a writer changed the file
    /// meanwhile.
    // NOTE: a writer that pauses longer than the wait in the middle of the
    // file can still be read half written. Writing to a temporary file and
    // renaming it over the configuration avoids that.
    async fn unchanged_after(
        &self,
        seen: Option<(SystemTime, u64)>,
        wait: impl Future<Output = ()>,
    ) -> bool {
        wait.await;
        self.fingerprint() == seen
    }
}

/// Applies configuration and store changes to a running gateway.
pub struct Reloader {
    gateway: Arc<Gateway>,
    loader: Loader,
    source: ConfigSource,
    /// The configuration file's modification time and size when a reload
    /// last read it. Snapshot swaps take this lock, so two cannot
    /// interleave.
    lock: Mutex<Option<(SystemTime, u64)>>,
    /// Configuration reloads requested and not yet started. Requests made
    /// while one is pending merge into it, and [`Reloader::run`] starts one
    /// reload at a time. So a burst of signals cannot pile up compiles, and
    /// a file that blocks reads holds one thread per [`RELOAD_TIMEOUT`].
    reload_requested: Notify,
    /// Runs after each replaced snapshot is freed (see
    /// [`Reloader::with_release_hook`]).
    release: Option<ReleaseHook>,
}

/// The callback that [`Reloader`] runs on a blocking thread after a
/// replaced snapshot is freed.
pub(crate) type ReleaseHook = Arc<dyn Fn() + Send + Sync>;

/// Error building the initial state.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] castellan_model::ConfigError),
    #[error(transparent)]
    Activate(#[from] crate::state::ActivateError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl Reloader {
    /// Loads the configuration and the store for the first time.
    pub async fn initial_snapshot(
        loader: &Loader,
        source: &ConfigSource,
    ) -> Result<Snapshot, StartError> {
        // Compiling a large configuration and reading many tokens take
        // similar time and do not depend on each other, so the compile
        // runs on a blocking thread while the tokens load.
        let path = source.path.clone();
        let compile = tokio::task::spawn_blocking(move || -> Result<ConfigState, StartError> {
            let config = Config::load(&path)?;
            Ok(ConfigState::activate(config, None)?)
        });
        let part = loader.store_part().await;
        let state = match compile.await {
            Ok(state) => Arc::new(state?),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        };
        let snapshot = loader.assemble(state, part?).await?;
        warn_missing_credentials(&snapshot);
        Ok(snapshot)
    }

    pub fn new(gateway: Arc<Gateway>, loader: Loader, source: ConfigSource) -> Self {
        let fingerprint = source.fingerprint();
        Reloader {
            gateway,
            loader,
            source,
            lock: Mutex::new(fingerprint),
            reload_requested: Notify::new(),
            release: None,
        }
    }

    /// Makes `release` run on a blocking thread after each snapshot that a
    /// configuration reload or a store change replaced has been freed, such
    /// as a call that returns the C heap's free memory to the system. The
    /// gateway itself contains no unsafe code, so such a call comes from the
    /// binary. Each store change runs it, up to four times a second, and
    /// the last request holding the old snapshot can delay it.
    pub fn with_release_hook(mut self, release: impl Fn() + Send + Sync + 'static) -> Self {
        self.release = Some(Arc::new(release));
        self
    }

    /// Reloads the configuration file. An invalid file is logged and the
    /// running configuration stays in place.
    pub async fn reload_config(&self) -> bool {
        *self.lock.lock().await = self.source.fingerprint();
        let previous = Arc::clone(&self.gateway.snapshot.load().config);
        // Loading and compiling a large configuration takes hundreds of
        // milliseconds of CPU, and reading a file can block. On the
        // background runtime's only thread that would stop the audit writer
        // too, and with it every request waiting for its record. Holding
        // the lock meanwhile would hold back revocations and suspensions.
        let path = self.source.path.clone();
        let compiled = tokio::task::spawn_blocking(move || -> Result<ConfigState, StartError> {
            let config = Config::load(&path)?;
            Ok(ConfigState::activate(config, Some(&previous))?)
        });
        let Ok(compiled) = tokio::time::timeout(RELOAD_TIMEOUT, compiled).await else {
            // The blocking thread stays stuck, but later reloads can run.
            // NOTE: no test waits out this timeout.
            tracing::warn!(path = %self.source.path.display(), timeout_s = RELOAD_TIMEOUT.as_secs(), "configuration reload timed out while reading or compiling; keeping the running configuration. Check the file and its ca_file paths for a hung mount or a pipe");
            return false;
        };
        let state = match compiled {
            Ok(Ok(state)) => Arc::new(state),
            Err(error) => std::panic::resume_unwind(error.into_panic()),
            Ok(Err(error)) => {
                tracing::error!(path = %self.source.path.display(), error = %error, "configuration reload rejected; keeping the running configuration");
                return false;
            }
        };
        let _guard = self.lock.lock().await;
        // The store may have changed while the configuration compiled, so
        // the tokens come from the snapshot running now.
        let current = self.gateway.snapshot.load_full();
        match self.loader.snapshot_for_config(state, &current).await {
            Ok(snapshot) => {
                warn_missing_credentials(&snapshot);
                let config = &snapshot.config.config;
                tracing::info!(
                    path = %self.source.path.display(),
                    connections = config.connections.len(),
                    roles = config.roles.len(),
                    agents = config.agents.len(),
                    "configuration reloaded"
                );
                self.gateway.snapshot.store(Arc::new(snapshot));
                retire(current, self.release.clone());
                true
            }
            Err(error) => {
                tracing::error!(error = %error, "configuration reload failed while reading the store; keeping the running configuration");
                false
            }
        }
    }

    /// Rebuilds the snapshot if the store changed since it was built.
    pub async fn refresh_store(&self) -> Result<bool, LoadError> {
        let _guard = self.lock.lock().await;
        let current = self.gateway.snapshot.load_full();
        let version = self.loader.store.change_version().await?;
        if version == current.store_version {
            return Ok(false);
        }
        let snapshot = self.loader.snapshot(Arc::clone(&current.config)).await?;
        tracing::debug!(version = snapshot.store_version, "store changes applied");
        self.gateway.snapshot.store(Arc::new(snapshot));
        retire(current, self.release.clone());
        Ok(true)
    }

    /// Asks for a configuration reload, which [`Reloader::run`] starts once
    /// the one in progress, if any, has ended.
    pub fn request_reload(&self) {
        self.reload_requested.notify_one();
    }

    /// Polls the store and the configuration file, and runs the reloads
    /// requested with [`Reloader::request_reload`], until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // A reload can wait on a slow file. In a task of its own it holds
        // back neither store changes nor shutdown.
        let stop = Arc::new(Notify::new());
        let reloads = tokio::spawn(Arc::clone(&self).reload_on_request(Arc::clone(&stop)));
        self.poll(shutdown).await;
        stop.notify_one();
        if let Err(error) = reloads.await {
            tracing::warn!(%error, "the configuration reload task failed");
        }
    }

    /// Runs one requested reload at a time until `stop` is notified, which
    /// also cancels a reload in progress.
    async fn reload_on_request(self: Arc<Self>, stop: Arc<Notify>) {
        loop {
            tokio::select! {
                () = stop.notified() => return,
                () = self.reload_requested.notified() => {}
            }
            tokio::select! {
                () = stop.notified() => return,
                _ = self.reload_config() => {}
            }
        }
    }

    async fn poll(&self, mut shutdown: Pin<&mut impl Future<Output = ()>>) {
        let mut store_tick = tokio::time::interval(STORE_POLL_INTERVAL);
        let mut config_tick = tokio::time::interval(CONFIG_POLL_INTERVAL);
        let mut store_failures: u32 = 0;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = store_tick.tick() => {
                    match self.refresh_store().await {
                        Ok(_) => store_failures = 0,
                        Err(error) => {
                            store_failures += 1;
                            // Log the first failure and then every 40th (about every 10 s).
                            if store_failures % 40 == 1 {
                                tracing::error!(error = %error, failures = store_failures, "reading store changes failed; the gateway keeps its last state");
                            }
                        }
                    }
                }
                _ = config_tick.tick() => {
                    let seen = self.source.fingerprint();
                    let changed = *self.lock.lock().await != seen;
                    if !changed {
                        continue;
                    }
                    let settle = tokio::time::sleep(CONFIG_SETTLE_TIME);
                    if !self.source.unchanged_after(seen, settle).await {
                        tracing::debug!(path = %self.source.path.display(), "configuration file changed again within the settle time; reloading at the next poll");
                        continue;
                    }
                    tracing::info!(path = %self.source.path.display(), "configuration file changed; reloading");
                    // Recorded here too, so that a reload still waiting
                    // for its turn is not requested again at every poll.
                    *self.lock.lock().await = seen;
                    self.request_reload();
                }
            }
        }
    }
}

/// Frees a replaced value on a blocking thread once no one else holds it,
/// then runs `release` on the same thread, if given.
///
/// Freeing the snapshot of a large configuration takes milliseconds: about
/// 15 ms of CPU for the configuration of `bench/scale.sh`, sampled with
/// perf. Each request keeps a reference to the snapshot it started
/// with, and without this the last one to drop it frees it. On a request
/// handler that stalls the requests queued behind it, and on the
/// background thread it stalls the audit writer. This task keeps one
/// reference until it is the only one, so the freeing falls to it. Call it
/// on a Tokio runtime.
fn retire<T: Send + Sync + 'static>(mut old: Arc<T>, release: Option<ReleaseHook>) {
    tokio::spawn(async move {
        let mut wait = RETIRE_FIRST_WAIT;
        loop {
            match Arc::try_unwrap(old) {
                Ok(value) => {
                    let _ = tokio::task::spawn_blocking(move || {
                        drop(value);
                        if let Some(release) = release {
                            release();
                        }
                    })
                    .await;
                    return;
                }
                Err(shared) => old = shared,
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(RETIRE_LONGEST_WAIT);
        }
    });
}

fn warn_missing_credentials(snapshot: &Snapshot) {
    for (connection, state) in &snapshot.credentials {
        match state {
            CredentialState::Missing { secret } => tracing::warn!(
                connection = %connection,
                secret = %secret,
                "secret is not in the vault; calls to this connection get 503 until `castellan secret set` stores it"
            ),
            CredentialState::Unusable { secret, reason } => tracing::warn!(
                connection = %connection,
                secret = %secret,
                reason = %reason,
                "secret cannot be used; calls to this connection get 503"
            ),
            CredentialState::Ready(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn source_with(text: &str) -> (tempfile::TempDir, ConfigSource) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("castellan.toml");
        std::fs::write(&path, text).expect("configuration written");
        (dir, ConfigSource { path })
    }

    /// Records the name of the thread that drops it.
    struct DropWitness(std::sync::mpsc::Sender<Option<String>>);

    impl Drop for DropWitness {
        fn drop(&mut self) {
            let thread = std::thread::current().name().map(str::to_owned);
            let _ = self.0.send(thread);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn retired_value_is_freed_by_neither_holder() {
        let (sender, dropped) = std::sync::mpsc::channel();
        let value = Arc::new(DropWitness(sender));
        let request = Arc::clone(&value);

        retire(value, None);
        tokio::time::sleep(RETIRE_FIRST_WAIT * 3).await;
        assert!(
            dropped.try_recv().is_err(),
            "freed while a request still held it"
        );
        std::thread::Builder::new()
            .name("request".to_owned())
            .spawn(move || drop(request))
            .expect("start the request thread")
            .join()
            .expect("the request thread ended");
        let freed_on =
            tokio::task::spawn_blocking(move || dropped.recv_timeout(Duration::from_secs(10)))
                .await
                .expect("the waiting thread ended")
                .expect("the retired value was freed");

        let test_thread = std::thread::current().name().map(str::to_owned);
        assert_ne!(freed_on.as_deref(), Some("request"));
        assert_ne!(freed_on, test_thread);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn release_hook_runs_after_value_is_freed() {
        let (sender, events) = std::sync::mpsc::channel();
        let value = Arc::new(DropWitness(sender.clone()));
        let release: ReleaseHook = Arc::new(move || {
            let thread = std::thread::current().name().unwrap_or("").to_owned();
            let _ = sender.send(Some(format!("release on {thread}")));
        });

        retire(value, Some(release));
        let (freed, released) = tokio::task::spawn_blocking(move || {
            let freed = events.recv_timeout(Duration::from_secs(10));
            let released = events.recv_timeout(Duration::from_secs(10));
            (freed, released)
        })
        .await
        .expect("the waiting thread ended");

        let freed = freed.expect("the retired value was freed");
        let released = released
            .expect("the release hook ran")
            .expect("the hook sends a text");
        assert!(
            !freed.as_deref().unwrap_or("").starts_with("release"),
            "released before freeing"
        );
        let test_thread = std::thread::current().name().unwrap_or("").to_owned();
        assert_ne!(
            released,
            format!("release on {test_thread}"),
            "released on the runtime's own thread"
        );
    }

    #[tokio::test]
    async fn quiet_file_counts_as_settled() {
        let (_dir, source) = source_with("[agents.bot]\n");
        let seen = source.fingerprint();
        assert!(seen.is_some());
        assert!(source.unchanged_after(seen, async {}).await);
    }

    #[tokio::test]
    async fn file_written_during_wait_not_settled() {
        let (_dir, source) = source_with("[agents.bot]\n");
        let seen = source.fingerprint();
        let append = async {
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&source.path)
                .expect("configuration opens");
            file.write_all(b"owner = \"jay@example.com\"\n")
                .expect("configuration appended");
        };
        assert!(!source.unchanged_after(seen, append).await);
    }

    #[tokio::test]
    async fn removed_file_not_settled() {
        let (_dir, source) = source_with("[agents.bot]\n");
        let seen = source.fingerprint();
        let remove = async { std::fs::remove_file(&source.path).expect("configuration removed") };
        assert!(!source.unchanged_after(seen, remove).await);
    }
}
