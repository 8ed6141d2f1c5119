//! An HTTP/1.1 proxy between ocidd and the real registry that can rewrite answers and inject
//! faults: cut or stall a body after some bytes, ignore Range, or answer by itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A request as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// How many requests came before this one.
    pub index: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_blob(&self) -> bool {
        self.path.contains("/blobs/sha256:")
    }
}

/// What to do with a request.
#[derive(Debug, Clone)]
pub enum Action {
    Forward(Forward),
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Close the connection without an answer, as a registry that died does.
    Close,
    /// Say nothing for this long (the connection open), then close it.
    Hang(Duration),
}

impl Action {
    pub fn forward() -> Action {
        Action::Forward(Forward::default())
    }
}

/// How to pass a request on to the registry and its answer back.
#[derive(Debug, Clone, Default)]
pub struct Forward {
    /// Drop the Range header, so the registry answers 200 with the whole blob.
    pub strip_range: bool,
    /// Close the connection after this many body bytes.
    pub cut_after: Option<u64>,
    /// After this many body bytes, send nothing for this long (socket open), then close.
    pub stall_after: Option<(u64, Duration)>,
    /// Replace the answer's body.
    pub replace_body: Option<Vec<u8>>,
    /// Send the body at most this many bytes per second.
    pub throttle: Option<u64>,
    /// Move the start of a `Range: bytes=N-` request by this many bytes (negative: earlier).
    pub shift_range: i64,
}

type Rule = dyn Fn(&Request) -> Action + Send + Sync;

/// Counters of what went through.
#[derive(Default)]
pub struct Stats {
    /// Body bytes of blob answers relayed to the client.
    pub blob_bytes: AtomicU64,
    pub requests: AtomicUsize,
    /// One line per request: `METHOD PATH [range] -> STATUS`.
    pub log: Mutex<Vec<String>>,
}

