//! A real forward proxy (Debian's tinyproxy) on a free loopback port.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::free_port;

/// A tinyproxy on a free port; stopped by PID when dropped.
pub struct ForwardProxy {
    pub port: u16,
    log: std::path::PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        ForwardProxy::start_with(None)
    }

    /// A proxy that demands Basic credentials (`Proxy-Authorization`) of `user:password`.
    pub fn start_with_auth(user: &str, password: &str) -> ForwardProxy {
        ForwardProxy::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> ForwardProxy {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let config = dir.path().join("tinyproxy.conf");
        fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 20\nAllow 127.0.0.1\n{}",
                log.display(),
                auth.map(|(user, password)| format!("BasicAuth {user} {password}\n"))
                    .unwrap_or_default()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .args(["-d", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy is not installed (apt-get install tinyproxy; .ci/run does)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tinyproxy did not come up");
            thread::sleep(Duration::from_millis(50));
        }
        ForwardProxy {
            port,
            log,
            child,
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
