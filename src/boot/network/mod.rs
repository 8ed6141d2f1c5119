//! Bringing the network up without the kernel's `ip=` (Debian's kernels lack it): links up,
//! DHCP on the interfaces that have a link (first lease wins) or the static `ip=` form, then
//! address, default route and DNS.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::future::select_ok;
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};

mod dhcp4;

use dhcp4::Lease;
use crate::say;

/// How the network is to be configured, from the kernel's `ip=` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpParam {
    /// No network configuration.
    Off,
    /// DHCP, on one interface or on all with a link.
    Dhcp { interface: Option<String> },
    /// `ip=ADDR:SERVER:GW:MASK:HOST:IFACE:off:DNS0:DNS1`
    Static(StaticIp),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticIp {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub interface: Option<String>,
    pub dns: Vec<Ipv4Addr>,
}

/// Parses the kernel's `ip=` value (absent means DHCP).
pub fn parse_ip_param(value: Option<&str>) -> Result<IpParam, String> {
    let Some(value) = value else {
        return Ok(IpParam::Dhcp { interface: None });
    };
    if !value.contains(':') {
        return match value {
            "off" | "none" => Ok(IpParam::Off),
            "dhcp" | "on" | "any" | "both" | "bootp" | "rarp" | "" => {
                Ok(IpParam::Dhcp { interface: None })
            }
            _ => Err(format!(
                "ip={value} is not supported (use ip=dhcp, ip=off or ip=ADDR::GW:MASK::IFACE:off)"
            )),
        };
    }
    let fields: Vec<&str> = value.split(':').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or("").trim();
    let ip = |i: usize, what: &str| -> Result<Option<Ipv4Addr>, String> {
        match field(i) {
            "" => Ok(None),
            text => text
                .parse()
                .map(Some)
                .map_err(|_| format!("ip=: {what} {text:?} is not an IPv4 address")),
        }
    };
    let interface = Some(field(5)).filter(|s| !s.is_empty()).map(str::to_string);
    let autoconf = field(6);
    let address = ip(0, "the address")?;
    let dhcp = matches!(autoconf, "dhcp" | "on" | "any" | "both" | "bootp" | "rarp");
    if dhcp || (address.is_none() && autoconf.is_empty()) {
        return Ok(IpParam::Dhcp { interface });
    }
    if !matches!(autoconf, "" | "off" | "none" | "static") {
        return Err(format!(
            "ip=: autoconfiguration {autoconf:?} is not supported"
        ));
    }
    let address =
        address.ok_or_else(|| "ip=: a static configuration needs an address".to_string())?;
    let prefix = match ip(3, "the netmask")? {
        Some(mask) if u32::from(mask).leading_ones() == u32::from(mask).count_ones() => {
            u32::from(mask).leading_ones() as u8
        }
        Some(mask) => return Err(format!("ip=: netmask {mask} is not contiguous")),
        None => match address.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    };
    let dns = [ip(7, "the DNS server")?, ip(8, "the DNS server")?]
        .into_iter()
        .flatten()
        .collect();
    Ok(IpParam::Static(StaticIp {
        address,
        prefix,
        gateway: ip(2, "the gateway")?,
        interface,
        dns,
    }))
}

/// A network interface that can carry the install.
#[derive(Debug, Clone)]
struct Interface {
    name: String,
    index: u32,
    mac: [u8; 6],
}

