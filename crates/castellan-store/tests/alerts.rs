//! Alerts folded from detector signals, the event log and the detector's
//! cursor.

mod common;

use castellan_model::{AlertKind, Severity};
use castellan_store::{AlertStatus, Event, NewSignal, StoreError, EVIDENCE_FIRST, EVIDENCE_LATEST};
use common::create_db;

fn signal<'a>(kind: AlertKind, subject: &'a str, seq: i64, severity: Severity) -> NewSignal<'a> {
    NewSignal {
        kind,
        severity,
        agent: Some(subject),
        subject,
        source: Some("203.0.113.0/24"),
        seq,
        time_ms: 1_700_000_000_000 + seq,
        summary: "rate 10x baseline",
    }
}

#[tokio::test]
async fn signals_fold_into_one_alert() {
    let db = create_db().await;
    let store = &db.store;
    let first = store
        .raise_alert(&signal(AlertKind::RateSpike, "bot", 1, Severity::Medium))
        .await
        .unwrap();
    assert!(first.opened);
    assert_eq!(first.count, 1);

    let mut second = signal(AlertKind::RateSpike, "bot", 2, Severity::Low);
    second.source = Some("198.51.100.0/24");
    second.summary = "rate 12x baseline";
    let folded = store.raise_alert(&second).await.unwrap();
    assert!(!folded.opened);
    assert_eq!(folded.id, first.id);
    assert_eq!(folded.count, 2);
    assert_eq!(folded.severity, Severity::Medium, "severity keeps the max");

    let other_kind = store
        .raise_alert(&signal(AlertKind::Probing, "bot", 3, Severity::Low))
        .await
        .unwrap();
    assert!(other_kind.opened, "another kind opens another alert");
    let other_subject = store
        .raise_alert(&signal(AlertKind::RateSpike, "other", 4, Severity::Low))
        .await
        .unwrap();
    assert!(other_subject.opened, "another subject opens another alert");

    let alert = store.alert(first.id).await.unwrap().expect("alert stored");
    assert_eq!(alert.kind, AlertKind::RateSpike);
    assert_eq!(alert.agent.as_deref(), Some("bot"));
    assert_eq!(alert.subject, "bot");
    assert_eq!(alert.status, AlertStatus::Open);
    assert_eq!(alert.count, 2);
    assert_eq!(alert.evidence, [1, 2]);
    assert_eq!(alert.sources, ["203.0.113.0/24", "198.51.100.0/24"]);
    assert_eq!(alert.summary, "rate 12x baseline");
    assert_eq!(alert.first_seen_ms, 1_700_000_000_001);
    assert_eq!(alert.last_seen_ms, 1_700_000_000_002);
    assert_eq!(alert.acknowledged_by, None);
}

#[tokio::test]
async fn severity_rises_to_the_max() {
    let db = create_db().await;
    let store = &db.store;
    for (seq, severity) in [
        (1, Severity::Low),
        (2, Severity::Critical),
        (3, Severity::High),
    ] {
        store
            .raise_alert(&signal(AlertKind::CanaryToken, "bot", seq, severity))
            .await
            .unwrap();
    }
    let alerts = store.alerts(false, 10).await.unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].severity, Severity::Critical);
}

#[tokio::test]
async fn evidence_is_capped() {
    let db = create_db().await;
    let store = &db.store;
    let total = 150;
    for seq in 1..=total {
        store
            .raise_alert(&signal(AlertKind::Probing, "bot", seq, Severity::Low))
            .await
            .unwrap();
    }
    let alert = &store.alerts(true, 10).await.unwrap()[0];
    assert_eq!(alert.count, total);
    assert_eq!(alert.evidence.len(), EVIDENCE_FIRST + EVIDENCE_LATEST);
    assert_eq!(alert.evidence[0], 1);
    assert_eq!(alert.evidence[EVIDENCE_FIRST - 1], 20);
    assert_eq!(alert.evidence[EVIDENCE_FIRST], total - 79);
    assert_eq!(*alert.evidence.last().unwrap(), total);
    assert_eq!(alert.sources.len(), 1);
}

