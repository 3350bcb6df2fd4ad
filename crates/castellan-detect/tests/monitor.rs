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
