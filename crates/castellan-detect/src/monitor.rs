//! The monitor: follows the audit log, feeds the detectors, stores their
//! signals as alerts and runs the configured responses.
//!
//! It judges committed audit records in sequence number order, off the
//! request path, including those of other gateways that share the store.
//! Its own gateway's records come from the audit writer as each batch
//! commits, so they are not read back. Records of other gateways, and
//! batches the writer could not hand over, show up as gaps in the sequence
//! numbers and are read from the store. The store is also read whenever no
//! batch arrives for a poll interval. When the gateway stops, the monitor
//! judges what the writer still commits until the writer drops the feed.
//!
//! The position is saved in the store after each poll of it, at least once
//! per poll interval while batches come from the writer, and when the
//! monitor stops. After a restart the monitor replays recent history into
//! the detectors without raising anything, then continues from the saved
//! position. So no record is skipped, but records judged after the last
//! save are judged again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use castellan_model::{Config, ResponseRule, WebhookTarget};
use castellan_store::{
    now_ms, AlertStatus, AuditQuery, AuditRecord, Event, NewSignal, RaisedAlert, Store, StoreError,
};
use castellan_vault::{MasterKey, SealedSecret};
use tokio::sync::mpsc::Receiver;
use zeroize::Zeroizing;

use crate::engine::{Context, Engine, Signal};
use crate::observation::Observation;
use crate::webhook::{Dispatcher, Notification, ResolvedWebhook};

/// The actor recorded for changes the monitor makes itself.
pub const MONITOR_ACTOR: &str = "castellan";

/// Records judged between two yields to the runtime, well under a
/// millisecond of work.
const YIELD_EVERY: usize = 16;

/// Pacing and replay settings of the monitor.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// Wait between two reads of the audit log when it had nothing new.
    pub poll_interval: Duration,
    /// Maximum records read at once. Rows become records on the runtime's
    /// threads without a pause, so a larger batch delays requests for
    /// longer. With 2,000 the paced p99 of `bench/run` was 4 to 5 ms, and
    /// with 256 about 2 ms.
    pub batch: u32,
    /// Records before the saved position replayed into the detectors at
    /// start, so baselines survive a restart.
    pub replay: u32,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        MonitorSettings {
            poll_interval: Duration::from_millis(200),
            batch: 256,
            replay: 200_000,
        }
    }
}

/// Returns the configuration the gateway currently runs with.
pub type ConfigView = Box<dyn Fn() -> Arc<Config> + Send + Sync>;

/// Follows the audit log; see the module documentation.
pub struct Monitor {
    store: Store,
    master_key: Arc<MasterKey>,
    config_view: ConfigView,
    engine: Engine,
    dispatcher: Dispatcher,
    settings: MonitorSettings,
    /// Seq of the last record judged.
    cursor: i64,
    /// The cursor as last saved in the store, and when.
    saved_cursor: i64,
    saved_at: Instant,
    /// The configuration and store version the context and webhooks were
    /// built from.
    config: Arc<Config>,
    store_version: Option<i64>,
    webhooks: HashMap<String, ResolvedWebhook>,
    signals: Vec<Signal>,
}

impl Monitor {
    /// Restores the saved position and replays recent history. A store
    /// without a saved position starts at its newest record, so turning
    /// detection on never raises alerts about old traffic.
    pub async fn start(
        store: Store,
        master_key: Arc<MasterKey>,
        config_view: ConfigView,
        engine: Engine,
        dispatcher: Dispatcher,
        settings: MonitorSettings,
    ) -> Result<Monitor, StoreError> {
        let config = config_view();
        let mut monitor = Monitor {
            store,
            master_key,
            config_view,
            engine,
            dispatcher,
            settings,
            cursor: 0,
            saved_cursor: 0,
            saved_at: Instant::now(),
            config,
            store_version: None,
            webhooks: HashMap::new(),
            signals: Vec::new(),
        };
        monitor.refresh(true).await?;
        let newest = newest_seq(&monitor.store).await?;
        let cursor = match monitor.store.detect_cursor().await? {
            Some(saved) => saved.min(newest),
            None => newest,
        };
        monitor.replay(cursor).await?;
        monitor.cursor = cursor;
        monitor.store.set_detect_cursor(cursor).await?;
        monitor.saved_cursor = cursor;
        tracing::info!(cursor, "monitor started");
        Ok(monitor)
    }