#[tokio::test]
async fn acknowledge_then_resolve() {
    let db = create_db().await;
    let store = &db.store;
    let raised = store
        .raise_alert(&signal(AlertKind::NewNetwork, "bot", 1, Severity::Medium))
        .await
        .unwrap();

    let acked = store.acknowledge_alert(raised.id, "alice").await.unwrap();
    assert_eq!(acked.status, AlertStatus::Acknowledged);
    assert_eq!(acked.acknowledged_by.as_deref(), Some("alice"));

    let folded = store
        .raise_alert(&signal(AlertKind::NewNetwork, "bot", 2, Severity::Medium))
        .await
        .unwrap();
    assert_eq!(folded.id, raised.id, "acknowledged alerts still fold");

    let resolved = store.resolve_alert(raised.id, "bob").await.unwrap();
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.resolved_by.as_deref(), Some("bob"));
    assert_eq!(resolved.acknowledged_by.as_deref(), Some("alice"));
    assert_eq!(resolved.count, 2);

    let error = store
        .acknowledge_alert(raised.id, "alice")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::AlertResolved { id } if id == raised.id));
    assert!(error.to_string().contains("already resolved"), "{error}");
    let error = store.resolve_alert(raised.id, "alice").await.unwrap_err();
    assert!(matches!(error, StoreError::AlertResolved { .. }), "{error}");
}

#[tokio::test]
async fn unknown_alert_is_not_found() {
    let db = create_db().await;
    let store = &db.store;
    assert_eq!(store.alert(42).await.unwrap(), None);
    let error = store.acknowledge_alert(42, "alice").await.unwrap_err();
    assert!(matches!(error, StoreError::AlertNotFound { id: 42 }));
    assert!(error.to_string().contains("42"), "{error}");
    let error = store.resolve_alert(42, "alice").await.unwrap_err();
    assert!(matches!(error, StoreError::AlertNotFound { id: 42 }));
}

#[tokio::test]
async fn signal_after_resolve_opens_new_alert() {
    let db = create_db().await;
    let store = &db.store;
    let first = store
        .raise_alert(&signal(AlertKind::DormantAgent, "bot", 1, Severity::Low))
        .await
        .unwrap();
    store.resolve_alert(first.id, "alice").await.unwrap();
    let second = store
        .raise_alert(&signal(AlertKind::DormantAgent, "bot", 2, Severity::Low))
        .await
        .unwrap();
    assert!(second.opened);
    assert_ne!(second.id, first.id);
    assert_eq!(second.count, 1);

    let all = store.alerts(false, 10).await.unwrap();
    let ids: Vec<i64> = all.iter().map(|alert| alert.id).collect();
    assert_eq!(ids, [second.id, first.id], "newest last_seen first");
    let open = store.alerts(true, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].id, second.id);
    assert_eq!(store.alerts(false, 1).await.unwrap().len(), 1, "limit");
}

#[tokio::test]
async fn events_round_trip() {
    let db = create_db().await;
    let store = &db.store;
    let mut seqs = Vec::new();
    for (index, action) in ["agent.suspend", "agent.resume", "secret.rotate"]
        .into_iter()
        .enumerate()
    {
        let event = Event {
            seq: None,
            time_ms: 1_700_000_000_000 + index as i64,
            actor: "alice".into(),
            action: action.into(),
            target: "bot".into(),
            detail: (index == 2).then(|| "version 2".to_string()),
        };
        seqs.push(store.record_event(&event).await.unwrap());
    }
    let all = store.events(None, 10).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|event| event.action.as_str()).collect();
    assert_eq!(actions, ["agent.suspend", "agent.resume", "secret.rotate"]);
    assert_eq!(all[0].seq, Some(seqs[0]));
    assert_eq!(all[0].actor, "alice");
    assert_eq!(all[0].target, "bot");
    assert_eq!(all[0].time_ms, 1_700_000_000_000);
    assert_eq!(all[2].detail.as_deref(), Some("version 2"));

    let newest = store.events(None, 2).await.unwrap();
    let newest: Vec<Option<i64>> = newest.iter().map(|event| event.seq).collect();
    assert_eq!(
        newest,
        [Some(seqs[1]), Some(seqs[2])],
        "newest two, ascending"
    );
    let after = store.events(Some(seqs[0]), 1).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].seq, Some(seqs[1]));
}

#[tokio::test]
async fn detect_cursor_round_trip() {
    let db = create_db().await;
    let store = &db.store;
    assert_eq!(store.detect_cursor().await.unwrap(), None);
    store.set_detect_cursor(41).await.unwrap();
    store.set_detect_cursor(42).await.unwrap();
    assert_eq!(store.detect_cursor().await.unwrap(), Some(42));
}

#[tokio::test]
async fn suspension_reads_one_agent() {
    let db = create_db().await;
    let store = &db.store;
    assert_eq!(store.suspension("bot").await.unwrap(), None);
    store
        .set_suspended("bot", true, Some("canary token used"))
        .await
        .unwrap();
    let suspension = store.suspension("bot").await.unwrap().expect("suspended");
    assert_eq!(suspension.reason.as_deref(), Some("canary token used"));
    store.set_suspended("bot", false, None).await.unwrap();
    assert_eq!(store.suspension("bot").await.unwrap(), None);
}
