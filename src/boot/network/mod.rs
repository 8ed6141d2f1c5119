//! Bringing the network up as dracut's words describe it (Debian's kernels have no `ip=` of
//! their own): names from `ifname=`, bonds, VLANs, then on each interface to configure
//! DHCPv4, IPv6 (router advertisements, SLAAC, DHCPv6) or static addresses; routes, DNS;
//! and the NTP servers that were named, for the clock.
//!
//! Which interfaces: those `ip=` names; else the one `BOOTIF=` names (or the bond or VLAN
//! over it); else every NIC that is neither a bond's slave nor a VLAN's parent, and every
//! bond and VLAN. Without `ip=`, each gets DHCPv4 and IPv6 at once; the first interface with
//! an address wins, and the other family is given a moment to follow (dual stack).

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use rtnetlink::{Handle, RouteMessageBuilder};
use tokio::time::Instant;

use crate::cmdline::network::{IpSpec, Mac, Method, NetworkWords};
use crate::say;

mod dhcp4;
pub mod handoff;
mod ipv6;
mod links;
pub mod ntp;

use links::Link;

/// One round of asking: DHCP offers and router advertisements are waited for this long
/// before the console says so and asks again.
const ROUND: Duration = Duration::from_secs(15);
/// After one address family is up, how long the other may take to follow.
const FOLLOW: Duration = Duration::from_secs(5);
/// ... and how long when it has heard from its server or router already.
const FOLLOW_IN_PROGRESS: Duration = Duration::from_secs(20);
/// Duplicate address detection takes a second or two; a slow TCG guest, more.
const DAD_TIME: Duration = Duration::from_secs(10);

/// How an address that `ip=` gave came, in [`Configured::addresses`].
pub const STATIC: &str = "static, from ip=";

/// One interface as it was configured.
#[derive(Debug, Clone)]
pub struct Configured {
    pub interface: String,
    /// Each address, its prefix length, and how it came (`DHCP from 10.0.0.1`, `SLAAC`,
    /// `DHCPv6`, `static, from ip=`).
    pub addresses: Vec<(IpAddr, u8, String)>,
    pub gateways: Vec<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub ntp: Vec<String>,
}

/// What the network ended up as.
#[derive(Debug, Clone, Default)]
pub struct Network {
    pub interfaces: Vec<Configured>,
    /// The NTP servers to ask: `ocidd.ntp=`, then those DHCP named.
    pub ntp: Vec<String>,
}

impl Network {
    /// Every address in use, as `ADDR/PREFIX`.
    pub fn addresses(&self) -> Vec<String> {
        self.interfaces
            .iter()
            .flat_map(|i| i.addresses.iter().map(|(a, p, _)| format!("{a}/{p}")))
            .collect()
    }
}

/// What to do on one interface.
#[derive(Debug, Clone)]
struct Plan {
    link: Link,
    v4: Option<Family4>,
    v6: Option<Family6>,
    spec_dns: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
enum Family4 {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
}

#[derive(Debug, Clone)]
enum Family6 {
    /// What the router advertisements say: SLAAC, or DHCPv6 with the M flag.
    Auto,
    /// SLAAC only (`auto6`).
    Slaac,
    /// Stateful DHCPv6 (`dhcp6`).
    Dhcp6,
    /// SLAAC, else DHCPv6 (`either6`).
    Either,
    Static {
        address: Ipv6Addr,
        prefix: u8,
        gateway: Option<Ipv6Addr>,
    },
}

/// Brings the network up as `words` say; `None` for `ip=off`.
pub fn configure(words: &NetworkWords) -> Result<Option<Network>> {
    let timeout = words
        .timeout
        .unwrap_or(crate::cmdline::network::DEFAULT_NET_TIMEOUT);
    let off = words.ip.iter().any(|s| s.method == Method::Off);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the network runtime")?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(connection);
        // Also with ip=off: an image layout on the boot medium is served on loopback.
        if let Some(lo) = links::by_name("lo") {
            links::set_up(&handle, &lo).await.ok();
        }
        if off {
            return Ok(None);
        }
        let network = configure_with(&handle, words, timeout).await?;
        set_clock(&network).await;
        Ok(Some(network))
    })
}