pub struct Proxy {
    pub port: u16,
    pub stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(
        upstream: u16,
        rule: impl Fn(&Request) -> Action + Send + Sync + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding proxy");
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let rule: Arc<Rule> = Arc::new(rule);
        let (stats2, stop2) = (Arc::clone(&stats), Arc::clone(&stop));
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (rule, stats) = (Arc::clone(&rule), Arc::clone(&stats2));
                thread::spawn(move || {
                    let _ = serve(client, upstream, &*rule, &stats);
                });
            }
        });
        Proxy { port, stats, stop }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn blob_bytes(&self) -> u64 {
        self.stats.blob_bytes.load(Ordering::Relaxed)
    }

    pub fn log(&self) -> Vec<String> {
        self.stats.log.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_head(reader: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn parse_headers(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn serve(client: TcpStream, upstream: u16, rule: &Rule, stats: &Stats) -> std::io::Result<()> {
    let mut client_reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    // One request per connection: every answer says Connection: close.
    let head = read_head(&mut client_reader)?;
    let Some(request_line) = head.first() else {
        return Ok(());
    };
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let headers = parse_headers(&head[1..]);
    let index = stats.requests.fetch_add(1, Ordering::Relaxed);
    let request = Request {
        method,
        path,
        headers,
        index,
    };
    let mut body = Vec::new();
    if let Some(length) = request
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        (&mut client_reader).take(length).read_to_end(&mut body)?;
    }
    let log_line = |status: &str| {
        let range = request
            .header("range")
            .map(|r| format!(" [{r}]"))
            .unwrap_or_default();
        stats.log.lock().unwrap().push(format!(
            "{} {}{range} -> {status}",
            request.method, request.path
        ));
    };

    let forward = match rule(&request) {
        Action::Respond {
            status,
            headers,
            body,
        } => {
            log_line(&status.to_string());
            let mut head = format!("HTTP/1.1 {status} Proxy\r\n");
            for (k, v) in &headers {
                head += &format!("{k}: {v}\r\n");
            }
            head += &format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            client.write_all(head.as_bytes())?;
            client.write_all(&body)?;
            return client.shutdown(Shutdown::Both);
        }
        Action::Close => {
            log_line("closed");
            return client.shutdown(Shutdown::Both);
        }
        Action::Hang(pause) => {
            log_line("hung");
            thread::sleep(pause);
            return client.shutdown(Shutdown::Both);
        }
        Action::Forward(forward) => forward,
    };

    let mut upstream_stream = match TcpStream::connect(("127.0.0.1", upstream)) {
        Ok(stream) => stream,
        Err(_) => {
            // What a load balancer says when the registry behind it is down.
            log_line("502");
            client.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return client.shutdown(Shutdown::Both);
        }
    };
    let mut out = format!("{request_line}\r\n");
    for (k, v) in &request.headers {
        let is_range = k.eq_ignore_ascii_case("range");
        let skip = k.eq_ignore_ascii_case("connection") || (forward.strip_range && is_range);
        if skip {
            continue;
        }
        if is_range && forward.shift_range != 0 {
            let (start, end) = v
                .trim_start_matches("bytes=")
                .split_once('-')
                .expect("a byte range");
            let start: i64 = start.parse().expect("a range start");
            out += &format!("{k}: bytes={}-{end}\r\n", start + forward.shift_range);
        } else {
            out += &format!("{k}: {v}\r\n");
        }
    }
    out += "Connection: close\r\n\r\n";
    upstream_stream.write_all(out.as_bytes())?;
    upstream_stream.write_all(&body)?;

    let mut upstream_reader = BufReader::new(upstream_stream);
    let head = read_head(&mut upstream_reader)?;
    let status = head
        .first()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("?")
        .to_string();
    log_line(&status);
    let headers = parse_headers(&head[1..]);
    let content_length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<u64>().ok());
    let mut response_body = Vec::new();
    let replaced = forward.replace_body.is_some();
    if let Some(replacement) = &forward.replace_body {
        response_body = replacement.clone();
    }
    let mut out = format!("{}\r\n", head[0]);
    for (k, v) in &headers {
        let skip = k.eq_ignore_ascii_case("connection")
            || (replaced && k.eq_ignore_ascii_case("content-length"))
            || (replaced && k.eq_ignore_ascii_case("docker-content-digest"));
        if !skip {
            out += &format!("{k}: {v}\r\n");
        }
    }
    if replaced {
        out += &format!("Content-Length: {}\r\n", response_body.len());
    }
    out += "Connection: close\r\n\r\n";
    client.write_all(out.as_bytes())?;
    if replaced {
        client.write_all(&response_body)?;
        return client.shutdown(Shutdown::Both);
    }

    let is_blob = request.is_blob() && request.method == "GET";
    let mut sent = 0u64;
    let mut buffer = vec![0u8; 64 << 10];
    let limit = content_length.unwrap_or(u64::MAX);
    let started = std::time::Instant::now();
    while sent < limit {
        if let Some(rate) = forward.throttle {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                thread::sleep(wait);
            }
        }
        let chunk = if forward.throttle.is_some() {
            16 << 10
        } else {
            buffer.len()
        };
        let want = chunk.min((limit - sent) as usize);
        let mut want = want as u64;
        if let Some(cut) = forward.cut_after {
            if sent >= cut {
                break;
            }
            want = want.min(cut - sent);
        }
        if let Some((at, _)) = forward.stall_after
            && sent < at
        {
            want = want.min(at - sent);
        }
        if let Some((at, pause)) = forward.stall_after
            && sent >= at
        {
            thread::sleep(pause);
            break;
        }
        let n = upstream_reader.read(&mut buffer[..want as usize])?;
        if n == 0 {
            break;
        }
        client.write_all(&buffer[..n])?;
        sent += n as u64;
        if is_blob {
            stats.blob_bytes.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    client.flush()?;
    client.shutdown(Shutdown::Both)
}
