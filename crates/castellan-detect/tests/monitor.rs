//! The monitor against a real SQLite store: it judges new audit records
//! once, saves its position, replays history silently after a restart and
//! runs the suspend response.

use std::sync::Arc;

use castellan_detect::monitor::{Monitor, MonitorSettings};
use castellan_detect::webhook::{DeliverySettings, Dispatcher};
use castellan_detect::{DetectorSettings, Engine};
use castellan_model::{Config, Severity};
use castellan_store::{AuditDecision, AuditRecord, Store, TokenRecord};
use castellan_vault::MasterKey;

const START_MS: i64 = 1_790_000_000_000;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    config: Arc<Config>,
}

async fn fixture(config: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::create(&dir.path().join("castellan.db"))
        .await
        .expect("create the store");
    let config = Config::parse(config, std::path::Path::new("castellan.toml")).expect("config");
    Fixture {
        _dir: dir,
        store,
        config: Arc::new(config),
    }
}

impl Fixture {
    async fn monitor(&self) -> Monitor {
        let config = Arc::clone(&self.config);
        let dispatcher = Dispatcher::new(DeliverySettings::default());
        Monitor::start(
            self.store.clone(),
            Arc::new(MasterKey::generate()),
            Box::new(move || Arc::clone(&config)),
            Engine::new(DetectorSettings::default(), None),
            dispatcher,
            MonitorSettings::default(),
        )
        .await
        .expect("monitor starts")
    }

    async fn audit(&self, records: &[AuditRecord]) {
        self.store
            .insert_audit_batch(records)
            .await
            .expect("insert audit records");
    }
}

fn record(offset_ms: i64, token_id: &str, agent: &str, status: u16) -> AuditRecord {
    let decision = if status < 400 {
        AuditDecision::Allow
    } else {
        AuditDecision::Deny
    };
    AuditRecord {
        seq: None,
        time_ms: START_MS + offset_ms,
        request_id: format!("req-{offset_ms}"),
        agent: Some(agent.to_owned()),
        token_id: Some(token_id.to_owned()),
        source: "198.51.100.7:40000".to_owned(),
        connection: Some("api".to_owned()),
        method: "GET".to_owned(),
        path: "/v1/models".to_owned(),
        decision,
        rule: None,
        reason: None,
        status,
        bytes_in: 0,
        bytes_out: 100,
        duration_us: 500,
        findings: Vec::new(),
        user_agent: None,
    }
}

fn canary(id: &str, agent: &str) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        agent: agent.to_owned(),
        hash: "ab".repeat(32),
        created_ms: START_MS,
        expires_ms: None,
        revoked_ms: None,
        last_used_ms: None,
        canary: true,
    }
}

const CONFIG: &str = r#"
[connections.api]
upstream = "https://api.example.com"
auth = { kind = "bearer" }
secret = "api-key"

[roles.reader]
allow = [{ connection = "api", methods = ["GET"], paths = ["/**"] }]

[agents.bot]
owner = "ops@example.com"
roles = ["reader"]
"#;

#[tokio::test]
async fn new_records_are_judged_once() {
    let fixture = fixture(CONFIG).await;
    fixture
        .store
        .insert_token(&canary("tok_decoy", "decoy"))
        .await
        .unwrap();
    // Records written before the first start are history, not news.
    fixture.audit(&[record(0, "tok_decoy", "decoy", 401)]).await;
    let mut monitor = fixture.monitor().await;
    assert!(fixture.store.alerts(false, 10).await.unwrap().is_empty());

    fixture
        .audit(&[record(1_000, "tok_decoy", "decoy", 401)])
        .await;
    assert_eq!(monitor.poll().await.unwrap(), 1);
    let alerts = fixture.store.alerts(false, 10).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].severity, Severity::Critical);
    assert_eq!(alerts[0].count, 1);

    // A restart continues from the saved position: nothing is judged twice.
    drop(monitor);
    let mut restarted = fixture.monitor().await;
    assert_eq!(restarted.poll().await.unwrap(), 0);
    assert_eq!(fixture.store.alerts(false, 10).await.unwrap()[0].count, 1);

    fixture
        .audit(&[record(2_000, "tok_decoy", "decoy", 401)])
        .await;
    assert_eq!(restarted.poll().await.unwrap(), 1);
    assert_eq!(fixture.store.alerts(false, 10).await.unwrap()[0].count, 2);
}

#[tokio::test]
async fn suspend_rule_suspends_the_agent_once() {
    let config = format!("{CONFIG}\n[[responses]]\nkinds = [\"canary_token\"]\nsuspend = true\n");
    let fixture = fixture(&config).await;
    fixture
        .store
        .insert_token(&canary("tok_bait", "bot"))
        .await
        .unwrap();
    let mut monitor = fixture.monitor().await;

    fixture
        .audit(&[
            record(0, "tok_bait", "bot", 401),
            record(60_000, "tok_bait", "bot", 401),
        ])
        .await;
    monitor.poll().await.unwrap();
    let suspended = fixture.store.suspended_agents().await.unwrap();
    assert_eq!(suspended.len(), 1);
    let reason = suspended[0].reason.clone().unwrap_or_default();
    let alert = &fixture.store.alerts(false, 10).await.unwrap()[0];
    assert!(
        reason.starts_with(&format!("alert {} (canary_token)", alert.id)),
        "{reason}"
    );
    let events = fixture.store.events(None, 10).await.unwrap();
    let suspensions = events
        .iter()
        .filter(|e| e.action == "agent.suspend")
        .count();
    assert_eq!(suspensions, 1, "{events:?}");
}

