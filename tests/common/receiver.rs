//! A status-report receiver: an HTTP/1.1 server on 127.0.0.1 that keeps every POSTed body
//! (with its Authorization header) and answers 200, or never answers when told to hang.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One POST as received.
#[derive(Debug, Clone)]
pub struct Post {
    pub authorization: Option<String>,
    pub event: serde_json::Value,
}

pub struct Receiver {
    pub port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// A receiver that answers every POST with 200.
    pub fn start() -> Receiver {
        Receiver::start_with(false)
    }

    /// A receiver that accepts connections and reads requests but never answers.
    pub fn start_hanging() -> Receiver {
        Receiver::start_with(true)
    }

    /// A receiver on `address` (`0.0.0.0:0` inside a [`super::lab::Lab`]).
    pub fn start_on(address: &str) -> Receiver {
        Receiver::bound(
            TcpListener::bind(address).expect("binding the receiver"),
            false,
        )
    }

    fn start_with(hang: bool) -> Receiver {
        Receiver::bound(
            TcpListener::bind("127.0.0.1:0").expect("binding the receiver"),
            hang,
        )
    }

    fn bound(listener: TcpListener, hang: bool) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (posts2, stop2) = (Arc::clone(&posts), Arc::clone(&stop));
        thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let (posts, stop) = (Arc::clone(&posts2), Arc::clone(&stop2));
                thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut stream = stream;
                    // Keep-alive: requests one after another on the connection.
                    loop {
                        let mut head = Vec::new();
                        loop {
                            let mut line = String::new();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            let line = line.trim_end().to_string();
                            if line.is_empty() {
                                break;
                            }
                            head.push(line);
                        }
                        let header = |name: &str| {
                            head.iter().skip(1).find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.trim()
                                    .eq_ignore_ascii_case(name)
                                    .then(|| v.trim().to_string())
                            })
                        };
                        let length: u64 = header("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        let mut body = Vec::new();
                        if (&mut reader).take(length).read_to_end(&mut body).is_err() {
                            return;
                        }
                        let event = serde_json::from_slice(&body).unwrap_or_else(|e| {
                            panic!("a report that is not JSON ({e}): {body:?}")
                        });
                        posts.lock().unwrap().push(Post {
                            authorization: header("authorization"),
                            event,
                        });
                        // A hanging receiver takes the report and never answers.
                        if hang {
                            while !stop.load(Ordering::Relaxed) {
                                thread::sleep(Duration::from_millis(100));
                            }
                            return;
                        }
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { port, posts, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }

    /// The events received, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.posts().into_iter().map(|p| p.event).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
