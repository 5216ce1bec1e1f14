//! A small HTTP load generator for the benchmarks (standard library only).
//!
//! It replays a file of complete, pre-built HTTP requests (each one distinct: a
//! Twilio webhook with its own MessageSid and signature), one request per TCP
//! connection, like Twilio does.
//!
//! * `--rate 0` (peak): `--connections` threads send back to back (closed loop).
//! * `--rate N`: open loop. Request i is due at start + i/N; latency is measured
//!   from when it was due, not from when a thread got to it, so a server that
//!   falls behind shows it (no coordinated omission, as in wrk2).
//!
//! Request file: for each request, its length as 4 bytes little-endian, then the bytes.
//! Output: one JSON object on stdout.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

struct Args {
    target: SocketAddr,
    requests: String,
    rate: f64,
    connections: usize,
    duration: f64,
    timeout: f64,
}

fn parse_args() -> Args {
    let mut args = Args {
        target: "127.0.0.1:8000".parse().unwrap(),
        requests: String::new(),
        rate: 0.0,
        connections: 32,
        duration: 10.0,
        timeout: 10.0,
    };
    let raw: Vec<String> = env::args().skip(1).collect();
    let mut i = 0;
    while i < raw.len() {
        let value = raw.get(i + 1).cloned().unwrap_or_default();
        match raw[i].as_str() {
            "--target" => args.target = value.parse().expect("--target host:port"),
            "--requests" => args.requests = value,
            "--rate" => args.rate = value.parse().expect("--rate number"),
            "--connections" => args.connections = value.parse().expect("--connections number"),
            "--duration" => args.duration = value.parse().expect("--duration seconds"),
            "--timeout" => args.timeout = value.parse().expect("--timeout seconds"),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    assert!(!args.requests.is_empty(), "--requests FILE is required");
    args
}

fn load_requests(path: &str) -> Vec<Vec<u8>> {
    let data = fs::read(path).expect("read the requests file");
    let mut requests = Vec::new();
    let mut at = 0;
    while at + 4 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        at += 4;
        requests.push(data[at..at + len].to_vec());
        at += len;
    }
    requests
}

/// Send one request on a fresh connection; the status code, or 0 on error.
fn send(target: &SocketAddr, request: &[u8], timeout: Duration) -> u16 {
    let Ok(mut stream) = TcpStream::connect_timeout(target, timeout) else { return 0 };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let _ = stream.set_nodelay(true);
    if stream.write_all(request).is_err() {
        return 0;
    }
    let mut response = Vec::with_capacity(512);
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                response.extend_from_slice(&buffer[..n]);
                if complete(&response) {
                    break;
                }
            }
            Err(_) => return 0,
        }
    }
    let head = String::from_utf8_lossy(&response[..response.len().min(32)]).to_string();
    head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Has the whole response arrived (headers, and Content-Length bytes of body)?
fn complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
    match length {
        Some(length) => response.len() >= end + 4 + length,
        None => false, // read to the end of the stream
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() {
    let args = parse_args();
    let requests = Arc::new(load_requests(&args.requests));
    let timeout = Duration::from_secs_f64(args.timeout);
    let next = Arc::new(AtomicUsize::new(0));
    let results: Arc<Mutex<Vec<(f64, u16)>>> = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs_f64(args.duration);

    let mut threads = Vec::new();
    for _ in 0..args.connections {
        let (requests, next, results) = (requests.clone(), next.clone(), results.clone());
        let (target, rate) = (args.target, args.rate);
        threads.push(thread::spawn(move || {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests.len() {
                    break;
                }
                let due = if rate > 0.0 {
                    start + Duration::from_secs_f64(i as f64 / rate)
                } else {
                    Instant::now().max(start)
                };
                if due >= end {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    thread::sleep(due - now);
                }
                let status = send(&target, &requests[i], timeout);
                let latency = Instant::now().duration_since(due).as_secs_f64() * 1000.0;
                mine.push((latency, status));
            }
            results.lock().unwrap().extend(mine);
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = Instant::now().duration_since(start).as_secs_f64().min(args.duration.max(0.001));
    let results = results.lock().unwrap();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut latencies: Vec<f64> = Vec::with_capacity(results.len());
    for (latency, status) in results.iter() {
        *statuses.entry(*status).or_insert(0) += 1;
        latencies.push(*latency);
    }
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let ok = statuses.iter().filter(|(s, _)| (200..300).contains(*s)).map(|(_, n)| n).sum::<usize>();
    let mean = if latencies.is_empty() { 0.0 } else { latencies.iter().sum::<f64>() / latencies.len() as f64 };
    let status_json: Vec<String> = statuses.iter().map(|(s, n)| format!("\"{s}\": {n}")).collect();
    println!(
        "{{\"mode\": \"{}\", \"target_rate\": {}, \"connections\": {}, \"duration_s\": {:.3}, \"sent\": {}, \"ok\": {}, \
         \"non_2xx\": {}, \"statuses\": {{{}}}, \"requests_per_s\": {:.1}, \"latency_ms\": {{\"p50\": {:.2}, \"p90\": {:.2}, \
         \"p99\": {:.2}, \"p999\": {:.2}, \"max\": {:.2}, \"mean\": {:.2}}}, \"first_index\": 0, \"used_requests\": {}}}",
        if args.rate > 0.0 { "open-loop" } else { "closed-loop" },
        args.rate,
        args.connections,
        elapsed,
        results.len(),
        ok,
        results.len() - ok,
        status_json.join(", "),
        ok as f64 / elapsed,
        percentile(&latencies, 50.0),
        percentile(&latencies, 90.0),
        percentile(&latencies, 99.0),
        percentile(&latencies, 99.9),
        latencies.last().copied().unwrap_or(0.0),
        mean,
        next.load(Ordering::Relaxed).min(requests.len()),
    );
}
