//! Audit record batches and tail queries.

mod common;

use castellan_store::{AuditDecision, AuditQuery, AuditRecord, Store};
use common::{audit_record, create_db};

fn seqs(records: &[AuditRecord]) -> Vec<i64> {
    records
        .iter()
        .map(|r| r.seq.expect("stored record has seq"))
        .collect()
}

/// Writes 10 records: odd requests by alpha, even by beta.
async fn write_mixed(store: &Store) {
    let batch: Vec<_> = (1..=10)
        .map(|i| audit_record(Some(if i % 2 == 1 { "alpha" } else { "beta" }), i))
        .collect();
    store.insert_audit_batch(&batch).await.unwrap();
}

#[tokio::test]
async fn audit_batch_round_trips_fields() {
    let db = create_db().await;
    let mut denied = audit_record(None, 7);
    denied.decision = AuditDecision::Deny;
    denied.rule = None;
    denied.reason = Some("unknown agent token".to_owned());
    denied.status = 401;
    denied.bytes_in = u64::from(u32::MAX) + 1;
    denied.user_agent = None;
    let mut allowed = audit_record(Some("alpha"), 8);
    allowed.user_agent = Some("Mozilla/5.0 \\u{1b}[2J".to_owned());
    allowed.findings = vec!["aws-access-key-id".to_owned(), "github-pat".to_owned()];

    db.store
        .insert_audit_batch(&[denied.clone(), allowed.clone()])
        .await
        .unwrap();

    let stored = db.store.query_audit(&AuditQuery::tail(10)).await.unwrap();
    assert_eq!(seqs(&stored), [1, 2]);
    assert_eq!(
        stored[0],
        AuditRecord {
            seq: Some(1),
            ..denied
        }
    );
    assert_eq!(
        stored[1],
        AuditRecord {
            seq: Some(2),
            ..allowed
        }
    );
}

#[tokio::test]
async fn tail_returns_newest_in_order() {
    let db = create_db().await;
    write_mixed(&db.store).await;

    let tail = db.store.query_audit(&AuditQuery::tail(3)).await.unwrap();

    assert_eq!(seqs(&tail), [8, 9, 10]);
}

#[tokio::test]
async fn tail_filters_by_agent() {
    let db = create_db().await;
    write_mixed(&db.store).await;

    let tail = db
        .store
        .query_audit(&AuditQuery::tail(2).for_agent("alpha"))
        .await
        .unwrap();

    assert_eq!(seqs(&tail), [7, 9]);
    assert!(tail.iter().all(|r| r.agent.as_deref() == Some("alpha")));
}

#[tokio::test]
async fn after_seq_follows_new_records() {
    let db = create_db().await;
    write_mixed(&db.store).await;

    let page = db
        .store
        .query_audit(&AuditQuery::after(4, 3))
        .await
        .unwrap();
    let beta = db
        .store
        .query_audit(&AuditQuery::after(4, 100).for_agent("beta"))
        .await
        .unwrap();
    let none_left = db
        .store
        .query_audit(&AuditQuery::after(10, 100))
        .await
        .unwrap();

    assert_eq!(seqs(&page), [5, 6, 7]);
    assert_eq!(seqs(&beta), [6, 8, 10]);
    assert!(none_left.is_empty());
}

#[tokio::test]
async fn follower_sees_other_handle_writes() {
    let db = create_db().await;
    let follower = Store::open(&db.path).await.unwrap();
    write_mixed(&db.store).await;
    let start = follower.query_audit(&AuditQuery::tail(2)).await.unwrap();
    let last = *seqs(&start).last().unwrap();

    db.store
        .insert_audit_batch(&[audit_record(Some("alpha"), 11)])
        .await
        .unwrap();
    let next = follower
        .query_audit(&AuditQuery::after(last, 100))
        .await
        .unwrap();

    assert_eq!(seqs(&next), [11]);
    assert_eq!(next[0].request_id, "req-11");
}

#[tokio::test]
async fn empty_batch_and_zero_limit_are_noops() {
    let db = create_db().await;

    db.store.insert_audit_batch(&[]).await.unwrap();
    write_mixed(&db.store).await;
    let zero = db.store.query_audit(&AuditQuery::tail(0)).await.unwrap();

    assert!(zero.is_empty());
    assert_eq!(db.store.audit_count().await.unwrap(), 10);
}

#[tokio::test]
async fn audit_json_shape_is_stable() {
    let mut record = audit_record(Some("alpha"), 1);
    record.seq = Some(42);
    record.reason = None;

    let json = serde_json::to_value(&record).unwrap();

    assert_eq!(json["seq"], 42);
    assert_eq!(json["decision"], "allow");
    assert_eq!(json["agent"], "alpha");
    assert!(
        json["reason"].is_null(),
        "absent values are null, not missing"
    );
    assert_eq!(json["user_agent"], "python-httpx/0.27.0");
    // 17 fields, because `findings` is omitted when it is empty.
    assert_eq!(json.as_object().unwrap().len(), 17);
    let back: AuditRecord = serde_json::from_value(json).unwrap();
    assert_eq!(back, record);
}

#[test]
fn decision_parses_only_known_names() {
    for decision in [
        AuditDecision::Allow,
        AuditDecision::Deny,
        AuditDecision::Error,
    ] {
        assert_eq!(decision.as_str().parse::<AuditDecision>(), Ok(decision));
    }
    assert!("ALLOW".parse::<AuditDecision>().is_err());
    assert!("".parse::<AuditDecision>().is_err());
}
