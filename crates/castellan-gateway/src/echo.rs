//! A small echo upstream for `castellan serve --dev`: it responds to every
//! request with a JSON description of what arrived, so a first run shows
//! the injected credential (redacted on its way back) and the missing agent
//! token without any outside service.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type EchoBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Binds the echo upstream on an ephemeral loopback port and serves it in
/// the background; returns its address.
pub async fn spawn_echo_upstream() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service =
                    service_fn(|request| async move { Ok::<_, Infallible>(echo(request).await) });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

async fn echo(request: Request<Incoming>) -> Response<EchoBody> {
    if request.uri().path().ends_with("/events") {
        return events();
    }
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                serde_json::Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            )
        })
        .collect();
    let description = serde_json::json!({
        "upstream": "castellan built-in echo upstream (development only)",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut text = serde_json::to_vec_pretty(&description).unwrap_or_default();
    text.push(b'\n');
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(text)).boxed())
        .unwrap_or_default()
}

/// Three server-sent events, half a second apart.
fn events() -> Response<EchoBody> {
    let stream = futures_util::stream::unfold(0u32, |n| async move {
        if n == 3 {
            return None;
        }
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let event = format!("data: {{\"event\": {n}}}\n\n");
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(event))), n + 1))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_default()
}
