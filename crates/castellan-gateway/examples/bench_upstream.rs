//! Loopback upstream for `bench/run`. It returns the same 1 KiB body for
//! every request, so the proxies in front of it are what the benchmark measures.
//!
//! Usage: `bench_upstream [ADDR]`, where ADDR defaults to `127.0.0.1:18080`.
//! Only loopback addresses are accepted. The server runs on one thread, so
//! `taskset` can pin it to one core.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const DEFAULT_ADDR: &str = "127.0.0.1:18080";
const BODY_BYTES: usize = 1024;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let text = arg.as_deref().unwrap_or(DEFAULT_ADDR);
    let addr: SocketAddr = match text.parse() {
        Ok(addr) => addr,
        Err(error) => {
            eprintln!("bench_upstream: invalid address {text:?}: {error}; pass IP:PORT");
            return ExitCode::from(2);
        }
    };
    if !addr.ip().is_loopback() {
        eprintln!("bench_upstream: address {addr} is not loopback; pass 127.0.0.1:PORT");
        return ExitCode::from(2);
    }

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench_upstream: failed to start the tokio runtime: {error}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench_upstream: failed to serve on {addr}: {error}");
            ExitCode::from(2)
        }
    }
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    // A JSON string, so the body looks like an API response to the proxies.
    let mut body = vec![b'a'; BODY_BYTES];
    body[0] = b'"';
    body[BODY_BYTES - 2] = b'"';
    body[BODY_BYTES - 1] = b'\n';
    let body = Bytes::from(body);
    println!("bench_upstream: listening on {addr}, {BODY_BYTES}-byte body");

    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is transient under load.
                eprintln!("bench_upstream: accept failed: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request: Request<Incoming>| {
                let response = Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(body.clone()))
                    .expect("static response parts are valid");
                async move { Ok::<_, Infallible>(response) }
            });
            // Clients closing the connection mid-request is normal at the
            // end of a wrk run, so connection errors are not reported.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
