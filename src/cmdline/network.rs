//! The network words `/init` reads, with dracut's meaning (`man dracut.cmdline`), so that one
//! boot entry works with ocidd and with other initramfs tools: `ip=` in its forms (repeatable,
//! one per interface), `vlan=`, `bond=`, `ifname=`, `BOOTIF=`, `rd.route=`, `nameserver=`.
//! Each is checked when the words are read: a bad value is one line naming the word.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// How an interface gets its addresses (`ip=`'s autoconf field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// DHCPv4 (`dhcp`, `on`, `any`).
    Dhcp,
    /// Stateful DHCPv6.
    Dhcp6,
    /// IPv6 router advertisements only (SLAAC).
    Auto6,
    /// SLAAC, and DHCPv6 when that gives nothing.
    Either6,
    /// Addresses as the word gives them (`none`, `off`).
    Static,
    /// No network at all (`ip=off` alone).
    Off,
}

/// One `ip=` word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSpec {
    /// The interface it is for; `None`: every candidate.
    pub interface: Option<String>,
    pub method: Method,
    /// A static address and prefix length.
    pub address: Option<(IpAddr, u8)>,
    pub gateway: Option<IpAddr>,
    pub hostname: Option<String>,
    pub mtu: Option<u32>,
    /// A MAC address to set on the interface.
    pub mac: Option<[u8; 6]>,
    pub dns: Vec<IpAddr>,
}

impl IpSpec {
    fn method(method: Method) -> IpSpec {
        IpSpec {
            interface: None,
            method,
            address: None,
            gateway: None,
            hostname: None,
            mtu: None,
            mac: None,
            dns: Vec::new(),
        }
    }
}

/// How long /init tries for an address by default: about two minutes, to ride out a switch
/// port that is still coming up (spanning tree, LACP) or a DHCP server that is slow.
pub const DEFAULT_NET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The network words of one command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NetworkWords {
    /// `ip=`, in the order given (one per interface, or one for all).
    pub ip: Vec<IpSpec>,
    pub vlans: Vec<Vlan>,
    pub bonds: Vec<Bond>,
    pub ifnames: Vec<IfName>,
    /// `BOOTIF=`: the NIC the machine booted from.
    pub bootif: Option<[u8; 6]>,
    pub routes: Vec<Route>,
    pub nameservers: Vec<IpAddr>,
    /// `ocidd.ntp=`: NTP servers, before those DHCP names.
    pub ntp: Vec<String>,
    /// `ocidd.net_timeout=`: how long to try for an address.
    pub timeout: Option<std::time::Duration>,
}

impl NetworkWords {
    /// The rules between the words, once all are given.
    pub fn check(&self) -> Result<(), String> {
        let named = |spec: &&IpSpec| spec.interface.is_some();
        if self.ip.iter().any(|s| s.method == Method::Off) && self.ip.len() > 1 {
            return Err("ip=off is given with other ip= words: give one or the other".into());
        }
        if self.ip.iter().filter(|s| !named(s)).count() > 1 {
            return Err(
                "ip= is given twice without an interface: name each one's interface (ip=eth0:dhcp ip=eth1:dhcp6)"
                    .into(),
            );
        }
        let mut seen: Vec<(&str, bool)> = Vec::new();
        for spec in self.ip.iter().filter(named) {
            let name = spec.interface.as_deref().unwrap_or_default();
            let v6 = matches!(spec.method, Method::Dhcp6 | Method::Auto6 | Method::Either6)
                || spec.address.is_some_and(|(a, _)| a.is_ipv6());
            if seen.contains(&(name, v6)) {
                return Err(format!(
                    "ip= names {name} twice for the same address family: give one of them"
                ));
            }
            seen.push((name, v6));
        }
        for vlan in &self.vlans {
            if self.vlans.iter().filter(|v| v.name == vlan.name).count() > 1 {
                return Err(format!("vlan= defines {} twice", vlan.name));
            }
        }
        for bond in &self.bonds {
            if self.bonds.iter().filter(|b| b.name == bond.name).count() > 1 {
                return Err(format!("bond= defines {} twice", bond.name));
            }
            for slave in &bond.slaves {
                if let Some(other) = self
                    .bonds
                    .iter()
                    .find(|b| b.name != bond.name && b.slaves.contains(slave))
                {
                    return Err(format!(
                        "bond= puts {slave} in both {} and {}",
                        bond.name, other.name
                    ));
                }
            }
        }
        for ifname in &self.ifnames {
            if self
                .ifnames
                .iter()
                .filter(|i| i.name == ifname.name)
                .count()
                > 1
            {
                return Err(format!("ifname= names {} twice", ifname.name));
            }
        }
        Ok(())
    }
}

