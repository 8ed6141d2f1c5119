//! A DHCPv4 client for one interface: DISCOVER, OFFER, REQUEST, ACK, with retransmission.
//! The messages are dhcproto's; the exchange is ours (a lease for the length of an install,
//! without renewal, is all /init needs).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, Encodable, Encoder, Flags, Message, MessageType, Opcode,
    OptionCode,
};
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

/// What the server granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// NTP servers (option 42).
    pub ntp: Vec<Ipv4Addr>,
    pub server: Ipv4Addr,
}

const CLIENT_PORT: u16 = 68;
const SERVER_PORT: u16 = 67;

/// Gets a lease on `interface` (whose hardware address is `mac`), trying for about `budget`.
pub async fn lease(interface: &str, mac: [u8; 6], budget: Duration) -> Result<Lease> {
    let socket = client_socket(interface)?;
    let deadline = Instant::now() + budget;
    loop {
        let xid = u32::from_ne_bytes(super::transaction_id());
        let offer = exchange(
            &socket,
            &discover(xid, mac),
            xid,
            MessageType::Offer,
            deadline,
        )
        .await
        .context("no DHCP offer")?;
        let server = match offer.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => *ip,
            _ => offer.siaddr(),
        };
        let request = request(xid, mac, offer.yiaddr(), server);
        let answer = exchange(&socket, &request, xid, MessageType::Ack, deadline)
            .await
            .context("no DHCP acknowledgement")?;
        match answer.opts().msg_type() {
            Some(MessageType::Ack) => return Ok(lease_from(&answer, server)),
            // A NAK: the offer was taken back; start over.
            _ if Instant::now() < deadline => continue,
            _ => bail!("the DHCP server refused the request (NAK)"),
        }
    }
}

/// A UDP socket on port 68 of `interface` that can broadcast before the interface has an
/// address (SO_BINDTODEVICE: each interface gets its own socket and only its own answers).
fn client_socket(interface: &str) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_broadcast(true)?;
    socket
        .bind_device(Some(interface.as_bytes()))
        .with_context(|| format!("binding a DHCP socket to {interface}"))?;
    socket.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)).into())?;
    socket.set_nonblocking(true)?;
    Ok(UdpSocket::from_std(socket.into())?)
}

fn base_message(xid: u32, mac: [u8; 6], kind: MessageType) -> Message {
    let mut message = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    // Ask for broadcast answers: we have no address to receive unicast on yet.
    message.set_flags(Flags::default().set_broadcast());
    let options = message.opts_mut();
    options.insert(DhcpOption::MessageType(kind));
    let mut client_id = vec![1u8];
    client_id.extend_from_slice(&mac);
    options.insert(DhcpOption::ClientIdentifier(client_id));
    options.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::NtpServers,
        OptionCode::AddressLeaseTime,
        OptionCode::ServerIdentifier,
    ]));
    message
}

fn discover(xid: u32, mac: [u8; 6]) -> Message {
    base_message(xid, mac, MessageType::Discover)
}

fn request(xid: u32, mac: [u8; 6], address: Ipv4Addr, server: Ipv4Addr) -> Message {
    let mut message = base_message(xid, mac, MessageType::Request);
    message
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(address));
    message
        .opts_mut()
        .insert(DhcpOption::ServerIdentifier(server));
    message
}

/// Sends `message` and waits for the answer of the wanted kind (or a NAK) to transaction
/// `xid`, retransmitting with growing intervals (2, 4, 8 s…) until `deadline`.
async fn exchange(
    socket: &UdpSocket,
    message: &Message,
    xid: u32,
    wanted: MessageType,
    deadline: Instant,
) -> Result<Message> {
    let mut bytes = Vec::new();
    message.encode(&mut Encoder::new(&mut bytes))?;
    let broadcast = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT));
    let mut interval = Duration::from_secs(2);
    let mut buffer = vec![0u8; 1500];
    loop {
        socket
            .send_to(&bytes, broadcast)
            .await
            .context("sending a DHCP message")?;
        let until = (Instant::now() + interval).min(deadline);
        loop {
            let received = match timeout_at(until, socket.recv_from(&mut buffer)).await {
                Ok(received) => received.context("receiving DHCP answers")?,
                Err(_) => break,
            };
            let Ok(answer) = Message::decode(&mut Decoder::new(&buffer[..received.0])) else {
                continue;
            };
            let kind = answer.opts().msg_type();
            if answer.opcode() == Opcode::BootReply
                && answer.xid() == xid
                && (kind == Some(wanted) || kind == Some(MessageType::Nak))
            {
                return Ok(answer);
            }
        }
        if Instant::now() >= deadline {
            return Err(anyhow!("no answer"));
        }
        interval = (interval * 2).min(Duration::from_secs(8));
    }
}

fn lease_from(ack: &Message, server: Ipv4Addr) -> Lease {
    let options = ack.opts();
    let mask = match options.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => *mask,
        _ => Ipv4Addr::new(255, 255, 255, 0),
    };
    let router = match options.get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => routers.first().copied(),
        _ => None,
    };
    let dns = match options.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(servers)) => servers.clone(),
        _ => Vec::new(),
    };
    let ntp = match options.get(OptionCode::NtpServers) {
        Some(DhcpOption::NtpServers(servers)) => servers.clone(),
        _ => Vec::new(),
    };
    Lease {
        address: ack.yiaddr(),
        prefix: u32::from(mask).leading_ones() as u8,
        router,
        dns,
        ntp,
        server,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discover_asks_for_a_broadcast_answer() {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let message = discover(7, mac);
        let mut bytes = Vec::new();
        message.encode(&mut Encoder::new(&mut bytes)).unwrap();
        let decoded = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(decoded.xid(), 7);
        assert!(decoded.flags().broadcast());
        assert_eq!(decoded.chaddr(), &mac);
        assert_eq!(decoded.opts().msg_type(), Some(MessageType::Discover));
    }

    #[test]
    fn reads_a_lease_from_an_ack() {
        let mut ack = Message::new_with_id(
            9,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            &[1, 2, 3, 4, 5, 6],
        );
        ack.set_opcode(Opcode::BootReply);
        let options = ack.opts_mut();
        options.insert(DhcpOption::MessageType(MessageType::Ack));
        options.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 240, 0)));
        options.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        options.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        options.insert(DhcpOption::NtpServers(vec![Ipv4Addr::new(10, 0, 2, 4)]));
        let lease = lease_from(&ack, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(lease.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(lease.prefix, 20);
        assert_eq!(lease.router, Some(Ipv4Addr::new(10, 0, 2, 2)));
        assert_eq!(lease.dns, [Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(lease.ntp, [Ipv4Addr::new(10, 0, 2, 4)]);
    }
}