#[tokio::test]
async fn acknowledged_alert_does_not_suspend_again() {
    let config = format!("{CONFIG}\n[[responses]]\nkinds = [\"canary_token\"]\nsuspend = true\n");
    let fixture = fixture(&config).await;
    fixture
        .store
        .insert_token(&canary("tok_bait", "bot"))
        .await
        .unwrap();
    let mut monitor = fixture.monitor().await;
    fixture.audit(&[record(0, "tok_bait", "bot", 401)]).await;
    monitor.poll().await.unwrap();
    let alert = fixture.store.alerts(false, 10).await.unwrap()[0].id;
    fixture
        .store
        .acknowledge_alert(alert, "operator")
        .await
        .unwrap();
    fixture
        .store
        .set_suspended("bot", false, None)
        .await
        .unwrap();

    // Past the repeat interval, the same canary signals again.
    fixture
        .audit(&[record(3_600_000, "tok_bait", "bot", 401)])
        .await;
    monitor.poll().await.unwrap();
    assert!(fixture.store.suspended_agents().await.unwrap().is_empty());
    assert_eq!(fixture.store.alerts(false, 10).await.unwrap()[0].count, 2);
}

impl Fixture {
    /// Inserts `records` as the audit writer does and returns them with
    /// the seqs the store gave them.
    async fn committed(&self, mut records: Vec<AuditRecord>) -> Vec<AuditRecord> {
        let seqs = self
            .store
            .insert_audit_batch(&records)
            .await
            .expect("insert audit records");
        for (record, seq) in records.iter_mut().zip(seqs) {
            record.seq = Some(seq);
        }
        records
    }

    async fn alert_count(&self) -> i64 {
        let alerts = self.store.alerts(false, 10).await.unwrap();
        alerts.iter().map(|alert| alert.count).sum()
    }
}

/// Past the canary detector's repeat interval, so each record signals.
const HOUR: i64 = 3_600_000;

/// A committed batch is judged once, and the records another gateway
/// stored before it are read from the store first.
#[tokio::test]
async fn committed_batches_fill_gaps_from_the_store() {
    let fixture = fixture(CONFIG).await;
    fixture
        .store
        .insert_token(&canary("tok_decoy", "decoy"))
        .await
        .unwrap();
    let mut monitor = fixture.monitor().await;

    // Another gateway's record, which no batch of this one carries.
    fixture
        .audit(&[record(HOUR, "tok_decoy", "decoy", 401)])
        .await;
    let batch = fixture
        .committed(vec![
            record(2 * HOUR, "tok_decoy", "decoy", 401),
            record(3 * HOUR, "tok_decoy", "decoy", 401),
        ])
        .await;
    assert_eq!(monitor.judge_committed(&batch).await.unwrap(), 3);
    assert_eq!(fixture.alert_count().await, 3);
    assert_eq!(monitor.cursor(), batch[1].seq.unwrap());

    // A batch seen again, or read from the store as well, is not judged
    // twice.
    assert_eq!(monitor.judge_committed(&batch).await.unwrap(), 0);
    assert_eq!(monitor.poll().await.unwrap(), 0);
    assert_eq!(fixture.alert_count().await, 3);

    // Records without seqs are read from the store instead.
    fixture
        .audit(&[record(4 * HOUR, "tok_decoy", "decoy", 401)])
        .await;
    let unnumbered = vec![record(4 * HOUR, "tok_decoy", "decoy", 401)];
    assert_eq!(monitor.judge_committed(&unnumbered).await.unwrap(), 1);
    assert_eq!(fixture.alert_count().await, 4);
}

/// `run` judges what the feed brings without reading it from the store,
/// goes on until the writer drops the feed after a stop, and saves its
/// position.
#[tokio::test]
async fn run_judges_fed_batches_and_saves_position() {
    let fixture = fixture(CONFIG).await;
    fixture
        .store
        .insert_token(&canary("tok_decoy", "decoy"))
        .await
        .unwrap();
    let monitor = fixture.monitor().await;
    let (feed, committed) = tokio::sync::mpsc::channel(4);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(monitor.run(Some(committed), async {
        let _ = stopped.await;
    }));

    // Only the feed has this record, so only the feed can raise its alert.
    let mut fed = record(HOUR, "tok_decoy", "decoy", 401);
    fed.seq = Some(1);
    feed.send(vec![fed]).await.unwrap();
    let judged = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while fixture.alert_count().await == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    judged.await.expect("the fed record raised no alert");

    // A batch the writer commits while the gateway stops is judged too.
    stop.send(()).unwrap();
    let mut last = record(2 * HOUR, "tok_decoy", "decoy", 401);
    last.seq = Some(2);
    feed.send(vec![last]).await.unwrap();
    drop(feed);
    tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("the monitor did not stop once the feed closed")
        .unwrap();

    assert_eq!(fixture.store.audit_count().await.unwrap(), 0);
    assert_eq!(fixture.alert_count().await, 2);
    assert_eq!(fixture.store.detect_cursor().await.unwrap(), Some(2));
}
