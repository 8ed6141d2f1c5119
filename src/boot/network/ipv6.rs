//! IPv6 on one link: router solicitations and what the advertisements say (the kernel
//! itself configures SLAAC addresses and the default route from them; it does not read their
//! DNS servers), and a DHCPv6 client (RFC 8415) for stateful addresses (IA_NA) and for DNS
//! and NTP servers (Information-request). The messages are dhcproto's; the exchanges, like
//! the DHCPv4 one, are ours: a lease for the length of an install needs no renewal.

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use dhcproto::v6::{
    DhcpOption, IAAddr, IANA, Message, MessageType, NtpSuboption, ORO, OptionCode, Status,
};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

/// What a router advertisement says that /init uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Advertisement {
    /// The M flag: addresses come from DHCPv6.
    pub managed: bool,
    /// The O flag: DNS and other settings come from DHCPv6.
    pub other: bool,
    /// A router lifetime above zero: the sender is a default router.
    pub default_router: bool,
    /// The router's (link-local) address, when it is a default router.
    pub router: Option<Ipv6Addr>,
    /// Prefixes to configure addresses in (the A flag): SLAAC.
    pub autonomous: Vec<(Ipv6Addr, u8)>,
    /// On-link prefixes (the L flag).
    pub on_link: Vec<(Ipv6Addr, u8)>,
    /// RDNSS (RFC 8106).
    pub dns: Vec<Ipv6Addr>,
}

const ROUTER_SOLICITATION: u8 = 133;
const ROUTER_ADVERTISEMENT: u8 = 134;

/// A raw ICMPv6 socket on `interface` that sees router advertisements.
fn icmp_socket(interface: &str, index: u32) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        .context("opening an ICMPv6 socket")?;
    socket.bind_device(Some(interface.as_bytes()))?;
    // Neighbour discovery is only valid with a hop limit of 255 (RFC 4861 6.1).
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(index)?;
    socket.set_nonblocking(true)?;
    // tokio's UdpSocket only sends and receives datagrams (sendto, recvfrom), which a raw
    // socket takes the same way; it is never connected or bound as UDP here.
    Ok(UdpSocket::from_std(std::net::UdpSocket::from(
        std::os::fd::OwnedFd::from(socket),
    ))?)
}

/// Solicits router advertisements on `interface` (whose MAC is `mac`) until one comes or
/// `deadline` passes: RFC 4861's three solicitations 4 s apart, then one every 4 s.
pub async fn solicit(
    interface: &str,
    index: u32,
    mac: [u8; 6],
    deadline: Instant,
) -> Result<Option<Advertisement>> {
    let socket = icmp_socket(interface, index)?;
    // Type, code, checksum (the kernel fills it in), reserved; the source link-layer option.
    let mut solicitation = vec![ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    solicitation.extend_from_slice(&mac);
    let routers = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2), 0, 0, index);
    let mut buffer = vec![0u8; 2048];
    loop {
        socket
            .send_to(&solicitation, SocketAddr::V6(routers))
            .await
            .context("sending a router solicitation")?;
        let until = (Instant::now() + Duration::from_secs(4)).min(deadline);
        loop {
            let (length, from) = match timeout_at(until, socket.recv_from(&mut buffer)).await {
                Ok(received) => received.context("receiving router advertisements")?,
                Err(_) => break,
            };
            if let Some(mut advertisement) = parse_advertisement(&buffer[..length])
                && let std::net::IpAddr::V6(router) = from.ip()
            {
                if !advertisement.default_router {
                    advertisement.router = None;
                } else {
                    advertisement.router = Some(router);
                }
                return Ok(Some(advertisement));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
    }
}

/// Reads a router advertisement (RFC 4861 4.2; RDNSS from RFC 8106); `None` for anything
/// else.
pub fn parse_advertisement(message: &[u8]) -> Option<Advertisement> {
    if message.len() < 16 || message[0] != ROUTER_ADVERTISEMENT || message[1] != 0 {
        return None;
    }
    let flags = message[5];
    let lifetime = u16::from_be_bytes([message[6], message[7]]);
    let mut found = Advertisement {
        managed: flags & 0x80 != 0,
        other: flags & 0x40 != 0,
        ..Advertisement::default()
    };
    let mut options = &message[16..];
    while options.len() >= 8 {
        let length = usize::from(options[1]) * 8;
        if length == 0 || length > options.len() {
            break;
        }
        let option = &options[..length];
        match option[0] {
            // Prefix information.
            3 if length == 32 => {
                let prefix_length = option[2];
                let prefix = Ipv6Addr::from(<[u8; 16]>::try_from(&option[16..32]).ok()?);
                let valid = u32::from_be_bytes([option[4], option[5], option[6], option[7]]);
                if valid > 0 && prefix_length <= 128 {
                    if option[3] & 0x80 != 0 {
                        found.on_link.push((prefix, prefix_length));
                    }
                    if option[3] & 0x40 != 0 && prefix_length == 64 {
                        found.autonomous.push((prefix, prefix_length));
                    }
                }
            }
            // Recursive DNS servers.
            25 if length >= 24 => {
                let lifetime = u32::from_be_bytes([option[4], option[5], option[6], option[7]]);
                if lifetime > 0 {
                    for chunk in option[8..].chunks_exact(16) {
                        if let Ok(bytes) = <[u8; 16]>::try_from(chunk) {
                            found.dns.push(Ipv6Addr::from(bytes));
                        }
                    }
                }
            }
            _ => {}
        }
        options = &options[length..];
    }
    found.default_router = lifetime > 0;
    Some(found)
}

/// What a DHCPv6 server granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lease6 {
    /// The address (IA_NA), for a stateful exchange.
    pub address: Option<Ipv6Addr>,
    pub dns: Vec<Ipv6Addr>,
    pub ntp: Vec<String>,
}