/// Sets the clock from the first NTP server that answers, before anything speaks TLS.
async fn set_clock(network: &Network) {
    if network.ntp.is_empty() {
        return;
    }
    match ntp::sync(&network.ntp).await {
        Ok(ntp::Synced::Set { server, offset }) => say!(
            "ocidd: the clock was {} {}; set from {server} to {}",
            ntp::shown_offset(offset.abs()),
            if offset > 0.0 { "behind" } else { "ahead" },
            ntp::shown(std::time::SystemTime::now())
        ),
        Ok(ntp::Synced::Right { server, offset }) => {
            say!(
                "ocidd: the clock is right (within {:.1} s of {server})",
                offset.abs()
            )
        }
        Err(e) => say!(
            "ocidd: the clock ({}) is not checked: {e:#}",
            ntp::shown(std::time::SystemTime::now())
        ),
    }
}

async fn configure_with(
    handle: &Handle,
    words: &NetworkWords,
    timeout: Duration,
) -> Result<Network> {
    links::rename(handle, &words.ifnames).await?;
    // BOOTIF names the NIC by its own MAC: read before bonds give their slaves one MAC.
    let boot_nic = match words.bootif {
        Some(mac) => Some(links::nic_with_mac(&mac).map(|n| n.name).with_context(|| {
            format!(
                "BOOTIF={}: no NIC has that MAC address (NICs: {})",
                Mac(&mac),
                nic_list()
            )
        })?),
        None => None,
    };
    for bond in &words.bonds {
        let link = links::create_bond(handle, bond).await?;
        say!(
            "ocidd: {}: a bond of {} ({})",
            link.name,
            bond.slaves.join(", "),
            bond.options
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    for vlan in &words.vlans {
        let link = links::create_vlan(handle, vlan).await?;
        say!("ocidd: {}: VLAN {} on {}", link.name, vlan.id, vlan.parent);
    }
    let plans = plans(words, boot_nic.as_deref())?;
    for plan in &plans {
        let spec = words
            .ip
            .iter()
            .find(|s| s.interface.as_deref() == Some(plan.link.name.as_str()));
        if let Some(spec) = spec {
            links::set_mtu_and_mac(handle, &plan.link, spec.mtu, spec.mac).await?;
            if let Some(host) = &spec.hostname {
                rustix::system::sethostname(host.as_bytes()).ok();
            }
        }
        links::set_up(handle, &plan.link).await?;
    }
    // Interfaces that ip= names are each configured; of the others, the first to get an
    // address is used.
    let every = !words.ip.is_empty() && words.ip.iter().all(|s| s.interface.is_some());
    let ups = bring_up(handle, &plans, timeout, words, every).await?;
    let first = &ups[0];
    for route in &words.routes {
        let interface = match &route.interface {
            Some(name) => links::by_name(name)
                .with_context(|| format!("rd.route=: there is no interface {name}"))?,
            None => first.link.clone(),
        };
        add_route(
            handle,
            &interface,
            Some((route.destination.addr(), route.destination.prefix_len())),
            route.gateway,
        )
        .await
        .with_context(|| format!("rd.route={}", route.destination))?;
    }
    // Each server with the interface it was learned on: a link-local one (a router's RDNSS)
    // is reached through it.
    let mut dns: Vec<(IpAddr, &str)> = words.nameservers.iter().map(|s| (*s, "")).collect();
    let mut ntp = words.ntp.clone();
    for up in &ups {
        for server in up.setup.dns.iter().chain(&up.plan_dns) {
            if !dns.iter().any(|(known, _)| known == server) {
                dns.push((*server, &up.setup.interface));
            }
        }
        for server in &up.setup.ntp {
            if !ntp.contains(server) {
                ntp.push(server.clone());
            }
        }
    }
    if !dns.is_empty() {
        // musl's resolver reads the first three.
        let text: String = dns
            .iter()
            .map(|(server, interface)| match server {
                IpAddr::V6(v6) if v6.is_unicast_link_local() && !interface.is_empty() => {
                    format!("nameserver {v6}%{interface}\n")
                }
                other => format!("nameserver {other}\n"),
            })
            .collect();
        fs::create_dir_all("/etc").ok();
        fs::write("/etc/resolv.conf", text).context("writing /etc/resolv.conf")?;
    }
    Ok(Network {
        interfaces: ups.into_iter().map(|up| up.setup).collect(),
        ntp,
    })
}

fn nic_list() -> String {
    let list: Vec<String> = links::nics()
        .iter()
        .map(|n| format!("{} {}", n.name, Mac(&n.mac)))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

/// The interface a NIC's traffic goes out on: the bond it is a slave of, the VLAN on it (or
/// on its bond), or itself.
fn top_of(name: &str, words: &NetworkWords) -> String {
    let mut current = name.to_string();
    if let Some(bond) = words.bonds.iter().find(|b| b.slaves.contains(&current)) {
        current = bond.name.clone();
    }
    if let Some(vlan) = words.vlans.iter().find(|v| v.parent == current) {
        current = vlan.name.clone();
    }
    current
}

/// The interfaces to configure, and how.
fn plans(words: &NetworkWords, boot_nic: Option<&str>) -> Result<Vec<Plan>> {
    let named: Vec<&IpSpec> = words.ip.iter().filter(|s| s.interface.is_some()).collect();
    let general = words.ip.iter().find(|s| s.interface.is_none());
    let mut plans: Vec<Plan> = Vec::new();
    let plan_for = |name: &str, spec: Option<&IpSpec>, plans: &mut Vec<Plan>| -> Result<()> {
        let Some(link) = links::by_name(name) else {
            bail!(
                "ip= names {name}, which is not an interface here (interfaces: {})",
                nic_list()
            );
        };
        let index = match plans.iter().position(|p| p.link.name == name) {
            Some(index) => index,
            None => {
                plans.push(Plan {
                    link,
                    v4: None,
                    v6: None,
                    spec_dns: Vec::new(),
                });
                plans.len() - 1
            }
        };
        let plan = &mut plans[index];
        match spec {
            None => {
                plan.v4 = Some(Family4::Dhcp);
                plan.v6 = Some(Family6::Auto);
            }
            Some(spec) => {
                plan.spec_dns.extend(spec.dns.iter().copied());
                match (spec.method, spec.address) {
                    (Method::Dhcp, _) => plan.v4 = Some(Family4::Dhcp),
                    (Method::Dhcp6, _) => plan.v6 = Some(Family6::Dhcp6),
                    (Method::Auto6, _) => plan.v6 = Some(Family6::Slaac),
                    (Method::Either6, _) => plan.v6 = Some(Family6::Either),
                    (Method::Static, Some((IpAddr::V4(address), prefix))) => {
                        plan.v4 = Some(Family4::Static {
                            address,
                            prefix,
                            gateway: match spec.gateway {
                                Some(IpAddr::V4(g)) => Some(g),
                                _ => None,
                            },
                        })
                    }
                    (Method::Static, Some((IpAddr::V6(address), prefix))) => {
                        plan.v6 = Some(Family6::Static {
                            address,
                            prefix,
                            gateway: match spec.gateway {
                                Some(IpAddr::V6(g)) => Some(g),
                                _ => None,
                            },
                        })
                    }
                    (Method::Static | Method::Off, _) => {}
                }
            }
        }
        Ok(())
    };
    for spec in &named {
        plan_for(
            spec.interface.as_deref().unwrap_or_default(),
            Some(spec),
            &mut plans,
        )?;
    }
    if !named.is_empty() && general.is_none() {
        return Ok(plans);
    }
    let candidates: Vec<String> = match boot_nic {
        Some(nic) => vec![top_of(nic, words)],
        None => {
            let mut all: Vec<String> = links::nics()
                .into_iter()
                .map(|n| n.name)
                .filter(|n| !words.bonds.iter().any(|b| b.slaves.contains(n)))
                .filter(|n| !words.vlans.iter().any(|v| &v.parent == n))
                .collect();
            all.extend(
                words
                    .bonds
                    .iter()
                    .map(|b| b.name.clone())
                    .filter(|n| !words.vlans.iter().any(|v| &v.parent == n)),
            );
            all.extend(words.vlans.iter().map(|v| v.name.clone()));
            all
        }
    };
    let candidates: Vec<String> = candidates
        .into_iter()
        .filter(|c| !plans.iter().any(|p| &p.link.name == c))
        .collect();
    if candidates.is_empty() && plans.is_empty() {
        bail!("no Ethernet interface found (is the NIC's driver in the initramfs?)");
    }
    // A static address is for one interface: the first candidate.
    let static_general = general.is_some_and(|s| s.method == Method::Static);
    for name in candidates
        .iter()
        .take(if static_general { 1 } else { usize::MAX })
    {
        plan_for(name, general, &mut plans)?;
    }
    Ok(plans)
}

/// What one interface got.
struct Up {
    link: Link,
    setup: Configured,
    plan_dns: Vec<IpAddr>,
}

/// Tries every plan at once, round after round, until one interface has an address (with
/// `every`, until each tried once that round) or `timeout` passes. When nothing worked, the
/// error says what happened on each interface and which words would help.
async fn bring_up(
    handle: &Handle,
    plans: &[Plan],
    timeout: Duration,
    words: &NetworkWords,
    every: bool,
) -> Result<Vec<Up>> {
    let deadline = Instant::now() + timeout;
    let names = plans
        .iter()
        .map(|p| p.link.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let mut last: Vec<(String, String)>;
    loop {
        let round_end = (Instant::now() + ROUND).min(deadline);
        // Links take a moment to come up after the driver loads, a bond until its slaves do.
        let linked = loop {
            let linked: Vec<&Plan> = plans
                .iter()
                .filter(|p| links::has_carrier(&p.link.name))
                .collect();
            if !linked.is_empty() || Instant::now() + Duration::from_secs(5) >= round_end {
                break linked;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        last = plans
            .iter()
            .filter(|p| !links::has_carrier(&p.link.name))
            .map(|p| (p.link.name.clone(), "no link".to_string()))
            .collect();
        if linked.is_empty() {
            say!("ocidd: no network link on {names}; waiting");
        } else {
            let asking: Vec<String> = linked.iter().map(|p| describe(p)).collect();
            say!("ocidd: configuring {}", asking.join("; "));
            let mut attempts: FuturesUnordered<_> = linked
                .iter()
                .map(|plan| async move { (plan, attempt(handle, plan, round_end).await) })
                .collect();
            let mut ups = Vec::new();
            while let Some((plan, outcome)) = attempts.next().await {
                match outcome {
                    Ok(setup) => {
                        for line in setup_lines(&setup) {
                            say!("ocidd: {line}");
                        }
                        ups.push(Up {
                            link: plan.link.clone(),
                            setup,
                            plan_dns: plan.spec_dns.clone(),
                        });
                        if !every {
                            break;
                        }
                    }
                    Err(why) => last.push((plan.link.name.clone(), why)),
                }
            }
            if !ups.is_empty() {
                for (name, why) in &last {
                    say!("ocidd: {name}: {why}");
                }
                return Ok(ups);
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        let summary: Vec<String> = last.iter().map(|(n, w)| format!("{n}: {w}")).collect();
        say!(
            "ocidd: no address yet ({}; {} s left); trying again",
            summary.join("; "),
            deadline.saturating_duration_since(Instant::now()).as_secs()
        );
        tokio::time::sleep_until(
            round_end
                .max(Instant::now() + Duration::from_secs(1))
                .min(deadline),
        )
        .await;
    }
    let summary: Vec<String> = last.iter().map(|(n, w)| format!("{n}: {w}")).collect();
    let mut hints = Vec::new();
    if words.vlans.is_empty() {
        hints.push("vlan=NAME:PARENT for a tagged VLAN");
    }
    if words.bonds.is_empty() {
        hints.push("bond= for an LACP trunk");
    }
    if words.bootif.is_none() && links::nics().len() > 1 {
        hints.push("BOOTIF= for the NIC the machine booted from");
    }
    hints.push("a static ip=");
    bail!(
        "no interface got an address in {} s ({}); check the cable, the switch port and the DHCP server, or give {}",
        timeout.as_secs(),
        summary.join("; "),
        hints.join(", ")
    )
}

/// What a plan will try, for the console.
fn describe(plan: &Plan) -> String {
    let mut what = Vec::new();
    match &plan.v4 {
        Some(Family4::Dhcp) => what.push("DHCP".to_string()),
        Some(Family4::Static {
            address, prefix, ..
        }) => what.push(format!("{address}/{prefix}")),
        None => {}
    }
    match &plan.v6 {
        Some(Family6::Auto) => what.push("IPv6".into()),
        Some(Family6::Slaac) => what.push("SLAAC".into()),
        Some(Family6::Dhcp6) => what.push("DHCPv6".into()),
        Some(Family6::Either) => what.push("SLAAC or DHCPv6".into()),
        Some(Family6::Static {
            address, prefix, ..
        }) => what.push(format!("{address}/{prefix}")),
        None => {}
    }
    format!("{} ({})", plan.link.name, what.join(", "))
}

fn setup_lines(setup: &Configured) -> Vec<String> {
    let mut lines = Vec::new();
    for (address, prefix, how) in &setup.addresses {
        lines.push(format!("{}: {address}/{prefix} ({how})", setup.interface));
    }
    if !setup.gateways.is_empty() {
        let list: Vec<String> = setup.gateways.iter().map(|g| g.to_string()).collect();
        lines.push(format!(
            "{}: default via {}",
            setup.interface,
            list.join(", ")
        ));
    }
    if !setup.dns.is_empty() {
        let list: Vec<String> = setup.dns.iter().map(|g| g.to_string()).collect();
        lines.push(format!("{}: DNS {}", setup.interface, list.join(" ")));
    }
    lines
}

/// One family's result on one interface.
struct FamilyUp {
    addresses: Vec<(IpAddr, u8, String)>,
    gateway: Option<IpAddr>,
    dns: Vec<IpAddr>,
    ntp: Vec<String>,
}

/// Both families on one interface, until `round_end`. Succeeds when one family is up; the
/// other gets [`FOLLOW`] more (longer when it has heard from its server or router).
async fn attempt(handle: &Handle, plan: &Plan, round_end: Instant) -> Result<Configured, String> {
    let heard6 = Arc::new(AtomicBool::new(false));
    let v4 = async {
        match &plan.v4 {
            None => None,
            Some(family) => Some(up4(handle, &plan.link, family, round_end).await),
        }
    };
    let v6 = async {
        match &plan.v6 {
            None => None,
            Some(family) => Some(up6(handle, &plan.link, family, round_end, &heard6).await),
        }
    };
    tokio::pin!(v4, v6);
    let (mut r4, mut r6) = (None, None);
    let (mut done4, mut done6) = (false, false);
    let mut follow_until: Option<Instant> = None;
    while !(done4 && done6) {
        let limit = follow_until.unwrap_or(round_end + Duration::from_secs(3600));
        tokio::select! {
            result = &mut v4, if !done4 => { r4 = result; done4 = true; }
            result = &mut v6, if !done6 => { r6 = result; done6 = true; }
            _ = tokio::time::sleep_until(limit) => break,
        }
        let up = matches!(r4, Some(Ok(_))) || matches!(r6, Some(Ok(_)));
        if up && follow_until.is_none() {
            let follow = if !done6 && heard6.load(Ordering::Relaxed) {
                FOLLOW_IN_PROGRESS
            } else {
                FOLLOW
            };
            follow_until = Some(Instant::now() + follow);
        }
    }
    let mut setup = Configured {
        interface: plan.link.name.clone(),
        addresses: Vec::new(),
        gateways: Vec::new(),
        dns: Vec::new(),
        ntp: Vec::new(),
    };
    let mut failures = Vec::new();
    for result in [r4, r6].into_iter().flatten() {
        match result {
            Ok(up) => {
                setup.addresses.extend(up.addresses);
                setup.gateways.extend(up.gateway);
                setup.dns.extend(up.dns);
                setup.ntp.extend(up.ntp);
            }
            Err(why) => failures.push(why),
        }
    }
    if setup.addresses.is_empty() {
        if failures.is_empty() {
            failures.push("no answer".into());
        }
        return Err(failures.join(", "));
    }
    for why in failures {
        say!("ocidd: {}: {why}", plan.link.name);
    }
    Ok(setup)
}

async fn up4(
    handle: &Handle,
    link: &Link,
    family: &Family4,
    round_end: Instant,
) -> Result<FamilyUp, String> {
    let (address, prefix, gateway, dns, ntp, how) = match family {
        Family4::Static {
            address,
            prefix,
            gateway,
        } => (
            *address,
            *prefix,
            *gateway,
            Vec::new(),
            Vec::new(),
            STATIC.to_string(),
        ),
        Family4::Dhcp => {
            let budget = round_end.saturating_duration_since(Instant::now());
            // The outermost context alone: "no DHCP offer".
            let lease = dhcp4::lease(&link.name, link.mac, budget)
                .await
                .map_err(|e| format!("{e}"))?;
            (
                lease.address,
                lease.prefix,
                lease.router,
                lease.dns.iter().map(|d| IpAddr::V4(*d)).collect(),
                lease.ntp.iter().map(|n| n.to_string()).collect(),
                format!("DHCP from {}", lease.server),
            )
        }
    };
    handle
        .address()
        .add(link.index, IpAddr::V4(address), prefix)
        .execute()
        .await
        .map_err(|e| format!("adding {address}/{prefix}: {e}"))?;
    if let Some(gateway) = gateway {
        add_route(handle, link, None, IpAddr::V4(gateway))
            .await
            .map_err(|e| format!("{e:#}"))?;
    }
    Ok(FamilyUp {
        addresses: vec![(IpAddr::V4(address), prefix, how)],
        gateway: gateway.map(IpAddr::V4),
        dns,
        ntp,
    })
}

async fn add_route(
    handle: &Handle,
    link: &Link,
    destination: Option<(IpAddr, u8)>,
    gateway: IpAddr,
) -> Result<()> {
    let message = match (gateway, destination) {
        (IpAddr::V4(gateway), destination) => {
            let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
                .output_interface(link.index)
                .gateway(gateway);
            if let Some((IpAddr::V4(network), prefix)) = destination {
                route = route.destination_prefix(network, prefix);
            }
            route.build()
        }
        (IpAddr::V6(gateway), destination) => {
            let mut route = RouteMessageBuilder::<Ipv6Addr>::new()
                .output_interface(link.index)
                .gateway(gateway);
            if let Some((IpAddr::V6(network), prefix)) = destination {
                route = route.destination_prefix(network, prefix);
            }
            route.build()
        }
    };
    handle
        .route()
        .add(message)
        .replace()
        .execute()
        .await
        .with_context(|| format!("adding a route via {gateway} on {}", link.name))
}

/// Waits until `address` on `link` has passed duplicate address detection.
async fn wait_usable(handle: &Handle, link: &Link, address: Ipv6Addr) -> Result<(), String> {
    let found = links::wait_for_address(handle, link, DAD_TIME, |a| {
        a.address == IpAddr::V6(address) && !a.tentative
    })
    .await
    .map_err(|e| format!("{e:#}"))?;
    match found {
        Ok(_) => Ok(()),
        Err(list) => {
            let duplicate = list
                .iter()
                .any(|a| a.address == IpAddr::V6(address) && a.duplicate);
            Err(if duplicate {
                format!("{address} is in use by another host (duplicate address detection)")
            } else {
                format!("{address} stayed tentative for {} s", DAD_TIME.as_secs())
            })
        }
    }
}

async fn up6(
    handle: &Handle,
    link: &Link,
    family: &Family6,
    round_end: Instant,
    heard: &AtomicBool,
) -> Result<FamilyUp, String> {
    let mut up = FamilyUp {
        addresses: Vec::new(),
        gateway: None,
        dns: Vec::new(),
        ntp: Vec::new(),
    };
    if let Family6::Static {
        address,
        prefix,
        gateway,
    } = family
    {
        handle
            .address()
            .add(link.index, IpAddr::V6(*address), *prefix)
            .execute()
            .await
            .map_err(|e| format!("adding {address}/{prefix}: {e}"))?;
        wait_usable(handle, link, *address).await?;
        if let Some(gateway) = gateway {
            add_route(handle, link, None, IpAddr::V6(*gateway))
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
        up.addresses
            .push((IpAddr::V6(*address), *prefix, STATIC.into()));
        up.gateway = gateway.map(IpAddr::V6);
        return Ok(up);
    }
    // Router solicitations and DHCPv6 go out from the link-local address, once it is usable.
    let link_local = links::wait_for_address(handle, link, DAD_TIME, |a| {
        a.address.is_ipv6() && a.link_local && !a.tentative
    })
    .await
    .map_err(|e| format!("{e:#}"))?;
    if let Err(list) = link_local {
        return Err(
            match list.iter().find(|a| a.address.is_ipv6() && a.link_local) {
                Some(a) if a.duplicate => format!(
                    "the link-local address {} is in use by another host",
                    a.address
                ),
                Some(a) => format!("the link-local address {} stayed tentative", a.address),
                None => "no IPv6 link-local address (is IPv6 disabled?)".to_string(),
            },
        );
    }
    let advertisement = ipv6::solicit(&link.name, link.index, link.mac, round_end)
        .await
        .map_err(|e| format!("{e:#}"))?;
    if advertisement.is_some() {
        heard.store(true, Ordering::Relaxed);
    }
    let stateful = match (family, &advertisement) {
        (Family6::Dhcp6, _) => true,
        (_, None) => return Err("no router advertisement".into()),
        (Family6::Slaac, Some(ra)) if ra.autonomous.is_empty() => {
            return Err("the router advertisement offers no prefix for SLAAC (auto6); its network may need dhcp6".into());
        }
        (Family6::Slaac, _) => false,
        (Family6::Either, Some(ra)) => ra.autonomous.is_empty(),
        (_, Some(ra)) => ra.managed || ra.autonomous.is_empty(),
    };
    if let Some(ra) = &advertisement {
        up.dns.extend(ra.dns.iter().map(|d| IpAddr::V6(*d)));
        up.gateway = ra.router.map(IpAddr::V6);
    }
    if stateful {
        let lease = ipv6::lease(&link.name, link.index, link.mac, true, round_end)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let address = lease.address.ok_or("the DHCPv6 server gave no address")?;
        // The prefix is the on-link one the router advertised (the kernel's own SLAAC
        // addresses are /64 too); without one, the address alone.
        let prefix = advertisement
            .as_ref()
            .and_then(|ra| {
                ra.on_link.iter().find(|(network, length)| {
                    ipnet::Ipv6Net::new(*network, *length)
                        .map(|n| n.contains(&address))
                        .unwrap_or(false)
                })
            })
            .map_or(128, |(_, length)| *length);
        handle
            .address()
            .add(link.index, IpAddr::V6(address), prefix)
            .execute()
            .await
            .map_err(|e| format!("adding {address}/{prefix}: {e}"))?;
        wait_usable(handle, link, address).await?;
        up.addresses
            .push((IpAddr::V6(address), prefix, "DHCPv6".into()));
        extend_unique(&mut up.dns, lease.dns.iter().map(|d| IpAddr::V6(*d)));
        up.ntp.extend(lease.ntp);
        return Ok(up);
    }
    // SLAAC: the kernel makes the address from the advertised prefix; wait until it is usable.
    let prefixes = advertisement
        .as_ref()
        .map(|ra| ra.autonomous.clone())
        .unwrap_or_default();
    let in_prefix = |a: &links::Address| match a.address {
        IpAddr::V6(v6) => prefixes.iter().any(|(network, length)| {
            ipnet::Ipv6Net::new(*network, *length)
                .map(|n| n.contains(&v6))
                .unwrap_or(false)
        }),
        IpAddr::V4(_) => false,
    };
    let found = links::wait_for_address(handle, link, DAD_TIME, |a| in_prefix(a) && !a.tentative)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let address = match found {
        Ok(address) => address,
        Err(list) => {
            return Err(match list.iter().find(|a| in_prefix(a)) {
                Some(a) if a.duplicate => format!("{} is in use by another host", a.address),
                Some(a) => format!(
                    "{} stayed tentative for {} s",
                    a.address,
                    DAD_TIME.as_secs()
                ),
                None => "the router advertised a prefix, but no SLAAC address appeared".into(),
            });
        }
    };
    up.addresses
        .push((address.address, address.prefix, "SLAAC".into()));
    // DNS from DHCPv6 when the router says to ask (the O flag) or named none itself.
    let other = advertisement.as_ref().is_some_and(|ra| ra.other);
    if other || up.dns.is_empty() {
        let ask_until = (Instant::now() + Duration::from_secs(4)).min(round_end);
        if let Ok(lease) = ipv6::lease(&link.name, link.index, link.mac, false, ask_until).await {
            extend_unique(&mut up.dns, lease.dns.iter().map(|d| IpAddr::V6(*d)));
            up.ntp.extend(lease.ntp);
        }
    }
    Ok(up)
}

/// A DHCP transaction id: random, or the clock's nanoseconds when the kernel has no
/// randomness to give yet.
fn transaction_id<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    if rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() ^ std::process::id())
            .unwrap_or(0)
            .to_be_bytes();
        for (byte, noise) in bytes.iter_mut().zip(nanos.iter().cycle()) {
            *byte = *noise;
        }
    }
    bytes
}

fn extend_unique(list: &mut Vec<IpAddr>, more: impl Iterator<Item = IpAddr>) {
    for item in more {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}
