//! A static HTTP file server on loopback, for boot files and iPXE scripts (what a PXE setup's
//! web server does).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::thread;

pub struct FileServer {
    pub port: u16,
}

impl FileServer {
    /// Serves the files under `root` (GET and HEAD), one request per connection.
    pub fn start(root: &Path) -> FileServer {
        FileServer::start_on(root, "127.0.0.1:0")
    }

    /// Serves on `address` (`0.0.0.0:0` inside a [`super::lab::Lab`]).
    pub fn start_on(root: &Path, address: &str) -> FileServer {
        let listener = TcpListener::bind(address).expect("binding the file server");
        let port = listener.local_addr().unwrap().port();
        let root = root.to_path_buf();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &root);
                });
            }
        });
        FileServer { port }
    }
}

fn serve(stream: TcpStream, root: &Path) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut parts = request.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let file = resolve(root, path).and_then(|p| std::fs::read(p).ok());
    let mut stream = stream;
    match file {
        Some(body) => {
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            if method != "HEAD" {
                stream.write_all(&body)?;
            }
        }
        None => stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?,
    }
    stream.flush()
}

/// The file a request path names under `root`, if it stays under it. The path is
/// percent-decoded, as web servers do (`52%3A54%3A…` names `52:54:…`).
fn resolve(root: &Path, path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(path.split('?').next()?)
        .decode_utf8()
        .ok()?;
    let relative = Path::new(decoded.trim_start_matches('/'));
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(relative))
}
