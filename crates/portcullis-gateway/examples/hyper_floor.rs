//! The floor of a hyper-based reverse proxy, for the gateway benchmark: the
//! same HTTP engine and threading as the gateway (hyper's HTTP/1.1 server
//! and client, one current-thread event loop per worker on its own
//! `SO_REUSEPORT` socket, one upstream connection per downstream
//! connection) with nothing else: no route, no authentication, no header
//! rewriting, no metrics, no timeouts. What the gateway costs above this is
//! its pipeline; what this costs above nginx is the engine.
//!
//! The gateway no longer runs on hyper for HTTP/1.1: since 4b60578 it
//! drives its plain-HTTP upstream connections itself (`h1.rs`), and since
//! 9e1e442 it serves its HTTP/1.1 clients itself too (`downstream.rs`). So
//! this is now a baseline, hyper's cost for the same job, not a floor under
//! the gateway's.
//!
//! ```sh
//! cargo run --release -p portcullis-gateway --example hyper_floor -- LISTEN UPSTREAM [WORKERS]
//! ```
//!
//! Not a product: it trusts the upstream and forwards whatever it is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = args
        .get(1)
        .expect("usage: hyper_floor LISTEN UPSTREAM [WORKERS]")
        .parse()
        .unwrap();
    let upstream: SocketAddr = args.get(2).expect("UPSTREAM").parse().unwrap();
    let workers: usize = args.get(3).map_or(2, |w| w.parse().unwrap());
    // The gateway's own sockets: one per worker, SO_REUSEPORT.
    let listeners = portcullis_gateway::server::bind_workers(listen, workers).unwrap();
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|std_listener| {
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(serve(std_listener, upstream));
            })
        })
        .collect();
    eprintln!("hyper_floor listening on {listen}, upstream {upstream}, {workers} workers");
    for t in threads {
        t.join().unwrap();
    }
}

async fn serve(listener: std::net::TcpListener, upstream: SocketAddr) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let held: Arc<Mutex<Option<SendRequest<Body>>>> = Arc::default();
            let svc = service_fn(move |req: hyper::Request<Incoming>| {
                let held = held.clone();
                async move {
                    let taken = held.lock().unwrap().take();
                    let mut sender = match taken {
                        Some(s) if !s.is_closed() => s,
                        _ => {
                            let s = tokio::net::TcpStream::connect(upstream).await.unwrap();
                            let _ = s.set_nodelay(true);
                            let (sender, conn) =
                                hyper::client::conn::http1::handshake(TokioIo::new(s))
                                    .await
                                    .unwrap();
                            tokio::spawn(conn);
                            sender
                        }
                    };
                    let (parts, body) = req.into_parts();
                    let req = hyper::Request::from_parts(parts, body.boxed());
                    let resp = sender.send_request(req).await;
                    *held.lock().unwrap() = Some(sender);
                    resp
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
