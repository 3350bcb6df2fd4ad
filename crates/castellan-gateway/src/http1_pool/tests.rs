use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::dial::is_internal_address;

/// What the test upstream does after each response.
#[derive(Clone, Copy)]
enum After {
    /// Keeps the connection open for the next request.
    KeepOpen,
    /// Closes the connection without announcing it.
    CloseSilently,
}

/// A loopback HTTP/1.1 upstream that counts its connections and keeps the
/// head of every request it reads.
struct Upstream {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

async fn upstream(after: After, response: &'static str) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = listener.local_addr().expect("bound address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (counter, seen) = (Arc::clone(&accepted), Arc::clone(&heads));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                loop {
                    let mut chunk = [0u8; 4096];
                    let Ok(read) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if read == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head: Vec<u8> = buffer.drain(..end + 4).collect();
                    seen.lock()
                        .expect("heads lock")
                        .push(String::from_utf8_lossy(&head).into_owned());
                    if stream.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    if let After::CloseSilently = after {
                        return;
                    }
                }
            });
        }
    });
    Upstream {
        address,
        accepted,
        heads,
    }
}

const HELLO: &str = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

fn pool_for(address: SocketAddr, allow_private: bool) -> Arc<Http1Pool> {
    let mut connector = CheckedConnector::new("test", allow_private);
    connector.http_mut().enforce_http(false);
    Http1Pool::new(connector, &address.ip().to_string(), address.port()).expect("valid origin")
}

fn get(address: SocketAddr, path: &str) -> Request<RequestBody> {
    let mut request = Request::new(RequestBody::empty());
    *request.uri_mut() = format!("http://{address}{path}")
        .parse()
        .expect("valid URI");
    request
}

async fn read_text(response: Response<Http1Body>) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a complete body")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).expect("UTF-8 body")
}

#[tokio::test]
async fn sequential_requests_share_connection() {
    let upstream = upstream(After::KeepOpen, HELLO).await;
    let pool = pool_for(upstream.address, true);
    for _ in 0..3 {
        let response = pool
            .request(get(upstream.address, "/a"))
            .await
            .expect("response");
        assert_eq!(read_text(response).await, "hello");
        assert_eq!(pool.idle_count(), 1);
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn request_sent_in_origin_form() {
    let upstream = upstream(After::KeepOpen, HELLO).await;
    let pool = pool_for(upstream.address, true);
    let response = pool
        .request(get(upstream.address, "/v1/items?limit=2"))
        .await
        .expect("response");
    read_text(response).await;
    let heads = upstream.heads.lock().expect("heads lock").clone();
    let head = heads
        .first()
        .expect("one request arrived")
        .to_ascii_lowercase();
    assert!(
        head.starts_with("get /v1/items?limit=2 http/1.1\r\n"),
        "{head}"
    );
    let host = format!("\r\nhost: {}\r\n", upstream.address);
    assert!(head.contains(&host), "{head}");
}

#[tokio::test]
async fn silently_closed_connection_replaced() {
    let upstream = upstream(After::CloseSilently, HELLO).await;
    let pool = pool_for(upstream.address, true);
    for _ in 0..3 {
        let response = pool
            .request(get(upstream.address, "/"))
            .await
            .expect("response");
        assert_eq!(read_text(response).await, "hello");
        // Let the close reach this side before the next checkout.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn announced_close_not_pooled() {
    let closing = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
    let upstream = upstream(After::CloseSilently, closing).await;
    let pool = pool_for(upstream.address, true);
    let response = pool
        .request(get(upstream.address, "/"))
        .await
        .expect("response");
    assert_eq!(read_text(response).await, "ok");
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test]
async fn chunked_body_returns_connection() {
    let chunked =
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    let upstream = upstream(After::KeepOpen, chunked).await;
    let pool = pool_for(upstream.address, true);
    for _ in 0..2 {
        let response = pool
            .request(get(upstream.address, "/"))
            .await
            .expect("response");
        assert_eq!(read_text(response).await, "abcde");
        assert_eq!(pool.idle_count(), 1);
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unread_body_closes_connection() {
    let long = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part of it";
    let upstream = upstream(After::KeepOpen, long).await;
    let pool = pool_for(upstream.address, true);
    let response = pool
        .request(get(upstream.address, "/"))
        .await
        .expect("response");
    drop(response);
    assert_eq!(pool.idle_count(), 0);
    let response = pool
        .request(get(upstream.address, "/"))
        .await
        .expect("response");
    drop(response);
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn empty_body_returns_connection_unread() {
    let empty = "HTTP/1.1 204 No Content\r\n\r\n";
    let upstream = upstream(After::KeepOpen, empty).await;
    let pool = pool_for(upstream.address, true);
    for _ in 0..2 {
        let response = pool
            .request(get(upstream.address, "/"))
            .await
            .expect("response");
        assert!(response.body().is_end_stream());
        drop(response);
        assert_eq!(pool.idle_count(), 1);
    }
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn loopback_refused_without_allow_private() {
    let upstream = upstream(After::KeepOpen, HELLO).await;
    let pool = pool_for(upstream.address, false);
    let error = pool
        .request(get(upstream.address, "/"))
        .await
        .expect_err("loopback is internal");
    assert!(matches!(error, Http1Error::Connect(_)), "{error:?}");
    assert!(is_internal_address(&error), "{error:?}");
    assert_eq!(upstream.accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn unused_connections_closed_after_timeout() {
    let upstream = upstream(After::KeepOpen, HELLO).await;
    let pool = pool_for(upstream.address, true);
    let response = pool
        .request(get(upstream.address, "/"))
        .await
        .expect("response");
    read_text(response).await;
    assert_eq!(pool.idle_count(), 1);
    tokio::time::sleep(IDLE_TIMEOUT / 2).await;
    assert_eq!(pool.idle_count(), 1);
    tokio::time::sleep(IDLE_TIMEOUT / 2 + PRUNE_INTERVAL * 2).await;
    assert_eq!(pool.idle_count(), 0);
    assert!(!pool.is_pruning());

    // A connection returned later starts the pruning again.
    let response = pool
        .request(get(upstream.address, "/"))
        .await
        .expect("response");
    read_text(response).await;
    assert!(pool.is_pruning());
    tokio::time::sleep(IDLE_TIMEOUT + PRUNE_INTERVAL * 2).await;
    assert_eq!(pool.idle_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn upstream_closed_connection_pruned() {
    // An upstream on a thread of its own, which closes the connection
    // 100 ms after its response, once the pool has taken it back.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("bound address");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buffer = [0u8; 4096];
        let _ = stream.read(&mut buffer);
        let _ = stream.write_all(HELLO.as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    });
    let pool = pool_for(address, true);
    let response = pool.request(get(address, "/")).await.expect("response");
    assert_eq!(read_text(response).await, "hello");
    assert_eq!(pool.idle_count(), 1);

    // Real time for the close to arrive, then paused time for the prune.
    std::thread::sleep(Duration::from_millis(300));
    tokio::time::sleep(PRUNE_INTERVAL * 2).await;
    assert_eq!(pool.idle_count(), 0);
    assert!(!pool.is_pruning());
}

#[tokio::test]
async fn quiet_pool_starts_no_task() {
    let upstream = upstream(After::KeepOpen, HELLO).await;
    let pool = pool_for(upstream.address, true);
    assert!(!pool.is_pruning());
    let response = pool
        .request(get(upstream.address, "/"))
        .await
        .expect("response");
    assert!(!pool.is_pruning());
    read_text(response).await;
    assert!(pool.is_pruning());
}
