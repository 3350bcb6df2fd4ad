use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use castellan_model::Severity;

use super::*;

/// One request as the loopback receiver saw it.
#[derive(Debug, Clone)]
struct Received {
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// A loopback webhook receiver that responds with the scripted statuses in
/// turn (200 once the script runs out) and keeps every request.
struct Receiver {
    address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: &[u16], delay: Duration) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let address = listener.local_addr().expect("local address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                let script = Arc::clone(&script);
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let log = Arc::clone(&log);
                            let script = Arc::clone(&script);
                            async move {
                                let (parts, body) = request.into_parts();
                                let body = body.collect().await.map(|b| b.to_bytes().to_vec());
                                log.lock().unwrap().push(Received {
                                    headers: parts.headers,
                                    body: body.unwrap_or_default(),
                                });
                                tokio::time::sleep(delay).await;
                                let status = script.lock().unwrap().pop_front().unwrap_or(200);
                                http::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"ok")))
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { address, received }
    }

    fn target(&self, format: WebhookFormat, key: Option<&[u8]>) -> ResolvedWebhook {
        ResolvedWebhook {
            name: "ops".to_owned(),
            url: Zeroizing::new(format!("http://{}/hook", self.address)),
            format,
            signing_key: key.map(|key| Zeroizing::new(key.to_vec())),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn fast() -> DeliverySettings {
    DeliverySettings {
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        timeout: Duration::from_millis(500),
        attempts: 4,
        ..DeliverySettings::default()
    }
}

fn notification() -> Notification {
    Notification {
        severity: Severity::Critical,
        json: serde_json::json!({ "type": "alert", "alert": { "id": 7, "kind": "canary_token" } }),
        text: "[critical] canary_token: decoy (alert 7)".to_owned(),
    }
}

/// Waits until `count` deliveries finished, or fails after five seconds.
async fn finished(dispatcher: &Dispatcher, count: u64) {
    for _ in 0..500 {
        let counts = dispatcher.counts();
        let done = counts.delivered.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed);
        if done >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("deliveries did not finish within five seconds");
}

#[tokio::test]
async fn generic_body_is_posted_and_signed() {
    let receiver = Receiver::start(&[], Duration::ZERO).await;
    let dispatcher = Dispatcher::new(fast());
    dispatcher.send(
        &receiver.target(WebhookFormat::Json, Some(b"signing key")),
        notification(),
    );
    finished(&dispatcher, 1).await;

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON body");
    assert_eq!(body["alert"]["kind"], "canary_token");
    let timestamp = request.headers[TIMESTAMP_HEADER].to_str().unwrap();
    let expected = sign(b"signing key", timestamp, &request.body);
    assert_eq!(
        request.headers[SIGNATURE_HEADER].to_str().unwrap(),
        expected
    );
    assert_eq!(
        request.headers[http::header::CONTENT_TYPE],
        "application/json"
    );
}

#[tokio::test]
async fn slack_body_carries_the_text() {
    let receiver = Receiver::start(&[], Duration::ZERO).await;
    let dispatcher = Dispatcher::new(fast());
    dispatcher.send(&receiver.target(WebhookFormat::Slack, None), notification());
    finished(&dispatcher, 1).await;

    let received = receiver.received();
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).expect("JSON body");
    assert_eq!(
        body,
        serde_json::json!({ "text": "[critical] canary_token: decoy (alert 7)" })
    );
    assert!(!received[0].headers.contains_key(SIGNATURE_HEADER));
}

#[tokio::test]
async fn server_errors_are_retried_with_one_delivery_id() {
    let receiver = Receiver::start(&[500, 503, 429], Duration::ZERO).await;
    let dispatcher = Dispatcher::new(fast());
    dispatcher.send(&receiver.target(WebhookFormat::Json, None), notification());
    finished(&dispatcher, 1).await;

    assert_eq!(dispatcher.counts().delivered.load(Ordering::Relaxed), 1);
    let received = receiver.received();
    assert_eq!(received.len(), 4, "three failures, then success");
    let first = &received[0].headers[DELIVERY_HEADER];
    assert!(received.iter().all(|r| r.headers[DELIVERY_HEADER] == first));
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let receiver = Receiver::start(&[404], Duration::ZERO).await;
    let dispatcher = Dispatcher::new(fast());
    dispatcher.send(&receiver.target(WebhookFormat::Json, None), notification());
    finished(&dispatcher, 1).await;

    assert_eq!(dispatcher.counts().failed.load(Ordering::Relaxed), 1);
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn slow_receiver_times_out_and_gives_up() {
    let receiver = Receiver::start(&[], Duration::from_secs(3)).await;
    let settings = DeliverySettings {
        timeout: Duration::from_millis(100),
        attempts: 2,
        ..fast()
    };
    let dispatcher = Dispatcher::new(settings);
    dispatcher.send(&receiver.target(WebhookFormat::Json, None), notification());
    finished(&dispatcher, 1).await;

    assert_eq!(dispatcher.counts().failed.load(Ordering::Relaxed), 1);
    assert_eq!(receiver.received().len(), 2);
}

#[tokio::test]
async fn refused_connection_is_retried_then_counted() {
    // Bind and drop a listener so the port is very likely closed.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let target = ResolvedWebhook {
        name: "ops".to_owned(),
        url: Zeroizing::new(format!("http://{closed}/hook")),
        format: WebhookFormat::Json,
        signing_key: None,
    };
    let dispatcher = Dispatcher::new(fast());
    dispatcher.send(&target, notification());
    finished(&dispatcher, 1).await;
    assert_eq!(dispatcher.counts().failed.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn full_queue_drops_without_waiting() {
    let receiver = Receiver::start(&[], Duration::from_secs(2)).await;
    let settings = DeliverySettings {
        queue: 1,
        concurrency: 1,
        ..fast()
    };
    let dispatcher = Dispatcher::new(settings);
    let target = receiver.target(WebhookFormat::Json, None);
    for _ in 0..20 {
        dispatcher.send(&target, notification());
    }
    assert!(dispatcher.counts().dropped.load(Ordering::Relaxed) >= 17);
}

#[test]
fn debug_output_hides_url_and_key() {
    let target = ResolvedWebhook {
        name: "ops".to_owned(),
        url: Zeroizing::new("https://hooks.example/T000/B000/XXXXsecretpath".to_owned()),
        format: WebhookFormat::Slack,
        signing_key: Some(Zeroizing::new(b"key-material".to_vec())),
    };
    let shown = format!("{target:?}");
    assert!(!shown.contains("secretpath"), "{shown}");
    assert!(!shown.contains("key-material"), "{shown}");
}

fn queued(severity: Severity, order: u64) -> Delivery {
    Delivery {
        target: ResolvedWebhook {
            name: "ops".to_owned(),
            url: Zeroizing::new("http://127.0.0.1:9/hook".to_owned()),
            format: WebhookFormat::Json,
            signing_key: None,
        },
        notification: Notification {
            severity,
            ..notification()
        },
        order,
    }
}

#[test]
fn full_queue_drops_the_least_severe() {
    let mut pending = vec![queued(Severity::High, 0), queued(Severity::Low, 1)];
    let dropped = push_bounded(&mut pending, queued(Severity::Critical, 2), 2).expect("full");
    assert_eq!(dropped.notification.severity, Severity::Low);
    assert_eq!(pending.len(), 2);

    // Nothing queued is less severe than a new high one: the new one goes.
    let dropped = push_bounded(&mut pending, queued(Severity::High, 3), 2).expect("full");
    assert_eq!(dropped.order, 3);
}

#[test]
fn most_severe_then_oldest_goes_first() {
    let mut pending = vec![
        queued(Severity::Low, 0),
        queued(Severity::Critical, 1),
        queued(Severity::Critical, 2),
        queued(Severity::Medium, 3),
    ];
    let order: Vec<u64> = std::iter::from_fn(|| pop_most_severe(&mut pending))
        .map(|delivery| delivery.order)
        .collect();
    assert_eq!(order, [1, 2, 3, 0]);
}

#[tokio::test]
async fn hanging_webhook_does_not_delay_another() {
    let hanging = Receiver::start(&[], Duration::from_secs(30)).await;
    let healthy = Receiver::start(&[], Duration::ZERO).await;
    let settings = DeliverySettings {
        timeout: Duration::from_secs(20),
        concurrency: 1,
        ..fast()
    };
    let dispatcher = Dispatcher::new(settings);
    let mut stuck = hanging.target(WebhookFormat::Json, None);
    stuck.name = "stuck".to_owned();
    for _ in 0..50 {
        dispatcher.send(&stuck, notification());
    }
    dispatcher.send(&healthy.target(WebhookFormat::Slack, None), notification());
    finished(&dispatcher, 1).await;
    assert_eq!(healthy.received().len(), 1);
    assert_eq!(dispatcher.counts().delivered.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn shutdown_reports_unsent_notifications() {
    let hanging = Receiver::start(&[], Duration::from_secs(30)).await;
    let settings = DeliverySettings {
        timeout: Duration::from_secs(20),
        concurrency: 1,
        ..fast()
    };
    let dispatcher = Dispatcher::new(settings);
    let target = hanging.target(WebhookFormat::Json, None);
    for _ in 0..3 {
        dispatcher.send(&target, notification());
    }
    let unsent = dispatcher.shutdown(Duration::from_millis(300)).await;
    assert_eq!(unsent, 2, "one was in flight, two still queued");
    dispatcher.send(&target, notification());
    assert_eq!(dispatcher.counts().dropped.load(Ordering::Relaxed), 1);
}
