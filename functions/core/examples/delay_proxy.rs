//! A TCP proxy that adds a fixed one-way delay to what the client sends, for benches/latency.py.
//!
//! Every chunk read from the client reaches the upstream `--delay-ms` after it arrived, in order;
//! replies come back at once. Each HTTP request on a keep-alive connection therefore waits one
//! delay more than it would, like a longer round trip, without limiting throughput (chunks in the
//! delay line do not wait on each other). Prints the port it listens on, then serves until killed.
//! `--log FILE` appends one line per request start and per response start (Unix time in seconds,
//! then the request line or the status line): the timelines in benches/RESULTS.md.
//!
//! It replaced a Python asyncio proxy that took 0.38 CPU s at 0 ms and 0.48 at 100 ms for the
//! 576-file run, about a third of the benchmark's two cores, which a real network does not take
//! from the client. One thread: it sleeps almost all the time.
//!
//! cargo run --release --example delay_proxy -- --upstream 127.0.0.1:9000 --delay-ms 30 [--log FILE]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

type Log = Option<Arc<Mutex<std::fs::File>>>;

struct Args {
    upstream: String,
    delay: Duration,
    log: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let (mut upstream, mut delay, mut log) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--upstream" => upstream = Some(value),
            "--delay-ms" => {
                let ms: f64 = value.parse().map_err(|_| format!("--delay-ms: `{value}` is not a number"))?;
                delay = Some(Duration::try_from_secs_f64(ms / 1000.0).map_err(|e| format!("--delay-ms: {e}"))?);
            }
            "--log" => log = Some(value),
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    Ok(Args {
        upstream: upstream.ok_or("--upstream HOST:PORT is required")?,
        delay: delay.ok_or("--delay-ms is required")?,
        log,
    })
}

/// Logs the first line of `data` when it starts a request or a response.
fn log_start(log: &Log, data: &[u8]) {
    let Some(log) = log else { return };
    const STARTS: [&[u8]; 6] = [b"GET ", b"PUT ", b"HEAD ", b"POST ", b"DELETE ", b"HTTP/1.1 "];
    if !STARTS.iter().any(|s| data.starts_with(s)) {
        return;
    }
    let first = data.split(|b| *b == b'\r').next().unwrap_or(data);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    if let Ok(mut f) = log.lock() {
        let _ = writeln!(f, "{now:.4} {}", String::from_utf8_lossy(first));
    }
}

async fn serve(client: TcpStream, upstream: Arc<str>, delay: Duration, log: Log) {
    let Ok(up) = TcpStream::connect(&*upstream).await else { return };
    let _ = (client.set_nodelay(true), up.set_nodelay(true));
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_up, mut to_up) = up.into_split();
    let (line, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let request_log = log.clone();
    let feed = async move {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
            log_start(&request_log, &buf[..n]);
            if line.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    };
    let forward = async move {
        while let Some((at, data)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to_up.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = to_up.shutdown().await;
    };
    let back = async move {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = from_up.read(&mut buf).await {
            log_start(&log, &buf[..n]);
            if to_client.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    };
    tokio::join!(feed, forward, back);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("delay_proxy: {e}\nusage: delay_proxy --upstream HOST:PORT --delay-ms MS [--log FILE]");
        std::process::exit(2);
    });
    let log: Log = match &args.log {
        Some(path) => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Some(Arc::new(Mutex::new(f))),
            Err(e) => {
                eprintln!("delay_proxy: --log {path}: {e}");
                std::process::exit(2);
            }
        },
        None => None,
    };
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("delay_proxy: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    println!("{port}");
    let _ = std::io::stdout().flush();
    let upstream: Arc<str> = args.upstream.into();
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(serve(client, upstream.clone(), args.delay, log.clone()));
            }
            Err(e) => eprintln!("delay_proxy: accept: {e}"),
        }
    }
}