    /// Judges new records until `shutdown` resolves: the committed batches
    /// that `feed` brings (see [`Monitor::judge_committed`]), and the
    /// store's records after the position whenever no batch came for a poll
    /// interval. Store errors are logged and retried at the next poll; the
    /// position only moves past records that were fully handled.
    ///
    /// After `shutdown`, it goes on judging the feed's batches until the
    /// writer drops the sender, then reads the store once more, so the
    /// records committed while the gateway stops are judged in this run.
    pub async fn run(
        mut self,
        mut feed: Option<Receiver<Vec<AuditRecord>>>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut read_store = true;
        loop {
            if read_store {
                match self.poll().await {
                    Ok(handled) if handled == self.settings.batch as usize => continue,
                    Ok(_) => {}
                    Err(error) => log_store_error(&error, self.cursor),
                }
            }
            tokio::select! {
                _ = &mut shutdown => break,
                batch = next_batch(&mut feed) => {
                    read_store = false;
                    match batch {
                        Some(records) => {
                            if let Err(error) = self.judge_committed(&records).await {
                                log_store_error(&error, self.cursor);
                            }
                        }
                        // The writer stopped; the store still has every record.
                        None => feed = None,
                    }
                }
                _ = tokio::time::sleep(self.settings.poll_interval) => read_store = true,
            }
        }
        self.finish(feed).await;
        tracing::info!(cursor = self.cursor, "monitor stopped");
    }

    /// Judges the last batches of a stopping writer and the store's newest
    /// records, then saves the position.
    async fn finish(&mut self, feed: Option<Receiver<Vec<AuditRecord>>>) {
        if let Some(mut feed) = feed {
            while let Some(records) = feed.recv().await {
                if let Err(error) = self.judge_committed(&records).await {
                    log_store_error(&error, self.cursor);
                }
            }
        }
        loop {
            match self.poll().await {
                Ok(handled) if handled == self.settings.batch as usize => {}
                Ok(_) => break,
                Err(error) => {
                    log_store_error(&error, self.cursor);
                    break;
                }
            }
        }
        if let Err(error) = self.save_cursor().await {
            log_store_error(&error, self.cursor);
        }
    }

