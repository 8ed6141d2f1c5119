//! The clock before TLS: a machine with a dead RTC battery, or a clock at the factory date,
//! fails every certificate check ("not yet valid"). /init asks the NTP servers it was given
//! (`ocidd.ntp=`, then those DHCP named) with SNTP (the sntpc crate) and sets the clock when
//! it is off by more than [`TOLERANCE`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow};
use rustix::time::{ClockId, Timespec};
use tokio::net::UdpSocket;

/// How far off the clock may be before /init sets it: certificates care about minutes, and
/// setting the clock for less only makes the console's times jump.
pub const TOLERANCE: Duration = Duration::from_secs(2);

/// How long one server has to answer.
const ANSWER_TIME: Duration = Duration::from_secs(3);

/// What asking the servers did.
#[derive(Debug)]
pub enum Synced {
    /// The clock was off by this many seconds (positive: behind) and is set now.
    Set { server: String, offset: f64 },
    /// The clock was right, within this many seconds.
    Right { server: String, offset: f64 },
}

struct Socket(UdpSocket);

impl sntpc::NtpUdpSocket for Socket {
    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> sntpc::Result<usize> {
        self.0
            .send_to(buf, addr)
            .await
            .map_err(|_| sntpc::Error::Network)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> sntpc::Result<(usize, SocketAddr)> {
        self.0
            .recv_from(buf)
            .await
            .map_err(|_| sntpc::Error::Network)
    }
}

/// `host` as a socket address: a name, an address (IPv6 bare or in brackets), with or
/// without a port.
fn server_address(host: &str) -> Result<SocketAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 123));
    }
    let with_port = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:123")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .ok_or_else(|| anyhow!("cannot resolve {host}"))
}

/// The clock's offset from `host`, in seconds (positive: the clock is behind).
async fn ask(host: &str) -> Result<f64> {
    let address = server_address(host)?;
    let local: SocketAddr = if address.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = Socket(
        UdpSocket::bind(local)
            .await
            .context("opening an NTP socket")?,
    );
    let context = sntpc::NtpContext::new(sntpc::StdTimestampGen::default());
    let mut last = anyhow!("no answer");
    for _ in 0..3 {
        match tokio::time::timeout(ANSWER_TIME, sntpc::get_time(address, &socket, context)).await {
            Ok(Ok(result)) => return Ok(result.offset() as f64 / 1e6),
            Ok(Err(e)) => last = anyhow!("{e:?}"),
            Err(_) => last = anyhow!("no answer in {} s", ANSWER_TIME.as_secs()),
        }
    }
    Err(last)
}

/// Asks `servers` in turn until one answers, and sets the clock from it when it is off.
/// Each server that did not answer is one line in the error.
pub async fn sync(servers: &[String]) -> Result<Synced> {
    let mut failures = Vec::new();
    for server in servers {
        match ask(server).await {
            Ok(offset) if offset.abs() > TOLERANCE.as_secs_f64() => {
                set_clock(offset)?;
                return Ok(Synced::Set {
                    server: server.clone(),
                    offset,
                });
            }
            Ok(offset) => {
                return Ok(Synced::Right {
                    server: server.clone(),
                    offset,
                });
            }
            Err(e) => failures.push(format!("{server}: {e:#}")),
        }
    }
    Err(anyhow!("no NTP server answered ({})", failures.join("; ")))
}

/// Moves the clock by `offset` seconds.
fn set_clock(offset: f64) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let wanted = now + offset;
    if !(0.0..1e11).contains(&wanted) {
        return Err(anyhow!("the NTP server's time is out of range"));
    }
    let time = Timespec {
        tv_sec: wanted.trunc() as i64,
        tv_nsec: (wanted.fract() * 1e9) as _,
    };
    rustix::time::clock_settime(ClockId::Realtime, time).context("setting the clock")
}

/// A clock's error as the console shows it: seconds, hours or days.
pub fn shown_offset(seconds: f64) -> String {
    match seconds {
        s if s >= 2.0 * 86400.0 => format!("{:.0} days", s / 86400.0),
        s if s >= 2.0 * 3600.0 => format!("{:.0} hours", s / 3600.0),
        s => format!("{s:.0} s"),
    }
}

/// `time` as the console shows it (UTC).
pub fn shown(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert_eq!(
            server_address("10.0.0.1").unwrap().to_string(),
            "10.0.0.1:123"
        );
        assert_eq!(
            server_address("[fd00::1]").unwrap().to_string(),
            "[fd00::1]:123"
        );
        assert_eq!(
            server_address("fd00::1").unwrap().to_string(),
            "[fd00::1]:123"
        );
        assert_eq!(server_address("127.0.0.1:1123").unwrap().port(), 1123);
        assert_eq!(shown_offset(691_646_700.0), "8005 days");
        assert_eq!(shown_offset(7300.0), "2 hours");
        assert_eq!(shown_offset(4.4), "4 s");
    }
}
