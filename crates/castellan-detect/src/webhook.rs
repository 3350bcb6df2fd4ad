//! Webhook delivery: alerts and rotation reminders posted as JSON, in the
//! generic form or as a Slack-compatible body, retried with backoff.
//!
//! Each webhook has its own bounded queue and its own delivery slots, so a
//! receiver that hangs or fails delays only its own notifications, never
//! requests, detection or other webhooks. A queue hands out its most severe
//! notification first. When it is full, a new notification replaces the
//! least severe queued one if it is more severe; otherwise the new one is
//! dropped. Each drop is logged and counted. So a flood of low-severity
//! alerts cannot keep a critical one from being sent.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use castellan_model::{Severity, WebhookFormat};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use zeroize::Zeroizing;

/// Header carrying `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`.
pub const SIGNATURE_HEADER: &str = "x-castellan-signature";
/// Header carrying the unix time in seconds that the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-castellan-timestamp";
/// Header carrying an id that stays the same across retries of one delivery.
pub const DELIVERY_HEADER: &str = "x-castellan-delivery";

/// A webhook ready to send to: its URL and signing key already taken from
/// the vault where the configuration names vault entries.
#[derive(Clone)]
pub struct ResolvedWebhook {
    /// The webhook's name in `castellan.toml`; logs use it instead of the
    /// URL, which may itself be a secret.
    pub name: String,
    pub url: Zeroizing<String>,
    pub format: WebhookFormat,
    pub signing_key: Option<Zeroizing<Vec<u8>>>,
}

impl fmt::Debug for ResolvedWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedWebhook")
            .field("name", &self.name)
            .field("format", &self.format)
            .field("signed", &self.signing_key.is_some())
            .finish_non_exhaustive()
    }
}

/// The content of a notification: the generic JSON document and the
/// one-line text of a Slack message.
#[derive(Debug, Clone)]
pub struct Notification {
    /// Orders the webhook's queue: more severe notifications go first and
    /// are the last to be dropped.
    pub severity: Severity,
    pub json: serde_json::Value,
    pub text: String,
}

impl Notification {
    /// Renders the request body for `format`.
    pub fn body(&self, format: WebhookFormat) -> Vec<u8> {
        let document = match format {
            WebhookFormat::Json => self.json.clone(),
            WebhookFormat::Slack => serde_json::json!({ "text": self.text }),
        };
        serde_json::to_vec(&document).unwrap_or_default()
    }
}

/// Retry and sizing settings of the dispatcher.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Deliveries waiting per webhook before the least severe is dropped.
    pub queue: usize,
    /// Deliveries sent at the same time per webhook.
    pub concurrency: usize,
    /// Attempts per delivery, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; it doubles for each later one.
    pub first_backoff: Duration,
    /// Maximum wait between attempts.
    pub max_backoff: Duration,
    /// Time limit of one attempt, connecting included.
    pub timeout: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            queue: 256,
            concurrency: 4,
            attempts: 6,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Counts of finished deliveries, for tests and metrics.
#[derive(Debug, Default)]
pub struct DeliveryCounts {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

struct Delivery {
    target: ResolvedWebhook,
    notification: Notification,
    /// Arrival order, so notifications of equal severity go first in, first out.
    order: u64,
}

/// The queue of one webhook, most severe first.
struct WebhookQueue {
    pending: Mutex<Vec<Delivery>>,
    ready: Notify,
}

/// Handle to the delivery tasks. Cloning shares the queues.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<DispatcherInner>,
}

struct DispatcherInner {
    settings: DeliverySettings,
    client: WebhookClient,
    queues: Mutex<HashMap<String, Arc<WebhookQueue>>>,
    counts: Arc<DeliveryCounts>,
    order: AtomicU64,
    tasks: Mutex<JoinSet<()>>,
    closed: AtomicBool,
}

type WebhookClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