/// The Ethernet interfaces, from /sys/class/net.
fn interfaces() -> Vec<Interface> {
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut found: Vec<Interface> = entries
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
            // ARPHRD_ETHER
            if read("type")?.trim() != "1" {
                return None;
            }
            let index = read("ifindex")?.trim().parse().ok()?;
            let mut mac = [0u8; 6];
            let text = read("address")?;
            let octets: Vec<u8> = text
                .trim()
                .split(':')
                .filter_map(|h| u8::from_str_radix(h, 16).ok())
                .collect();
            if octets.len() != 6 {
                return None;
            }
            mac.copy_from_slice(&octets);
            Some(Interface {
                name: entry.file_name().to_string_lossy().into_owned(),
                index,
                mac,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

fn has_carrier(name: &str) -> bool {
    fs::read_to_string(Path::new("/sys/class/net").join(name).join("carrier"))
        .map(|c| c.trim() == "1")
        .unwrap_or(false)
}

/// What the network ended up as, for the console.
#[derive(Debug)]
pub struct Configured {
    pub interface: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub how: String,
}

/// Rounds of DHCP before giving up: about two minutes, to ride out a switch port that is
/// still coming up (spanning tree) or a DHCP server that is slow to answer.
const DHCP_ROUNDS: u32 = 8;
const DHCP_ROUND: Duration = Duration::from_secs(15);

/// Configures the network as `param` says.
pub fn configure(param: &IpParam) -> Result<Option<Configured>> {
    if *param == IpParam::Off {
        return Ok(None);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(connection);
        set_up(&handle, 1).await.ok(); // lo
        match param {
            IpParam::Off => Ok(None),
            IpParam::Static(config) => configure_static(&handle, config).await.map(Some),
            IpParam::Dhcp { interface } => configure_dhcp(&handle, interface.as_deref())
                .await
                .map(Some),
        }
    })
}

async fn set_up(handle: &Handle, index: u32) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .context("bringing the link up")
}

fn chosen(interface: Option<&str>) -> Result<Vec<Interface>> {
    let all = interfaces();
    let chosen: Vec<Interface> = match interface {
        Some(name) => all.into_iter().filter(|i| i.name == name).collect(),
        None => all,
    };
    if chosen.is_empty() {
        match interface {
            Some(name) => bail!("no network interface {name} (ip= names it)"),
            None => bail!("no Ethernet interface found (is the NIC's driver in the initramfs?)"),
        }
    }
    Ok(chosen)
}

async fn apply(
    handle: &Handle,
    interface: &Interface,
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dns: &[Ipv4Addr],
) -> Result<()> {
    handle
        .address()
        .add(interface.index, IpAddr::V4(address), prefix)
        .execute()
        .await
        .with_context(|| format!("adding {address}/{prefix} to {}", interface.name))?;
    if let Some(gateway) = gateway {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .output_interface(interface.index)
            .gateway(gateway)
            .build();
        handle
            .route()
            .add(route)
            .execute()
            .await
            .with_context(|| format!("adding the default route via {gateway}"))?;
    }
    if !dns.is_empty() {
        let text: String = dns.iter().map(|s| format!("nameserver {s}\n")).collect();
        fs::create_dir_all("/etc").ok();
        fs::write("/etc/resolv.conf", text).context("writing /etc/resolv.conf")?;
    }
    Ok(())
}

async fn configure_static(handle: &Handle, config: &StaticIp) -> Result<Configured> {
    let interfaces = chosen(config.interface.as_deref())?;
    let interface = &interfaces[0];
    set_up(handle, interface.index).await?;
    apply(
        handle,
        interface,
        config.address,
        config.prefix,
        config.gateway,
        &config.dns,
    )
    .await?;
    Ok(Configured {
        interface: interface.name.clone(),
        address: config.address,
        prefix: config.prefix,
        gateway: config.gateway,
        dns: config.dns.clone(),
        how: "static, from ip=".into(),
    })
}

async fn configure_dhcp(handle: &Handle, interface: Option<&str>) -> Result<Configured> {
    let candidates = chosen(interface)?;
    for candidate in &candidates {
        set_up(handle, candidate.index).await?;
    }
    let names = |list: &[Interface]| {
        list.iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    for round in 1..=DHCP_ROUNDS {
        // Links take a moment to come up after the driver loads.
        let mut linked = Vec::new();
        for _ in 0..50 {
            linked = candidates
                .iter()
                .filter(|i| has_carrier(&i.name))
                .cloned()
                .collect();
            if !linked.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if linked.is_empty() {
            say!(
                "ocidd: no network link on {} (round {round} of {DHCP_ROUNDS}); waiting",
                names(&candidates)
            );
            tokio::time::sleep(DHCP_ROUND / 3).await;
            continue;
        }
        say!("ocidd: asking for a DHCP lease on {}", names(&linked));
        let attempts = linked.iter().map(|i| {
            let i = i.clone();
            Box::pin(async move {
                match dhcp4::lease(&i.name, i.mac, DHCP_ROUND).await {
                    Ok(lease) => Ok((i, lease)),
                    Err(e) => Err(anyhow!("{}: {e:#}", i.name)),
                }
            })
        });
        match select_ok(attempts).await {
            Ok(((interface, lease), _)) => return use_lease(handle, &interface, &lease).await,
            Err(e) => {
                say!("ocidd: no DHCP lease yet ({e:#}; round {round} of {DHCP_ROUNDS}); retrying")
            }
        }
    }
    bail!(
        "no DHCP lease on {} after {DHCP_ROUNDS} rounds; check the cable, the switch port and the DHCP server, or give a static ip=ADDR::GW:MASK::IFACE:off",
        names(&candidates)
    )
}

async fn use_lease(handle: &Handle, interface: &Interface, lease: &Lease) -> Result<Configured> {
    apply(
        handle,
        interface,
        lease.address,
        lease.prefix,
        lease.router,
        &lease.dns,
    )
    .await?;
    Ok(Configured {
        interface: interface.name.clone(),
        address: lease.address,
        prefix: lease.prefix,
        gateway: lease.router,
        dns: lease.dns.clone(),
        how: format!("DHCP from {}", lease.server),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_parameter_forms() {
        assert_eq!(parse_ip_param(None), Ok(IpParam::Dhcp { interface: None }));
        assert_eq!(
            parse_ip_param(Some("dhcp")),
            Ok(IpParam::Dhcp { interface: None })
        );
        assert_eq!(parse_ip_param(Some("off")), Ok(IpParam::Off));
        assert_eq!(
            parse_ip_param(Some(":::::eth1:dhcp")),
            Ok(IpParam::Dhcp {
                interface: Some("eth1".into())
            })
        );
        assert_eq!(
            parse_ip_param(Some(
                "192.168.1.20::192.168.1.1:255.255.255.0::eth0:off:192.168.1.53"
            )),
            Ok(IpParam::Static(StaticIp {
                address: Ipv4Addr::new(192, 168, 1, 20),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(192, 168, 1, 1)),
                interface: Some("eth0".into()),
                dns: vec![Ipv4Addr::new(192, 168, 1, 53)],
            }))
        );
        let IpParam::Static(s) = parse_ip_param(Some("10.1.2.3::::::off")).unwrap() else {
            panic!()
        };
        assert_eq!((s.prefix, s.gateway, s.interface), (8, None, None));
        assert!(parse_ip_param(Some("10.1.2::::::off")).is_err());
        assert!(parse_ip_param(Some("10.1.2.3:::255.0.255.0:::off")).is_err());
        assert!(parse_ip_param(Some("fancy")).is_err());
        assert!(parse_ip_param(Some("10.1.2.3::::::auto6")).is_err());
    }
}