    /// Judges a batch the audit writer committed, after reading from the
    /// store any records between the position and the batch's first seq.
    /// Records at or before the position are skipped, and a batch with a
    /// record that has no seq is left to the store reads. Returns how many
    /// records it judged.
    pub async fn judge_committed(&mut self, records: &[AuditRecord]) -> Result<usize, StoreError> {
        if records.iter().any(|record| record.seq.is_none()) {
            return self.poll().await;
        }
        let Some(first) = records.first().and_then(|record| record.seq) else {
            return Ok(0);
        };
        self.refresh(false).await?;
        let mut judged = 0;
        if first > self.cursor + 1 {
            judged += self.read_store_until(first - 1).await?;
        }
        for record in records {
            let seq = record.seq.unwrap_or(self.cursor);
            if seq <= self.cursor {
                continue;
            }
            self.judge(record).await?;
            self.cursor = seq;
            judged += 1;
            if judged % YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
            }
        }
        if self.saved_at.elapsed() >= self.settings.poll_interval {
            self.save_cursor().await?;
        }
        Ok(judged)
    }

    /// Judges the stored records after the position up to seq `last`.
    async fn read_store_until(&mut self, last: i64) -> Result<usize, StoreError> {
        let mut judged = 0;
        loop {
            let records = self
                .store
                .query_audit(&AuditQuery::after(self.cursor, self.settings.batch))
                .await?;
            for record in &records {
                let seq = record.seq.unwrap_or(self.cursor);
                if seq > last {
                    return Ok(judged);
                }
                self.judge(record).await?;
                self.cursor = self.cursor.max(seq);
                judged += 1;
                if judged % YIELD_EVERY == 0 {
                    tokio::task::yield_now().await;
                }
            }
            if records.len() < self.settings.batch as usize || self.cursor >= last {
                return Ok(judged);
            }
            if self.saved_at.elapsed() >= self.settings.poll_interval {
                self.save_cursor().await?;
            }
        }
    }

    /// Saves the position in the store, if it moved since the last save.
    async fn save_cursor(&mut self) -> Result<(), StoreError> {
        if self.cursor != self.saved_cursor {
            self.store.set_detect_cursor(self.cursor).await?;
            self.saved_cursor = self.cursor;
        }
        self.saved_at = Instant::now();
        Ok(())
    }

    /// Judges the records after the position, up to one batch, and returns
    /// how many it read.
    pub async fn poll(&mut self) -> Result<usize, StoreError> {
        self.refresh(false).await?;
        let records = self
            .store
            .query_audit(&AuditQuery::after(self.cursor, self.settings.batch))
            .await?;
        for (index, record) in records.iter().enumerate() {
            self.judge(record).await?;
            self.cursor = record.seq.unwrap_or(self.cursor);
            if index % YIELD_EVERY == YIELD_EVERY - 1 {
                // Judging a full batch takes milliseconds. The monitor
                // shares the runtime's threads with the gateway, so it steps
                // aside between slices of records to let requests through.
                tokio::task::yield_now().await;
            }
        }
        // Also saves what batches from the writer moved since the last save.
        self.save_cursor().await?;
        Ok(records.len())
    }

    /// Returns the seq of the last record judged.
    pub fn cursor(&self) -> i64 {
        self.cursor
    }

    async fn replay(&mut self, cursor: i64) -> Result<(), StoreError> {
        let mut after = (cursor - i64::from(self.settings.replay)).max(0);
        let mut replayed = 0_u64;
        while after < cursor {
            let records = self
                .store
                .query_audit(&AuditQuery::after(after, self.settings.batch))
                .await?;
            let Some(last) = records.last().and_then(|record| record.seq) else {
                break;
            };
            for record in records
                .iter()
                .filter(|r| r.seq.is_some_and(|s| s <= cursor))
            {
                if let Ok(observation) = Observation::from_record(record) {
                    self.engine.learn(&observation);
                    replayed += 1;
                }
            }
            after = last;
        }
        tracing::debug!(replayed, "monitor replayed recent history");
        Ok(())
    }

    async fn judge(&mut self, record: &AuditRecord) -> Result<(), StoreError> {
        let observation = match Observation::from_record(record) {
            Ok(observation) => observation,
            Err(error) => {
                tracing::warn!(%error, "audit record skipped by the detectors");
                return Ok(());
            }
        };
        let mut signals = std::mem::take(&mut self.signals);
        self.engine.observe(&observation, &mut signals);
        let result = self.respond_all(&signals).await;
        signals.clear();
        self.signals = signals;
        result
    }

    async fn respond_all(&mut self, signals: &[Signal]) -> Result<(), StoreError> {
        for signal in signals {
            self.respond(signal).await?;
        }
        Ok(())
    }

    /// Stores one signal and runs the responses its alert calls for.
    async fn respond(&mut self, signal: &Signal) -> Result<(), StoreError> {
        let source = signal.source.to_string();
        let raised = self
            .store
            .raise_alert(&NewSignal {
                kind: signal.kind,
                severity: signal.severity,
                agent: signal.agent.as_deref(),
                subject: &signal.subject,
                source: Some(&source),
                seq: signal.seq,
                time_ms: signal.time_ms,
                summary: &signal.summary,
            })
            .await?;
        if raised.opened {
            tracing::warn!(
                alert = raised.id,
                kind = %signal.kind,
                severity = %raised.severity,
                agent = signal.agent.as_deref().unwrap_or("-"),
                summary = %signal.summary,
                "alert opened"
            );
        }
        let rules: Vec<&ResponseRule> = self
            .config
            .responses
            .iter()
            .filter(|rule| rule.applies_to(signal.kind, raised.severity))
            .collect();
        let suspended = match &signal.agent {
            Some(agent) if rules.iter().any(|rule| rule.suspend) => {
                self.suspend(agent, signal, &raised).await?
            }
            _ => false,
        };
        if raised.opened || suspended {
            let names: HashSet<&str> = rules
                .iter()
                .flat_map(|rule| rule.webhooks.iter().map(String::as_str))
                .collect();
            let notification = alert_notification(signal, &raised, suspended);
            for name in names {
                match self.webhooks.get(name) {
                    Some(target) => self.dispatcher.send(target, notification.clone()),
                    None => tracing::error!(webhook = name, alert = raised.id, "webhook is not usable (see the earlier error); the alert is not sent to it"),
                }
            }
        }
        Ok(())
    }

    /// Suspends the alert's agent unless an operator acknowledged the alert
    /// or the agent is already suspended. Returns whether it suspended.
    async fn suspend(
        &self,
        agent: &str,
        signal: &Signal,
        raised: &RaisedAlert,
    ) -> Result<bool, StoreError> {
        if !raised.opened {
            let acknowledged = self
                .store
                .alert(raised.id)
                .await?
                .is_some_and(|alert| alert.status != AlertStatus::Open);
            if acknowledged {
                return Ok(false);
            }
        }
        if self.store.suspension(agent).await?.is_some() {
            return Ok(false);
        }
        let reason = format!("alert {} ({}): {}", raised.id, signal.kind, signal.summary);
        self.store.set_suspended(agent, true, Some(&reason)).await?;
        self.store
            .record_event(&Event {
                seq: None,
                time_ms: now_ms(),
                actor: MONITOR_ACTOR.to_owned(),
                action: "agent.suspend".to_owned(),
                target: agent.to_owned(),
                detail: Some(format!("alert {}", raised.id)),
            })
            .await?;
        tracing::warn!(agent, alert = raised.id, kind = %signal.kind, "agent suspended by a response rule");
        Ok(true)
    }

    /// Rebuilds the detector context and the webhooks when the gateway's
    /// configuration or the store changed.
    async fn refresh(&mut self, force: bool) -> Result<(), StoreError> {
        let config = (self.config_view)();
        let version = self.store.change_version().await?;
        let config_changed = !Arc::ptr_eq(&config, &self.config);
        if !force && !config_changed && self.store_version == Some(version) {
            return Ok(());
        }
        if config_changed && config.detect != self.config.detect {
            tracing::warn!("the [detect] settings changed; restart castellan serve to apply them");
        }
        self.config = config;
        self.store_version = Some(version);
        self.engine.set_context(self.context().await?);
        self.webhooks = resolve_webhooks(&self.config, &self.store, &self.master_key).await?;
        Ok(())
    }

    async fn context(&self) -> Result<Context, StoreError> {
        let canary_tokens = self.store.canary_token_ids().await?.into_iter().collect();
        let declared_networks = self
            .config
            .agents
            .values()
            .filter(|agent| !agent.networks.is_empty())
            .map(|agent| (agent.name.clone(), agent.networks.clone()))
            .collect();
        // NOTE: usage summaries hold each agent's latest use, so an agent that
        // returns while the monitor is behind is seeded with that return and
        // its dormancy goes unnoticed. The monitor lags by one poll normally.
        let last_used_ms = self
            .store
            .agent_usage()
            .await?
            .into_iter()
            .map(|usage| (usage.agent, usage.last_used_ms))
            .collect();
        Ok(Context {
            canary_tokens,
            declared_networks,
            last_used_ms,
        })
    }
}