const CLIENT_PORT: u16 = 546;
const SERVER_PORT: u16 = 547;

/// The DHCPv6 client identifier: a DUID-LL (type 3, hardware type 1) of the MAC, the same
/// on every boot, so a server that keys reservations on it finds the machine again.
pub fn duid_ll(mac: [u8; 6]) -> Vec<u8> {
    let mut duid = vec![0, 3, 0, 1];
    duid.extend_from_slice(&mac);
    duid
}

fn client_socket(interface: &str, index: u32) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_only_v6(true)?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .with_context(|| format!("binding a DHCPv6 socket to {interface}"))?;
    socket.set_multicast_if_v6(index)?;
    socket.bind(
        &SocketAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, CLIENT_PORT, 0, 0)).into(),
    )?;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket.into())?)
}

fn message(kind: MessageType, xid: [u8; 3], mac: [u8; 6]) -> Message {
    let mut message = Message::new_with_id(kind, xid);
    let options = message.opts_mut();
    options.insert(DhcpOption::ClientId(duid_ll(mac)));
    options.insert(DhcpOption::ElapsedTime(0));
    options.insert(DhcpOption::ORO(ORO {
        opts: vec![OptionCode::DomainNameServers, OptionCode::NtpServer],
    }));
    message
}

/// The identity association: one per interface, numbered after the MAC's last bytes.
fn iaid(mac: [u8; 6]) -> u32 {
    u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
}

/// A stateful lease (`stateful`: Solicit, Advertise, Request, Reply), or only the servers'
/// settings (Information-request, Reply), on `interface`, trying until `deadline`.
pub async fn lease(
    interface: &str,
    index: u32,
    mac: [u8; 6],
    stateful: bool,
    deadline: Instant,
) -> Result<Lease6> {
    let socket = client_socket(interface, index)?;
    let servers = SocketAddrV6::new(
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2),
        SERVER_PORT,
        0,
        index,
    );
    if !stateful {
        let xid = super::transaction_id();
        let request = message(MessageType::InformationRequest, xid, mac);
        let reply = exchange(&socket, &request, servers, MessageType::Reply, deadline)
            .await
            .context("no DHCPv6 reply")?;
        return Ok(read_reply(&reply));
    }
    loop {
        let xid = super::transaction_id();
        let mut solicit = message(MessageType::Solicit, xid, mac);
        solicit.opts_mut().insert(DhcpOption::IANA(IANA {
            id: iaid(mac),
            t1: 0,
            t2: 0,
            opts: Default::default(),
        }));
        let advertise = exchange(&socket, &solicit, servers, MessageType::Advertise, deadline)
            .await
            .context("no DHCPv6 advertise")?;
        let Some(DhcpOption::ServerId(server)) = advertise.opts().get(OptionCode::ServerId) else {
            continue;
        };
        let Some(offered) = offered_ia(&advertise) else {
            // NoAddrsAvail: another server, or this one later.
            if Instant::now() >= deadline {
                return Err(anyhow!("the DHCPv6 server has no address to give"));
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            continue;
        };
        let mut request = message(MessageType::Request, super::transaction_id(), mac);
        request
            .opts_mut()
            .insert(DhcpOption::ServerId(server.clone()));
        request.opts_mut().insert(DhcpOption::IANA(offered));
        let reply = exchange(&socket, &request, servers, MessageType::Reply, deadline)
            .await
            .context("no DHCPv6 reply to the request")?;
        let lease = read_reply(&reply);
        if lease.address.is_some() {
            return Ok(lease);
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("the DHCPv6 server refused the request"));
        }
    }
}

