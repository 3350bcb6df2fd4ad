//! `castellan serve`: run the checkpoint.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use castellan_audit::{AuditWriter, WriterConfig};
use castellan_gateway::{ConfigSource, Gateway, Loader, Reloader, TlsSettings, TlsTerminator};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::net::{TcpListener, TcpSocket};
use tokio::runtime::Handle;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinError, JoinHandle};

use super::background::Background;

use crate::cli::ServeArgs;
use crate::data_dir::DataDir;

/// Connections the kernel queues for the agent listener before it accepts
/// them, the same number [`TcpListener::bind`] uses.
const LISTEN_BACKLOG: u32 = 128;

pub async fn run(data_dir: &DataDir, args: &ServeArgs) -> Result<ExitCode> {
    run_gateway(data_dir, args, |_, _| {}).await
}

/// Runs the gateway until SIGTERM or SIGINT. A failed agent listener task
/// also stops it, with an error. `on_ready` is called with the bound agent
/// and admin addresses once both listeners accept.
///
/// Requests are served on the calling runtime. Everything else runs on a
/// [`Background`] thread of lower priority.
pub async fn run_gateway(
    data_dir: &DataDir,
    args: &ServeArgs,
    on_ready: impl FnOnce(SocketAddr, SocketAddr),
) -> Result<ExitCode> {
    check_bind_address("--listen", args.listen, args.allow_public_bind)?;
    check_bind_address("--admin-listen", args.admin_listen, args.allow_public_bind)?;
    let background = Background::start()?;
    let (ready, announced) = oneshot::channel();
    let gateway = background.handle().spawn(serve_in_background(
        data_dir.clone(),
        args.clone(),
        Handle::current(),
        ready,
    ));
    if let Ok((agents, admin)) = announced.await {
        on_ready(agents, admin);
    }
    let outcome = gateway.await;
    background.stop().await;
    outcome.context("the gateway stopped with a panic")?
}