/// Resolves every `[webhooks.*]` entry of `config`, opening the vault
/// entries that hold URLs and signing keys. A webhook whose secret is
/// missing or unusable is logged (by name, never value) and left out.
pub async fn resolve_webhooks(
    config: &Config,
    store: &Store,
    master_key: &MasterKey,
) -> Result<HashMap<String, ResolvedWebhook>, StoreError> {
    let mut resolved = HashMap::new();
    for (name, webhook) in &config.webhooks {
        let url = match &webhook.target {
            WebhookTarget::Url(url) => Some(Zeroizing::new(url.to_string())),
            WebhookTarget::Secret(secret) => open_secret(store, master_key, name, secret)
                .await?
                .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok().map(Zeroizing::new)),
        };
        let Some(url) = url else { continue };
        if let Err(problem) = check_webhook_url(&url) {
            tracing::error!(webhook = %name, "webhook URL {problem}; the webhook is not used");
            continue;
        }
        let signing_key = match &webhook.signing_secret {
            None => None,
            Some(secret) => match open_secret(store, master_key, name, secret).await? {
                Some(key) => Some(key),
                None => continue,
            },
        };
        resolved.insert(
            name.clone(),
            ResolvedWebhook {
                name: name.clone(),
                url,
                format: webhook.format,
                signing_key,
            },
        );
    }
    Ok(resolved)
}

