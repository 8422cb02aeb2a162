//! A TCP proxy that adds a fixed round-trip time, for the benchmark's
//! latency profile: real S3 and KMS answer in tens of milliseconds, a
//! server on 127.0.0.1 in well under one, and `tc netem` is not available
//! everywhere the benchmark runs.
//!
//!     delay_proxy --listen 127.0.0.1:0 --upstream 127.0.0.1:8333 \
//!                 --rtt-ms 20 --port-file PATH
//!
//! Every byte is held for half the round trip in each direction, so a
//! request/response exchange costs the round trip once, as over a real
//! link; bytes already in flight do not wait for each other, so the delay
//! does not cap throughput (the benchmark checks that against the raw
//! client with `--rtt-ms 0`). It only ever connects to `--upstream`.

use bytes::{Bytes, BytesMut};
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    /// Address to listen on (port 0: any free port, see --port-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The server every connection is relayed to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Round-trip time added to every connection, in milliseconds.
    #[arg(long, default_value_t = 20)]
    rtt_ms: u64,
    /// Written with the port listened on, once listening.
    #[arg(long)]
    port_file: Option<std::path::PathBuf>,
}

/// Bytes read at once; pieces in flight per direction (bounds memory at
/// `READ * IN_FLIGHT` per direction of a connection).
const READ: usize = 1 << 20;
const IN_FLIGHT: usize = 64;

// One thread: the proxy shares the machine with the servers and the
// clients it measures, and a thread per core would take their CPU.
#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    let port = listener.local_addr()?.port();
    if let Some(path) = &args.port_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{port}\n"))?;
        std::fs::rename(&tmp, path)?;
    }
    eprintln!(
        "delay_proxy: 127.0.0.1:{port} -> {}, {} ms round trip",
        args.upstream, args.rtt_ms
    );
    serve(
        listener,
        args.upstream,
        Duration::from_micros(args.rtt_ms * 500),
    )
    .await
}

/// Relays every connection `listener` accepts to `upstream`.
async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    one_way: Duration,
) -> std::io::Result<()> {
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = relay(client, upstream, one_way).await {
                eprintln!("delay_proxy: connection ended: {e}");
            }
        });
    }
}

/// Relays one connection both ways, each direction delayed by `one_way`.
async fn relay(client: TcpStream, upstream: SocketAddr, one_way: Duration) -> std::io::Result<()> {
    // The connection itself costs a round trip, as a TCP handshake does.
    tokio::time::sleep(one_way * 2).await;
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(direction(cr, sw, one_way));
    let down = tokio::spawn(direction(sr, cw, one_way));
    let (a, b) = tokio::join!(up, down);
    a.map_err(std::io::Error::other)??;
    b.map_err(std::io::Error::other)??;
    Ok(())
}

/// Copies `from` to `to`, each piece written `delay` after it was read; an
/// end of stream is passed on (after the same delay) as a write shutdown.
async fn direction(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) -> std::io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Bytes>)>(IN_FLIGHT);
    let reader = async move {
        // Pieces are split off one buffer, never copied.
        let mut buf = BytesMut::new();
        loop {
            if buf.capacity() < READ / 4 {
                buf.reserve(READ);
            }
            // A reset reads as the end: the peer is gone either way.
            let n = from.read_buf(&mut buf).await.unwrap_or_default();
            let piece = (n > 0).then(|| buf.split().freeze());
            if tx.send((Instant::now() + delay, piece)).await.is_err() || n == 0 {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((due, piece)) = rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            match piece {
                Some(p) => to.write_all(&p).await?,
                None => break,
            }
        }
        to.shutdown().await
    };
    let ((), written) = tokio::join!(reader, writer);
    // A peer that closed first is not an error of the proxy's.
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes each connection back, and a proxy in front
    /// of it adding `rtt_ms`; returns the proxy's address.
    async fn echo_behind_proxy(rtt_ms: u64) -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = echo.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = proxy.local_addr().unwrap();
        tokio::spawn(serve(proxy, upstream, Duration::from_micros(rtt_ms * 500)));
        at
    }

    #[tokio::test]
    async fn every_exchange_costs_the_round_trip_and_bytes_arrive_exact() {
        let at = echo_behind_proxy(60).await;
        let mut s = TcpStream::connect(at).await.unwrap();
        for round in 0..3u8 {
            let t = Instant::now();
            s.write_all(&[round; 100]).await.unwrap();
            let mut back = [0u8; 100];
            s.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [round; 100]);
            // Never less than the round trip (the first also waited for
            // the connection's own).
            assert!(
                t.elapsed() >= Duration::from_millis(60),
                "{:?}",
                t.elapsed()
            );
        }
        // Many pieces in flight at once, and the end of the stream.
        let data: Vec<u8> = (0..8 << 20)
            .map(|i: u32| (i * 7 + i / 4096) as u8)
            .collect();
        let (mut r, mut w) = s.into_split();
        let send = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&send).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == data, "{} bytes back of {}", got.len(), data.len());
    }

    #[tokio::test]
    async fn no_delay_relays_without_waiting() {
        let at = echo_behind_proxy(0).await;
        let mut s = TcpStream::connect(at).await.unwrap();
        s.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }
}