/// Runs everything `castellan serve` does apart from serving requests,
/// which it hands to the `requests` runtime.
async fn serve_in_background(
    data_dir: DataDir,
    args: ServeArgs,
    requests: Handle,
    ready: oneshot::Sender<(SocketAddr, SocketAddr)>,
) -> Result<ExitCode> {
    let store = data_dir.open_store().await?;
    // Connection threads inherit this thread's priority, so they start
    // before it drops.
    store.open_all_connections().await.with_context(|| {
        format!(
            "cannot open the store's connections in {}",
            data_dir.root.display()
        )
    })?;
    super::background::lower_priority();
    let master_key = data_dir.master_key(&store).await?;
    let loader = Loader {
        store: store.clone(),
        master_key: Arc::clone(&master_key),
    };
    let source = ConfigSource {
        path: data_dir.config.clone(),
    };
    let snapshot = Reloader::initial_snapshot(&loader, &source).await?;
    // Loading the tokens left SQLite's freed buffers in glibc's heap.
    crate::allocator::release_c_heap();
    let metrics = PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    let writer_config = WriterConfig {
        capacity: args.audit_queue_capacity as usize,
        ..WriterConfig::default()
    };
    let (feed, committed) = tokio::sync::mpsc::channel(super::monitor::FEED_BATCHES);
    let (audit, writer) = AuditWriter::spawn_with_feed(store.clone(), writer_config, feed);
    let gateway = Arc::new(Gateway::new(snapshot, audit.clone()));

    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(TlsTerminator::load(TlsSettings {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca.clone(),
            require_client_cert: args.require_client_cert,
        })?)),
        _ => None,
    };
    let (stop, stopped) = watch::channel(false);
    let detection = super::monitor::start(
        store.clone(),
        Arc::clone(&master_key),
        Arc::clone(&gateway),
        committed,
        wait_for(stopped.clone()),
    )
    .await?;
    let reminders = tokio::spawn(super::reminders::run(
        store.clone(),
        Arc::clone(&master_key),
        Arc::clone(&gateway),
        detection.dispatcher.clone(),
        wait_for(stopped.clone()),
    ));
    let token_files = tokio::spawn(super::token_files::run(
        store.clone(),
        Arc::clone(&gateway),
        vec![data_dir.root.clone(), data_dir.config.clone()],
        wait_for(stopped.clone()),
    ));
    let listener = bind_on(&requests, args.listen, "agent", "--listen")?;
    let admin_listener = bind(args.admin_listen, "admin", "--admin-listen").await?;
    let agents_address = listener.local_addr()?;
    let admin_address = admin_listener.local_addr()?;

    let reloader = Reloader::new(Arc::clone(&gateway), loader, source)
        .with_release_hook(crate::allocator::release_c_heap);
    let reloader = Arc::new(reloader);
    tokio::spawn(handle_signals(
        Arc::clone(&reloader),
        tls.clone(),
        stop.clone(),
    ));
    let reloads = tokio::spawn(Arc::clone(&reloader).run(wait_for(stopped.clone())));
    let admin = tokio::spawn(castellan_gateway::serve_admin(
        admin_listener,
        Arc::clone(&gateway),
        metrics,
        wait_for(stopped.clone()),
    ));

    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(agents = %agents_address, admin = %admin_address, tls = tls.is_some(), "castellan is serving");
    println!("listening agents={scheme}://{agents_address} admin=http://{admin_address}");
    let _ = std::io::stdout().flush();
    let _ = ready.send((agents_address, admin_address));

    let serving = requests.spawn(castellan_gateway::serve(
        listener,
        gateway,
        tls,
        wait_for(stopped),
    ));
    let listener_failure = await_agent_listener(serving, &stop).await;
    if let Err(error) = admin.await {
        tracing::warn!(%error, "admin listener task failed");
    }
    // Every request has ended, so every audit slot is released: flush them.
    if let Err(error) = audit.shutdown().await {
        tracing::error!(%error, "audit records were lost at shutdown");
    }
    let _ = writer.await;
    if let Err(error) = detection.monitor.await {
        tracing::warn!(%error, "monitor task failed");
    }
    let _ = reminders.await;
    let _ = token_files.await;
    // A store poll in progress finishes, and a reload in progress is
    // cancelled, before the store closes.
    let _ = reloads.await;
    // Queued webhooks get a few seconds; their retries end here.
    let unsent = detection
        .dispatcher
        .shutdown(std::time::Duration::from_secs(5))
        .await;
    if unsent > 0 {
        tracing::warn!(
            unsent,
            "webhook notifications were not sent before shutdown"
        );
    }
    store.close().await;
    tracing::info!("castellan stopped");
    if let Some(error) = listener_failure {
        bail!("the agent listener task failed ({error}), so castellan stopped; restart castellan serve");
    }
    Ok(ExitCode::SUCCESS)
}

async fn bind(address: SocketAddr, listener: &str, flag: &str) -> Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| bind_error(address, listener, flag))
}

/// Binds a listener whose sockets `runtime` polls, so that their wakeups
/// come from its threads rather than the caller's. Like
/// [`TcpListener::bind`], it sets `SO_REUSEADDR`, so a restart does not
/// fail on connections of the last run still in `TIME_WAIT`.
fn bind_on(
    runtime: &Handle,
    address: SocketAddr,
    listener: &str,
    flag: &str,
) -> Result<TcpListener> {
    let _in_runtime = runtime.enter();
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    };
    socket
        .and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(address)?;
            socket.listen(LISTEN_BACKLOG)
        })
        .with_context(|| bind_error(address, listener, flag))
}

fn bind_error(address: SocketAddr, listener: &str, flag: &str) -> String {
    format!("cannot listen on {address} for the {listener} listener; is another process using it? Pick another address with {flag}")
}