/// The IA_NA of an answer, if it holds an address.
fn offered_ia(answer: &Message) -> Option<IANA> {
    let Some(DhcpOption::IANA(ia)) = answer.opts().get(OptionCode::IANA) else {
        return None;
    };
    let refused = matches!(
        ia.opts.get(OptionCode::StatusCode),
        Some(DhcpOption::StatusCode(status)) if status.status != Status::Success
    );
    let has_address = matches!(ia.opts.get(OptionCode::IAAddr), Some(DhcpOption::IAAddr(_)));
    (has_address && !refused).then(|| ia.clone())
}

fn read_reply(reply: &Message) -> Lease6 {
    let mut lease = Lease6::default();
    if let Some(ia) = offered_ia(reply)
        && let Some(DhcpOption::IAAddr(IAAddr {
            addr, valid_life, ..
        })) = ia.opts.get(OptionCode::IAAddr)
        && *valid_life > 0
    {
        lease.address = Some(*addr);
    }
    if let Some(DhcpOption::DomainNameServers(servers)) =
        reply.opts().get(OptionCode::DomainNameServers)
    {
        lease.dns = servers.clone();
    }
    if let Some(DhcpOption::NtpServer(list)) = reply.opts().get(OptionCode::NtpServer) {
        for server in list {
            match server {
                NtpSuboption::ServerAddress(a) | NtpSuboption::MulticastAddress(a) => {
                    lease.ntp.push(a.to_string())
                }
                NtpSuboption::FQDN(name) => lease
                    .ntp
                    .push(name.to_string().trim_end_matches('.').to_string()),
            }
        }
    }
    lease
}

/// Sends `message` to the servers and waits for the answer of kind `wanted` to its
/// transaction, retransmitting (1, 2, 4… s, at most 16 s apart) until `deadline`.
async fn exchange(
    socket: &UdpSocket,
    message: &Message,
    servers: SocketAddrV6,
    wanted: MessageType,
    deadline: Instant,
) -> Result<Message> {
    let mut bytes = Vec::new();
    message.encode(&mut Encoder::new(&mut bytes))?;
    let mut interval = Duration::from_secs(1);
    let mut buffer = vec![0u8; 1500];
    loop {
        socket
            .send_to(&bytes, SocketAddr::V6(servers))
            .await
            .context("sending a DHCPv6 message")?;
        let until = (Instant::now() + interval).min(deadline);
        loop {
            let received = match timeout_at(until, socket.recv_from(&mut buffer)).await {
                Ok(received) => received.context("receiving DHCPv6 answers")?,
                Err(_) => break,
            };
            let Ok(answer) = Message::decode(&mut Decoder::new(&buffer[..received.0])) else {
                continue;
            };
            if answer.xid() == message.xid() && answer.msg_type() == wanted {
                return Ok(answer);
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("no answer"));
        }
        interval = (interval * 2).min(Duration::from_secs(16));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_advertisement_with_a_prefix_and_dns() {
        let mut ra = vec![134, 0, 0, 0, 64, 0xc0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
        // Prefix 2001:db8:1::/64, on-link and autonomous.
        ra.extend_from_slice(&[
            3, 4, 64, 0xc0, 0, 0, 0x0e, 0x10, 0, 0, 0x0e, 0x10, 0, 0, 0, 0,
        ]);
        ra.extend_from_slice(&"2001:db8:1::".parse::<Ipv6Addr>().unwrap().octets());
        // RDNSS 2001:db8::53.
        ra.extend_from_slice(&[25, 3, 0, 0, 0, 0, 0x0e, 0x10]);
        ra.extend_from_slice(&"2001:db8::53".parse::<Ipv6Addr>().unwrap().octets());
        let found = parse_advertisement(&ra).unwrap();
        assert!(found.managed && found.other);
        assert!(found.default_router);
        assert_eq!(found.autonomous, [("2001:db8:1::".parse().unwrap(), 64)]);
        assert_eq!(found.on_link.len(), 1);
        assert_eq!(found.dns, ["2001:db8::53".parse::<Ipv6Addr>().unwrap()]);
        // A truncated option ends the reading; anything else is not an advertisement.
        assert!(parse_advertisement(&ra[..40]).is_some());
        assert!(parse_advertisement(&[133, 0, 0, 0]).is_none());
        let mut zero = ra.clone();
        zero[17] = 0;
        assert!(parse_advertisement(&zero).unwrap().autonomous.is_empty());
    }

    #[test]
    fn a_solicit_carries_a_duid_ll_and_asks_for_dns_and_ntp() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let built = message(MessageType::Solicit, [1, 2, 3], mac);
        let mut bytes = Vec::new();
        built.encode(&mut Encoder::new(&mut bytes)).unwrap();
        let decoded = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(
            decoded.opts().get(OptionCode::ClientId),
            Some(&DhcpOption::ClientId(vec![
                0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56
            ]))
        );
        assert!(
            matches!(decoded.opts().get(OptionCode::ORO), Some(DhcpOption::ORO(o)) if o.opts.contains(&OptionCode::NtpServer))
        );
    }
}