/// Checks a webhook URL before use, saying what is wrong without repeating
/// it, since it may be a secret: http or https, a host, and no link-local
/// address such as a cloud metadata service.
fn check_webhook_url(text: &str) -> Result<(), &'static str> {
    let url = url::Url::parse(text.trim()).map_err(|_| "is not a valid URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("does not use http or https");
    }
    let link_local = match url.host() {
        None => return Err("has no host"),
        Some(url::Host::Ipv4(ip)) => ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => (ip.segments()[0] & 0xffc0) == 0xfe80,
        Some(url::Host::Domain(_)) => false,
    };
    if link_local {
        return Err("points at a link-local address, where cloud metadata services answer");
    }
    Ok(())
}

/// Opens the vault entry `secret` for webhook `webhook`, logging why it
/// cannot (never the value).
async fn open_secret(
    store: &Store,
    master_key: &MasterKey,
    webhook: &str,
    secret: &str,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let Some(row) = store.latest_secret(secret).await? else {
        tracing::error!(
            webhook,
            secret,
            "webhook secret not found in the vault; store it with `castellan secret set {secret}`"
        );
        return Ok(None);
    };
    let sealed = SealedSecret {
        name: row.name,
        version: row.version,
        wrapped_key: row.wrapped_key,
        ciphertext: row.ciphertext,
    };
    match castellan_vault::open(master_key, &sealed) {
        Ok(value) => Ok(Some(Zeroizing::new(value.expose().to_vec()))),
        Err(error) => {
            tracing::error!(webhook, secret, %error, "webhook secret cannot be opened");
            Ok(None)
        }
    }
}

/// Waits for the next committed batch; never resolves without a feed.
async fn next_batch(feed: &mut Option<Receiver<Vec<AuditRecord>>>) -> Option<Vec<AuditRecord>> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

fn log_store_error(error: &StoreError, cursor: i64) {
    tracing::error!(%error, cursor, "monitor could not read or store; retrying");
}

async fn newest_seq(store: &Store) -> Result<i64, StoreError> {
    let newest = store.query_audit(&AuditQuery::tail(1)).await?;
    Ok(newest.first().and_then(|record| record.seq).unwrap_or(0))
}

/// Builds the webhook notification of an opened alert or a suspension.
fn alert_notification(signal: &Signal, raised: &RaisedAlert, suspended: bool) -> Notification {
    let event = if raised.opened { "opened" } else { "suspended" };
    let agent = signal.agent.as_deref();
    let mut text = format!(
        "castellan alert {} [{}] {}: {}",
        raised.id, raised.severity, signal.kind, signal.summary
    );
    if suspended {
        text.push_str(&format!(
            " Agent {:?} is suspended; lift it with `castellan agent resume {}`.",
            agent.unwrap_or_default(),
            agent.unwrap_or_default()
        ));
    }
    let json = serde_json::json!({
        "type": "alert",
        "event": event,
        "alert": {
            "id": raised.id,
            "kind": signal.kind,
            "severity": raised.severity,
            "agent": agent,
            "subject": signal.subject,
            "count": raised.count,
            "summary": signal.summary,
            "source": signal.source.to_string(),
            "seq": signal.seq,
            "time_ms": signal.time_ms,
        },
        "agent_suspended": suspended,
        "text": text,
    });
    Notification {
        severity: raised.severity,
        json,
        text,
    }
}

#[cfg(test)]
mod tests {
    use super::check_webhook_url;

    #[test]
    fn webhook_urls_checked() {
        assert!(check_webhook_url("https://hooks.example.com/T0/B0/x").is_ok());
        assert!(check_webhook_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(check_webhook_url("not a url").is_err());
        assert!(check_webhook_url("ftp://hooks.example.com/x").is_err());
        assert!(check_webhook_url("http://169.254.169.254/latest").is_err());
        assert!(check_webhook_url("http://[fe80::1]/hook").is_err());
    }
}