/// `vlan=NAME:PARENT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vlan {
    pub name: String,
    pub parent: String,
    pub id: u16,
}

/// `bond=NAME[:SLAVES[:OPTIONS[:MTU]]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bond {
    pub name: String,
    pub slaves: Vec<String>,
    /// The bonding driver's options by its sysfs names (`mode`, `miimon`, `lacp_rate`…),
    /// in the order given.
    pub options: Vec<(String, String)>,
    pub mtu: Option<u32>,
}

/// `ifname=NAME:MAC`: the interface with that MAC gets that name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfName {
    pub name: String,
    pub mac: [u8; 6],
}

/// `rd.route=NET/PREFIX:GATEWAY[:INTERFACE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpNet,
    pub gateway: IpAddr,
    pub interface: Option<String>,
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`.
pub struct Mac<'a>(pub &'a [u8; 6]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|b| format!("{b:02x}")).collect();
        f.write_str(&parts.join(":"))
    }
}

/// Six hex bytes separated by `sep`.
fn parse_mac(text: &str, sep: char) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = text.split(sep).collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("{text:?} is not a MAC address"));
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16)
            .ok()
            .filter(|_| part.len() == 2)
            .ok_or_else(|| format!("{text:?} is not a MAC address"))?;
    }
    Ok(mac)
}

/// The fields of a value split at `:`, except inside `[…]` (IPv6 addresses), brackets
/// removed.
fn fields(text: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut bracket = false;
    for c in text.chars() {
        match c {
            '[' if !bracket => bracket = true,
            ']' if bracket => bracket = false,
            ':' if !bracket => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if bracket {
        return Err(format!("{text:?} has a '[' without its ']'"));
    }
    fields.push(field);
    Ok(fields)
}

/// An interface name as the kernel takes one: 1 to 15 bytes, no '/', ':' or spaces.
fn check_name(name: &str, what: &str) -> Result<String, String> {
    let valid = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
        && name != "."
        && name != "..";
    if valid {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?} is not {what} (1 to 15 characters, no '/' or ':')"
        ))
    }
}

fn parse_method(text: &str) -> Option<Method> {
    Some(match text {
        "dhcp" | "on" | "any" | "single-dhcp" => Method::Dhcp,
        "dhcp6" => Method::Dhcp6,
        "auto6" => Method::Auto6,
        "either6" => Method::Either6,
        "none" | "off" | "static" | "" => Method::Static,
        _ => return None,
    })
}

/// Parses one `ip=` value, in any of dracut's (and the kernel's) forms.
pub fn parse_ip(text: &str) -> Result<IpSpec, String> {
    let methods = "dhcp, dhcp6, auto6, either6, off";
    if !text.contains(':') {
        return match text {
            "off" | "none" => Ok(IpSpec::method(Method::Off)),
            _ => match parse_method(text) {
                Some(method) if !text.is_empty() => Ok(IpSpec::method(method)),
                _ => Err(format!(
                    "{text:?} is not one of {methods}, IFACE:METHOD or a static form"
                )),
            },
        };
    }
    let fields = fields(text)?;
    // IFACE:METHOD[:MTU[:MAC]]: an interface first (not an address), a method second.
    let iface_form = fields.len() >= 2
        && !fields[0].is_empty()
        && fields[0].parse::<IpAddr>().is_err()
        && !fields[1].is_empty();
    if iface_form && let Some(method) = parse_method(&fields[1]) {
        if method == Method::Static {
            return Err(format!(
                "{}:{} needs an address: the static form is ADDR::GATEWAY:NETMASK::IFACE:none",
                fields[0], fields[1]
            ));
        }
        let mut spec = IpSpec::method(method);
        spec.interface = Some(check_name(&fields[0], "an interface")?);
        tail(&mut spec, &fields[2..])?;
        return Ok(spec);
    }
    // ADDR:PEER:GW:MASK:HOSTNAME:IFACE:METHOD[:MTU[:MAC]] or [:DNS0[:DNS1]]
    let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or("");
    let ip = |i: usize, what: &str| -> Result<Option<IpAddr>, String> {
        match field(i) {
            "" => Ok(None),
            text => text
                .parse()
                .map(Some)
                .map_err(|_| format!("the {what} {text:?} is not an IP address")),
        }
    };
    let method = parse_method(field(6))
        .ok_or_else(|| format!("{:?} is not a method ({methods}, none)", field(6)))?;
    let mut spec = IpSpec::method(method);
    let address = ip(0, "address")?;
    spec.gateway = ip(2, "gateway")?;
    spec.hostname = Some(field(4).to_string()).filter(|h| !h.is_empty());
    spec.interface = match field(5) {
        "" => None,
        name => Some(check_name(name, "an interface")?),
    };
    if let Some(address) = address {
        let prefix = match (field(3), address) {
            ("", IpAddr::V4(v4)) => match v4.octets()[0] {
                0..=127 => 8,
                128..=191 => 16,
                _ => 24,
            },
            ("", IpAddr::V6(_)) => 64,
            (mask, _) if let Ok(prefix) = mask.parse::<u8>() => {
                let max = if address.is_ipv4() { 32 } else { 128 };
                if prefix > max {
                    return Err(format!("the prefix length {prefix} is more than {max}"));
                }
                prefix
            }
            (mask, IpAddr::V4(_)) => {
                let mask: std::net::Ipv4Addr = mask
                    .parse()
                    .map_err(|_| format!("the netmask {mask:?} is not a netmask"))?;
                let bits = u32::from(mask);
                if bits.leading_ones() != bits.count_ones() {
                    return Err(format!("the netmask {mask} is not contiguous"));
                }
                bits.leading_ones() as u8
            }
            (mask, IpAddr::V6(_)) => {
                return Err(format!(
                    "the prefix length {mask:?} is not a number (an IPv6 netmask is a length)"
                ));
            }
        };
        spec.address = Some((address, prefix));
    }
    if method == Method::Static && spec.address.is_none() {
        return Err("a static configuration needs an address".to_string());
    }
    if let (Some((a, _)), Some(g)) = (spec.address, spec.gateway)
        && a.is_ipv4() != g.is_ipv4()
    {
        return Err(format!("the gateway {g} is not of the address's family"));
    }
    tail(&mut spec, &fields[7.min(fields.len())..])?;
    Ok(spec)
}

/// What follows the method: `MTU[:MAC]`, or the kernel's `DNS0[:DNS1]`.
fn tail(spec: &mut IpSpec, rest: &[String]) -> Result<(), String> {
    let Some(first) = rest.first().filter(|f| !f.is_empty()) else {
        if rest.len() > 1 {
            let mac = rest[1..].join(":");
            if !mac.is_empty() {
                spec.mac = Some(parse_mac(&mac, ':')?);
            }
        }
        return Ok(());
    };
    if let Ok(dns) = first.parse::<IpAddr>() {
        spec.dns.push(dns);
        if let Some(second) = rest.get(1).filter(|f| !f.is_empty()) {
            spec.dns.push(
                second
                    .parse()
                    .map_err(|_| format!("the DNS server {second:?} is not an IP address"))?,
            );
        }
        return Ok(());
    }
    let mtu: u32 = first
        .parse()
        .ok()
        .filter(|m| (68..=65535).contains(m))
        .ok_or_else(|| format!("{first:?} is neither an MTU (68 to 65535) nor a DNS server"))?;
    spec.mtu = Some(mtu);
    if rest.len() > 1 {
        spec.mac = Some(parse_mac(&rest[1..].join(":"), ':')?);
    }
    Ok(())
}

/// Parses `vlan=NAME:PARENT`; the VLAN id is the name's trailing number (`vlan0005`,
/// `vlan5`, `eth0.0005`, `eth0.5`).
pub fn parse_vlan(text: &str) -> Result<Vlan, String> {
    let (name, parent) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:PARENT (vlan100:eth0, eth0.100:eth0)"))?;
    let name = check_name(name, "a VLAN name")?;
    let parent = check_name(parent, "an interface")?;
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let id: u16 = digits
        .parse()
        .ok()
        .filter(|id| (1..=4094).contains(id))
        .ok_or_else(|| {
            format!("the VLAN name {name:?} does not end in its id (1 to 4094): vlan100, eth0.100")
        })?;
    Ok(Vlan { name, parent, id })
}

/// Parses `bond=NAME[:SLAVES[:OPTIONS[:MTU]]]`; as in dracut, the slaves default to eth0
/// and eth1, and the mode to balance-rr.
pub fn parse_bond(text: &str) -> Result<Bond, String> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 4 {
        return Err(format!("{text:?} is not NAME[:SLAVES[:OPTIONS[:MTU]]]"));
    }
    let name = check_name(parts[0], "a bond name")?;
    let slaves = match parts.get(1).filter(|s| !s.is_empty()) {
        Some(list) => list
            .split(',')
            .map(|s| check_name(s, "an interface"))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec!["eth0".into(), "eth1".into()],
    };
    let mut options = Vec::new();
    for option in parts
        .get(2)
        .iter()
        .flat_map(|o| o.split(','))
        .filter(|o| !o.is_empty())
    {
        let (key, value) = option
            .split_once('=')
            .filter(|(k, v)| !k.is_empty() && !v.is_empty())
            .ok_or_else(|| format!("the bond option {option:?} is not NAME=VALUE"))?;
        let valid = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        if !valid(key) || !valid(value) {
            return Err(format!("the bond option {option:?} is not NAME=VALUE"));
        }
        options.push((key.to_string(), value.to_string()));
    }
    if !options.iter().any(|(k, _)| k == "mode") {
        options.insert(0, ("mode".into(), "balance-rr".into()));
    }
    let mtu = match parts.get(3).filter(|m| !m.is_empty()) {
        Some(mtu) => Some(
            mtu.parse()
                .ok()
                .filter(|m: &u32| (68..=65535).contains(m))
                .ok_or_else(|| format!("the MTU {mtu:?} is not 68 to 65535"))?,
        ),
        None => None,
    };
    Ok(Bond {
        name,
        slaves,
        options,
        mtu,
    })
}

/// Parses `ifname=NAME:MAC`.
pub fn parse_ifname(text: &str) -> Result<IfName, String> {
    let (name, mac) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:MAC (lan0:52:54:00:12:34:56)"))?;
    Ok(IfName {
        name: check_name(name, "an interface name")?,
        mac: parse_mac(mac, ':')?,
    })
}

/// Parses `BOOTIF=01-aa-bb-cc-dd-ee-ff`, as PXELINUX's `IPAPPEND 2` and iPXE's
/// `BOOTIF=01-${net0/mac:hexhyp}` write it (01: Ethernet); the bare MAC is taken too.
pub fn parse_bootif(text: &str) -> Result<[u8; 6], String> {
    let mac = match text.strip_prefix("01-") {
        Some(mac) => mac,
        None if text.len() == 17 => text,
        None => {
            return Err(format!(
                "{text:?} is not 01-aa-bb-cc-dd-ee-ff (the hardware type 01, then the MAC)"
            ));
        }
    };
    parse_mac(mac, '-').or_else(|_| parse_mac(mac, ':'))
}

/// Parses `rd.route=NET/PREFIX:GATEWAY[:INTERFACE]` (IPv6 in brackets).
pub fn parse_route(text: &str) -> Result<Route, String> {
    let fields = fields(text)?;
    if !(2..=3).contains(&fields.len()) {
        return Err(format!(
            "{text:?} is not NET/PREFIX:GATEWAY[:INTERFACE] (IPv6 in brackets)"
        ));
    }
    let destination: IpNet = fields[0]
        .parse()
        .map_err(|_| format!("{:?} is not a network (NET/PREFIX)", fields[0]))?;
    let gateway: IpAddr = fields[1]
        .parse()
        .map_err(|_| format!("{:?} is not a gateway address", fields[1]))?;
    if destination.addr().is_ipv4() != gateway.is_ipv4() {
        return Err(format!(
            "the gateway {gateway} is not of {destination}'s family"
        ));
    }
    let interface = match fields.get(2).filter(|i| !i.is_empty()) {
        Some(name) => Some(check_name(name, "an interface")?),
        None => None,
    };
    Ok(Route {
        destination: destination.trunc(),
        gateway,
        interface,
    })
}

/// Parses `nameserver=IP` (IPv6 bare or in brackets).
pub fn parse_nameserver(text: &str) -> Result<IpAddr, String> {
    let bare = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    bare.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

/// Parses `ocidd.ntp=HOST`: a name or an address (IPv6 bare or in brackets), with an
/// optional port.
pub fn parse_ntp_server(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!("{text:?} is not a host name or address"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ip_forms() {
        assert_eq!(parse_ip("dhcp").unwrap().method, Method::Dhcp);
        assert_eq!(parse_ip("dhcp6").unwrap().method, Method::Dhcp6);
        assert_eq!(parse_ip("auto6").unwrap().method, Method::Auto6);
        assert_eq!(parse_ip("either6").unwrap().method, Method::Either6);
        assert_eq!(parse_ip("off").unwrap().method, Method::Off);
        let spec = parse_ip("eth1:dhcp6:9000:52:54:00:12:34:56").unwrap();
        assert_eq!(spec.interface.as_deref(), Some("eth1"));
        assert_eq!(spec.method, Method::Dhcp6);
        assert_eq!(spec.mtu, Some(9000));
        assert_eq!(spec.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!(
            parse_ip("eth0:dhcp").unwrap().interface.as_deref(),
            Some("eth0")
        );
        let stat =
            parse_ip("192.168.1.20::192.168.1.1:255.255.255.0::eth0:off:192.168.1.53").unwrap();
        assert_eq!(stat.address, Some((v4("192.168.1.20"), 24)));
        assert_eq!(stat.gateway, Some(v4("192.168.1.1")));
        assert_eq!(stat.dns, vec![v4("192.168.1.53")]);
        assert_eq!(stat.method, Method::Static);
        let six = parse_ip("[2001:db8::10]::[2001:db8::1]:64::eth0:none").unwrap();
        assert_eq!(six.address, Some((v4("2001:db8::10"), 64)));
        assert_eq!(six.gateway, Some(v4("2001:db8::1")));
        assert_eq!(six.interface.as_deref(), Some("eth0"));
        let mtu = parse_ip("10.0.0.5::10.0.0.1:24::bond0.100:none:1500").unwrap();
        assert_eq!(
            (mtu.mtu, mtu.address),
            (Some(1500), Some((v4("10.0.0.5"), 24)))
        );
        // The kernel's DHCP-on-one-interface form.
        let one = parse_ip(":::::eth1:dhcp").unwrap();
        assert_eq!(
            (one.interface.as_deref(), one.method),
            (Some("eth1"), Method::Dhcp)
        );
        let classful = parse_ip("10.1.2.3::::::off").unwrap();
        assert_eq!(classful.address, Some((v4("10.1.2.3"), 8)));
        for bad in [
            "fancy",
            "10.1.2::::::off",
            "10.1.2.3:::255.0.255.0:::off",
            "[2001:db8::10::[2001:db8::1]:64::eth0:none",
            "[2001:db8::10]:::ffff::eth0:none",
            "10.0.0.5::[2001:db8::1]:24::eth0:none",
            "10.0.0.5:::24::eth0:none:bigmtu",
            "eth0:dhcp:1500:zz:00:00:00:00:00",
            "::::::off",
            "10.0.0.5:::24::eth0:teleport",
            "a/b:dhcp",
        ] {
            assert!(parse_ip(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vlan_bond_ifname_bootif_route_forms() {
        assert_eq!(
            parse_vlan("eth0.100:eth0").unwrap(),
            Vlan {
                name: "eth0.100".into(),
                parent: "eth0".into(),
                id: 100
            }
        );
        assert_eq!(parse_vlan("vlan0005:bond0").unwrap().id, 5);
        for bad in ["vlan100", "vlanx:eth0", "vlan0:eth0", "vlan5000:eth0", "v:"] {
            assert!(parse_vlan(bad).is_err(), "{bad}");
        }
        let bond =
            parse_bond("bond0:eth0,eth1:mode=802.3ad,miimon=100,lacp_rate=fast:9000").unwrap();
        assert_eq!(bond.slaves, ["eth0", "eth1"]);
        assert_eq!(
            bond.options,
            [
                ("mode".to_string(), "802.3ad".to_string()),
                ("miimon".into(), "100".into()),
                ("lacp_rate".into(), "fast".into())
            ]
        );
        assert_eq!(bond.mtu, Some(9000));
        let plain = parse_bond("bond0").unwrap();
        assert_eq!((plain.name.as_str(), plain.slaves.len()), ("bond0", 2));
        assert_eq!(parse_bond("bond1:eth2").unwrap().options[0].1, "balance-rr");
        for bad in [
            "bond0:eth0:mode",
            "bond0:eth0:=1",
            "bond0:eth0:mode=a b",
            "b:e:m=1:9:x",
            "bond0:eth0::1",
        ] {
            assert!(parse_bond(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_ifname("lan0:52:54:00:aa:bb:cc").unwrap().mac,
            [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]
        );
        assert!(parse_ifname("lan0:52:54").is_err());
        assert_eq!(
            parse_bootif("01-52-54-00-aa-bb-cc").unwrap(),
            [0x52, 0x54, 0, 0xaa, 0xbb, 0xcc]
        );
        assert!(parse_bootif("52-54-00-aa-bb").is_err());
        assert!(parse_bootif("06-52-54-00-aa-bb-cc").is_err());
        let route = parse_route("10.1.0.0/16:10.0.0.1:eth0").unwrap();
        assert_eq!(route.destination.to_string(), "10.1.0.0/16");
        let six = parse_route("[2001:db8:3::/48]:[2001:db8:2::1]").unwrap();
        assert_eq!(six.gateway, v4("2001:db8:2::1"));
        assert!(parse_route("10.1.0.0/16:[2001:db8::1]").is_err());
        assert!(parse_route("10.1.0.0:10.0.0.1").is_err());
        assert_eq!(
            parse_nameserver("[2001:db8::53]").unwrap(),
            v4("2001:db8::53")
        );
        assert!(parse_nameserver("dns.example").is_err());
        assert!(parse_ntp_server("ntp.example.com").is_ok());
        assert!(parse_ntp_server("a b").is_err());
    }
}

#[cfg(test)]
mod word_tests {
    use crate::cmdline::parse_words;

    fn refusal(words: &[&str]) -> String {
        let error = parse_words(words).unwrap_err();
        assert_eq!(
            crate::error::failure_of(&error),
            Some(crate::error::Failure::Usage),
            "{error:#}"
        );
        format!("{error:#}")
    }

    #[test]
    fn the_words_fill_the_network_words() {
        let words = parse_words(&[
            "ip=eth0:dhcp",
            "ip=eth0:dhcp6",
            "ip=[2001:db8::10]::[2001:db8::1]:64::eth1:none",
            "vlan=vlan100:bond0",
            "bond=bond0:eth2,eth3:mode=802.3ad,miimon=100,lacp_rate=fast",
            "ifname=lan0:52:54:00:12:34:56",
            "BOOTIF=01-52-54-00-12-34-57",
            "rd.route=10.10.0.0/16:10.0.0.1",
            "nameserver=10.0.0.53",
            "nameserver=[2001:db8::53]",
            "ocidd.ntp=10.0.0.123",
            "ocidd.ntp=ntp.example.com",
            "ocidd.net_timeout=30",
        ])
        .unwrap()
        .boot
        .network;
        assert_eq!(words.ip.len(), 3);
        assert_eq!(words.vlans[0].id, 100);
        assert_eq!(words.bonds[0].slaves, ["eth2", "eth3"]);
        assert_eq!(words.ifnames[0].name, "lan0");
        assert_eq!(words.bootif, Some([0x52, 0x54, 0, 0x12, 0x34, 0x57]));
        assert_eq!(words.routes.len(), 1);
        assert_eq!(words.nameservers.len(), 2);
        assert_eq!(words.ntp, ["10.0.0.123", "ntp.example.com"]);
        assert_eq!(words.timeout, Some(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn each_bad_value_is_one_line_naming_its_word() {
        for (words, word) in [
            (&["ip=teleport"][..], "ip="),
            (&["ip=10.0.0.5:::24::eth0:bogus"], "ip="),
            (&["vlan=vlan5000:eth0"], "vlan="),
            (&["vlan=eth0"], "vlan="),
            (&["bond=bond0:eth0:mode"], "bond="),
            (&["ifname=lan0:zz"], "ifname="),
            (&["BOOTIF=01-52-54"], "BOOTIF="),
            (
                &["BOOTIF=01-52-54-00-12-34-56", "BOOTIF=01-52-54-00-12-34-57"],
                "BOOTIF",
            ),
            (&["rd.route=10.0.0.0/8"], "rd.route="),
            (&["nameserver=dns.example"], "nameserver="),
            (&["ocidd.ntp=a b"], "ocidd.ntp="),
            (&["ocidd.net_timeout=0"], "ocidd.net_timeout="),
            (&["ip=off", "ip=eth0:dhcp"], "ip=off"),
            (&["ip=dhcp", "ip=dhcp6"], "ip="),
            (&["ip=eth0:dhcp", "ip=eth0:dhcp"], "ip="),
            (&["bond=bond0:eth0", "bond=bond1:eth0"], "bond="),
            (&["vlan"], "vlan"),
        ] {
            let text = refusal(words);
            assert!(
                text.contains(word.trim_end_matches('=')),
                "{words:?}: {text}"
            );
            assert!(!text.contains('\n'), "{words:?}: {text}");
        }
    }
}
