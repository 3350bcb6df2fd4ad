//! The background runtime of `castellan serve`.
//!
//! Requests are served on the main runtime. Everything else runs on one
//! thread of its own at a lower CPU priority: the audit writer, the
//! detection monitor, reloads and the admin listener. No request waits on
//! this work except through the audit queue, so on a busy core the kernel
//! runs request handlers first, and the writer catches up while they wait
//! (see `castellan_audit::AuditHandle::pace`).
//!
//! The store's SQLite threads are the exception. Each inherits the
//! priority of the thread that opens its connection, so `serve` opens all
//! of them before it lowers the background thread's priority. At nice 10
//! they delayed every commit and every read of the detection monitor on a
//! saturated core, and the monitor fell behind by seconds.

use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context as _, Result};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How much lower the background thread's priority is: nice 10 gives it
/// about a tenth of a core that request handlers keep busy, and all of an
/// idle one.
const NICENESS: i32 = 10;

/// How long stopping waits for the runtime's blocking threads, which free
/// replaced snapshots and compile reloads.
const BLOCKING_GRACE: Duration = Duration::from_secs(1);

/// A current-thread runtime on a thread of its own.
pub struct Background {
    handle: Handle,
    stop: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

impl Background {
    /// Starts the thread and its runtime at the caller's priority. Work
    /// spawned on it calls [`lower_priority`] once the threads that should
    /// keep that priority exist.
    pub fn start() -> Result<Background> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the background runtime")?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("castellan-bg".to_string())
            .spawn(move || {
                // A stop request or a dropped sender ends the runtime.
                let _ = runtime.block_on(stopped);
                // A reload can still wait on a slow file in a blocking
                // thread. The process is ending, so it is not waited for.
                runtime.shutdown_timeout(BLOCKING_GRACE);
            })
            .context("cannot start the background thread")?;
        Ok(Background {
            handle,
            stop,
            thread,
        })
    }

    /// Returns the runtime that background tasks are spawned on.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops the runtime, cancelling what still runs on it, and waits for
    /// its thread to end. Await the tasks that must finish first.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let thread = self.thread;
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::warn!("the background thread ended with a panic");
        }
    }
}

/// Raises the calling thread's nice value by [`NICENESS`]. Threads it
/// starts later inherit the value. A process without privilege cannot
/// lower it again.
#[cfg(target_os = "linux")]
pub fn lower_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    // On Linux the "process" of these calls is the thread with that id.
    let thread = Some(rustix::thread::gettid());
    let raised = getpriority_process(thread)
        .and_then(|nice| setpriority_process(thread, (nice + NICENESS).min(19)));
    if let Err(error) = raised {
        tracing::warn!(%error, "cannot lower the priority of the background thread; audit writes and detection compete with requests for CPU");
    }
}

#[cfg(not(target_os = "linux"))]
pub fn lower_priority() {
    // NOTE: elsewhere the background thread keeps the process's priority.
}