impl Dispatcher {
    /// Creates the dispatcher; each webhook's delivery task starts on the
    /// current tokio runtime with its first notification.
    pub fn new(settings: DeliverySettings) -> Dispatcher {
        let client = build_client(settings.timeout);
        Dispatcher {
            inner: Arc::new(DispatcherInner {
                settings,
                client,
                queues: Mutex::new(HashMap::new()),
                counts: Arc::new(DeliveryCounts::default()),
                order: AtomicU64::new(0),
                tasks: Mutex::new(JoinSet::new()),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Queues `notification` for `target` and returns at once; see the
    /// module documentation for what a full queue drops.
    pub fn send(&self, target: &ResolvedWebhook, notification: Notification) {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            inner.counts.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(webhook = %target.name, "webhook delivery has stopped; the notification is dropped");
            return;
        }
        let queue = self.queue(&target.name);
        let delivery = Delivery {
            target: target.clone(),
            notification,
            order: inner.order.fetch_add(1, Ordering::Relaxed),
        };
        let dropped = {
            let mut pending = queue.pending.lock().expect("webhook queue lock");
            push_bounded(&mut pending, delivery, inner.settings.queue.max(1))
        };
        if let Some(dropped) = dropped {
            inner.counts.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                webhook = %target.name,
                severity = %dropped.notification.severity,
                "webhook queue is full; the least severe notification is dropped (castellan alerts lists every alert)"
            );
        }
        queue.ready.notify_one();
    }

    pub fn counts(&self) -> &DeliveryCounts {
        &self.inner.counts
    }

    /// Stops taking notifications and waits up to `limit` for the queued
    /// ones; returns how many were left unsent.
    pub async fn shutdown(&self, limit: Duration) -> usize {
        self.inner.closed.store(true, Ordering::Release);
        let queues: Vec<Arc<WebhookQueue>> = self
            .inner
            .queues
            .lock()
            .expect("webhook queues lock")
            .values()
            .cloned()
            .collect();
        for queue in &queues {
            queue.ready.notify_one();
        }
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock().expect("webhook tasks lock"));
        let drained =
            tokio::time::timeout(limit, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tasks.abort_all();
        }
        queues
            .iter()
            .map(|queue| queue.pending.lock().expect("webhook queue lock").len())
            .sum()
    }

    /// Returns the queue of webhook `name`, starting its task on first use.
    fn queue(&self, name: &str) -> Arc<WebhookQueue> {
        let mut queues = self.inner.queues.lock().expect("webhook queues lock");
        if let Some(queue) = queues.get(name) {
            return Arc::clone(queue);
        }
        let queue = Arc::new(WebhookQueue {
            pending: Mutex::new(Vec::new()),
            ready: Notify::new(),
        });
        queues.insert(name.to_owned(), Arc::clone(&queue));
        let inner = Arc::clone(&self.inner);
        let worker = Arc::clone(&queue);
        self.inner
            .tasks
            .lock()
            .expect("webhook tasks lock")
            .spawn(run(inner, worker));
        queue
    }
}

/// Adds `delivery` to a queue of at most `capacity`, and returns the one
/// that makes room: the least severe, newest first among equals, unless
/// the new one is not more severe than it.
fn push_bounded(
    pending: &mut Vec<Delivery>,
    delivery: Delivery,
    capacity: usize,
) -> Option<Delivery> {
    if pending.len() < capacity {
        pending.push(delivery);
        return None;
    }
    let weakest = pending
        .iter()
        .enumerate()
        .min_by_key(|(_, queued)| {
            (
                queued.notification.severity,
                std::cmp::Reverse(queued.order),
            )
        })
        .map(|(index, _)| index)?;
    if pending[weakest].notification.severity >= delivery.notification.severity {
        return Some(delivery);
    }
    let dropped = pending.swap_remove(weakest);
    pending.push(delivery);
    Some(dropped)
}

/// Takes the most severe, then oldest, delivery.
fn pop_most_severe(pending: &mut Vec<Delivery>) -> Option<Delivery> {
    let strongest = pending
        .iter()
        .enumerate()
        .max_by_key(|(_, queued)| {
            (
                queued.notification.severity,
                std::cmp::Reverse(queued.order),
            )
        })
        .map(|(index, _)| index)?;
    Some(pending.swap_remove(strongest))
}

/// Delivers one webhook's queue until the dispatcher closes and the queue
/// is empty.
async fn run(inner: Arc<DispatcherInner>, queue: Arc<WebhookQueue>) {
    let slots = Arc::new(Semaphore::new(inner.settings.concurrency.max(1)));
    let mut running = JoinSet::new();
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let next = pop_most_severe(&mut queue.pending.lock().expect("webhook queue lock"));
        let Some(delivery) = next else {
            drop(permit);
            if inner.closed.load(Ordering::Acquire) {
                break;
            }
            queue.ready.notified().await;
            continue;
        };
        let inner = Arc::clone(&inner);
        running.spawn(async move {
            let delivered = deliver(&inner.client, &inner.settings, &delivery).await;
            let counter = if delivered {
                &inner.counts.delivered
            } else {
                &inner.counts.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
}

fn build_client(timeout: Duration) -> WebhookClient {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Sends one delivery with retries; returns whether the receiver accepted it.
async fn deliver(client: &WebhookClient, settings: &DeliverySettings, delivery: &Delivery) -> bool {
    let name = &delivery.target.name;
    let body = Bytes::from(delivery.notification.body(delivery.target.format));
    let id = delivery_id();
    let mut backoff = settings.first_backoff;
    for attempt in 1..=settings.attempts.max(1) {
        let outcome = attempt_once(client, settings, &delivery.target, &body, &id).await;
        match outcome {
            Attempt::Delivered => {
                tracing::debug!(webhook = %name, delivery = %id, attempt, "webhook delivered");
                return true;
            }
            Attempt::Rejected(status) => {
                tracing::error!(webhook = %name, delivery = %id, status, "webhook receiver rejected the notification; check the webhook's URL and the receiver's logs");
                return false;
            }
            Attempt::Retry(reason) if attempt < settings.attempts => {
                tracing::warn!(webhook = %name, delivery = %id, attempt, %reason, retry_in_ms = backoff.as_millis() as u64, "webhook delivery failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(settings.max_backoff);
            }
            Attempt::Retry(reason) => {
                tracing::error!(webhook = %name, delivery = %id, attempts = attempt, %reason, "webhook delivery failed; giving up on this notification");
            }
        }
    }
    false
}

enum Attempt {
    Delivered,
    /// A 4xx other than 408 and 429: sending again would not help.
    Rejected(u16),
    Retry(String),
}

async fn attempt_once(
    client: &WebhookClient,
    settings: &DeliverySettings,
    target: &ResolvedWebhook,
    body: &Bytes,
    id: &str,
) -> Attempt {
    let request = match build_request(target, body, id) {
        Ok(request) => request,
        Err(reason) => return Attempt::Retry(reason),
    };
    let response = match tokio::time::timeout(settings.timeout, client.request(request)).await {
        Err(_) => return Attempt::Retry(format!("timed out after {:?}", settings.timeout)),
        Ok(Err(error)) => return Attempt::Retry(describe_client_error(&error)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    // Read the body so the connection can be reused; its content is unused.
    let _ = tokio::time::timeout(settings.timeout, response.into_body().collect()).await;
    if status.is_success() {
        Attempt::Delivered
    } else if status.is_client_error() && status != 408 && status != 429 {
        Attempt::Rejected(status.as_u16())
    } else {
        Attempt::Retry(format!("receiver answered {status}"))
    }
}

fn build_request(
    target: &ResolvedWebhook,
    body: &Bytes,
    id: &str,
) -> Result<http::Request<Full<Bytes>>, String> {
    let mut builder = http::Request::post(target.url.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "castellan-webhook")
        .header(DELIVERY_HEADER, id);
    if let Some(key) = &target.signing_key {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        builder = builder
            .header(SIGNATURE_HEADER, sign(key, &timestamp, body))
            .header(TIMESTAMP_HEADER, timestamp);
    }
    // The URL may be a secret, so the error never repeats it.
    builder
        .body(Full::new(body.clone()))
        .map_err(|_| "the webhook URL is not a valid HTTP URL".to_owned())
}

/// Returns `sha256=<hex>` of HMAC-SHA256 over `<timestamp>.<body>`.
pub fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// Describes a client error by its kind and innermost cause, which for
/// connection failures names no URL.
fn describe_client_error(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    if error.is_connect() {
        format!("cannot connect: {source}")
    } else {
        format!("request failed: {source}")
    }
}

fn delivery_id() -> String {
    let bytes: [u8; 12] = rand::random();
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests;