/// Waits for the agent listener task. When it fails (a panic, say), sets
/// the stop flag, which ends the other tasks as SIGTERM does, and returns
/// the failure. Without the agent listener castellan serves no agent, so it
/// must not run on with only the admin listener.
async fn await_agent_listener(
    serving: JoinHandle<()>,
    stop: &watch::Sender<bool>,
) -> Option<JoinError> {
    let error = serving.await.err()?;
    tracing::error!(%error, "the agent listener task failed; stopping castellan");
    let _ = stop.send(true);
    Some(error)
}

/// Resolves when the stop flag becomes true.
async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Reloads the configuration and TLS files on SIGHUP; stops on SIGTERM or
/// SIGINT.
async fn handle_signals(
    reloader: Arc<Reloader>,
    tls: Option<Arc<TlsTerminator>>,
    stop: watch::Sender<bool>,
) {
    let (Ok(mut hangup), Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop castellan with SIGKILL");
        return;
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("SIGHUP received; reloading the configuration");
                reloader.request_reload();
                if let Some(tls) = &tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!("TLS certificate reloaded"),
                        Err(error) => tracing::error!(%error, "TLS reload failed; keeping the current certificate"),
                    }
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("stopping: no new connections, waiting for in-flight requests");
    let _ = stop.send(true);
}

/// Rejects public listen addresses unless explicitly allowed: the gateway
/// stores every upstream credential and belongs on a private network.
pub fn check_bind_address(flag: &str, address: SocketAddr, allow_public: bool) -> Result<()> {
    if allow_public || is_private(address.ip()) {
        return Ok(());
    }
    bail!(
        "{flag} {address} is not a loopback or private address; castellan stores upstream credentials and must not face the internet. Bind 127.0.0.1 or a private address, or pass --allow-public-bind"
    )
}

fn is_private(ip: IpAddr) -> bool {
    match castellan_model::canonical_ip(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            // 100.64.0.0/10 is carrier-grade NAT space, used by overlay networks.
            v4.is_loopback() || v4.is_private() || (a == 100 && (64..128).contains(&b))
        }
        // fc00::/7 are unique local addresses.
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn failed_agent_listener_stops_tasks() {
        let (stop, stopped) = watch::channel(false);
        let other_task = tokio::spawn(wait_for(stopped.clone()));
        let serving = tokio::spawn(async { panic!("agent listener failure for a test") });

        let failure = await_agent_listener(serving, &stop).await;

        assert!(failure.is_some_and(|error| error.is_panic()));
        assert!(*stopped.borrow(), "the stop flag is not set");
        let ended = tokio::time::timeout(Duration::from_secs(5), other_task).await;
        assert!(ended.is_ok(), "a task waiting for the stop flag still runs");
    }

    #[tokio::test]
    async fn finished_agent_listener_reports_nothing() {
        let (stop, stopped) = watch::channel(false);
        let serving = tokio::spawn(async {});

        let failure = await_agent_listener(serving, &stop).await;

        assert!(failure.is_none());
        assert!(!*stopped.borrow(), "the stop flag is set");
    }

    #[test]
    fn bind_addresses_checked() {
        let cases = [
            ("127.0.0.1:8750", true),
            ("10.1.2.3:8750", true),
            ("172.16.0.1:8750", true),
            ("192.168.1.1:8750", true),
            ("100.100.1.1:8750", true),
            ("[::1]:8750", true),
            ("[fd12::1]:8750", true),
            ("0.0.0.0:8750", false),
            ("[::]:8750", false),
            ("8.8.8.8:8750", false),
            ("169.254.169.254:8750", false),
            ("[2001:db8::1]:8750", false),
        ];
        for (address, allowed) in cases {
            let address: SocketAddr = address.parse().expect("test address");
            assert_eq!(
                check_bind_address("--listen", address, false).is_ok(),
                allowed,
                "{address}"
            );
            assert!(check_bind_address("--listen", address, true).is_ok());
        }
    }
}
