//! `ocidd.copy_network`: the network /init configured, handed to the installed system as
//! NoCloud `network-config` version 2 (netplan's schema, which cloud-init reads whatever it
//! renders to). Each NIC is matched by its own MAC, so the installed system's names for it do
//! not matter; bonds and VLANs keep /init's names; addresses `ip=` gave are written as they
//! are, with their gateways, `rd.route=` routes and the nameservers given; an address that
//! came by DHCP or from router advertisements is written as "ask again" (`dhcp4`, `dhcp6`),
//! not pinned to a lease.
//!
//! Written as JSON, which is YAML too: serde_json quotes and escapes every value, so no
//! interface name or option can change the document's shape.

use std::collections::BTreeMap;
use std::net::IpAddr;

use anyhow::{Result, bail};
use serde_json::{Map, Value, json};

use super::{Configured, Network, STATIC, links};
use crate::cmdline::network::{Bond, Mac, NetworkWords};

/// The document for the network /init configured, NICs matched by their own MACs.
pub fn for_network(network: &Network, words: &NetworkWords) -> Result<String> {
    network_config(&network.interfaces, words, links::own_mac)
}

/// The document for `interfaces` (as configured, the first one first), the words that made
/// them, and each NIC's own MAC as `mac_of` reads it.
pub fn network_config(
    interfaces: &[Configured],
    words: &NetworkWords,
    mac_of: impl Fn(&str) -> Option<[u8; 6]>,
) -> Result<String> {
    let mut ethernets = Map::new();
    let mut bonds = Map::new();
    let mut vlans = Map::new();
    let is_bond = |name: &str| words.bonds.iter().any(|b| b.name == name);
    let is_vlan = |name: &str| words.vlans.iter().any(|v| v.name == name);
    let nic = |name: &str, ethernets: &mut Map<String, Value>| -> Result<()> {
        if is_bond(name) || is_vlan(name) || ethernets.contains_key(name) {
            return Ok(());
        }
        let Some(mac) = mac_of(name) else {
            bail!("ocidd.copy_network: {name} has no MAC address to match it by");
        };
        let mut entry = Map::new();
        entry.insert(
            "match".into(),
            json!({ "macaddress": Mac(&mac).to_string() }),
        );
        ethernets.insert(name.to_string(), Value::Object(entry));
        Ok(())
    };

    for bond in &words.bonds {
        for member in &bond.slaves {
            nic(member, &mut ethernets)?;
        }
        let mut entry = Map::new();
        entry.insert("interfaces".into(), json!(bond.slaves));
        let parameters = bond_parameters(bond)?;
        if !parameters.is_empty() {
            entry.insert("parameters".into(), Value::Object(parameters));
        }
        if let Some(mtu) = bond.mtu {
            entry.insert("mtu".into(), json!(mtu));
        }
        bonds.insert(bond.name.clone(), Value::Object(entry));
    }
    for vlan in &words.vlans {
        nic(&vlan.parent, &mut ethernets)?;
        vlans.insert(
            vlan.name.clone(),
            json!({ "id": vlan.id, "link": vlan.parent }),
        );
    }

    for (position, configured) in interfaces.iter().enumerate() {
        let name = configured.interface.as_str();
        nic(name, &mut ethernets)?;
        let section = if is_bond(name) {
            &mut bonds
        } else if is_vlan(name) {
            &mut vlans
        } else {
            &mut ethernets
        };
        let Some(Value::Object(entry)) = section.get_mut(name) else {
            continue;
        };
        let spec = words
            .ip
            .iter()
            .find(|s| s.interface.as_deref() == Some(name))
            .or_else(|| words.ip.iter().find(|s| s.interface.is_none()));
        let mut addresses = Vec::new();
        let (mut static4, mut static6) = (false, false);
        for (address, prefix, how) in &configured.addresses {
            match (address, how.as_str() == STATIC) {
                (IpAddr::V4(_), true) => static4 = true,
                (IpAddr::V6(_), true) => static6 = true,
                (IpAddr::V4(_), false) => {
                    entry.insert("dhcp4".into(), json!(true));
                    continue;
                }
                (IpAddr::V6(_), false) => {
                    entry.insert("dhcp6".into(), json!(true));
                    continue;
                }
            }
            addresses.push(format!("{address}/{prefix}"));
        }
        if !addresses.is_empty() {
            entry.insert("addresses".into(), json!(addresses));
        }
        let mut routes: Vec<Value> = configured
            .gateways
            .iter()
            .filter(|g| match g {
                IpAddr::V4(_) => static4,
                IpAddr::V6(_) => static6,
            })
            .map(|g| {
                let to = if g.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                json!({ "to": to, "via": g.to_string() })
            })
            .collect();
        routes.extend(
            words
                .routes
                .iter()
                .filter(|r| r.interface.as_deref().unwrap_or(first(interfaces)) == name)
                .map(|r| json!({ "to": r.destination.to_string(), "via": r.gateway.to_string() })),
        );
        if !routes.is_empty() {
            entry.insert("routes".into(), json!(routes));
        }
        let mut nameservers: Vec<String> = spec
            .map(|s| s.dns.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        if position == 0 {
            for server in &words.nameservers {
                let server = server.to_string();
                if !nameservers.contains(&server) {
                    nameservers.push(server);
                }
            }
        }
        if !nameservers.is_empty() {
            entry.insert("nameservers".into(), json!({ "addresses": nameservers }));
        }
        if let Some(mtu) = spec.and_then(|s| s.mtu) {
            entry.insert("mtu".into(), json!(mtu));
        }
    }

    let mut document = Map::new();
    document.insert("version".into(), json!(2));
    for (key, section) in [("ethernets", ethernets), ("bonds", bonds), ("vlans", vlans)] {
        if !section.is_empty() {
            document.insert(key.into(), Value::Object(section));
        }
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(document))?;
    text.push('\n');
    Ok(text)
}

fn first(interfaces: &[Configured]) -> &str {
    interfaces.first().map_or("", |i| i.interface.as_str())
}

/// The kernel's bonding options (as `bond=` gives them) by netplan's names.
fn bond_parameters(bond: &Bond) -> Result<Map<String, Value>> {
    let names: BTreeMap<&str, &str> = [
        ("mode", "mode"),
        ("miimon", "mii-monitor-interval"),
        ("lacp_rate", "lacp-rate"),
        ("xmit_hash_policy", "transmit-hash-policy"),
        ("primary", "primary"),
        ("primary_reselect", "primary-reselect-policy"),
        ("updelay", "up-delay"),
        ("downdelay", "down-delay"),
        ("arp_interval", "arp-interval"),
        ("arp_ip_target", "arp-ip-targets"),
        ("arp_validate", "arp-validate"),
        ("arp_all_targets", "arp-all-targets"),
        ("ad_select", "ad-select"),
        ("fail_over_mac", "fail-over-mac-policy"),
        ("min_links", "min-links"),
        ("resend_igmp", "resend-igmp"),
    ]
    .into_iter()
    .collect();
    let mut parameters = Map::new();
    for (key, value) in &bond.options {
        let Some(name) = names.get(key.as_str()) else {
            bail!(
                "ocidd.copy_network: bond {}'s option {key} has no netplan equivalent",
                bond.name
            );
        };
        let value = match (key.as_str(), value.as_str()) {
            ("mode", mode) => json!(bond_mode(mode)),
            ("lacp_rate", "0") => json!("slow"),
            ("lacp_rate", "1") => json!("fast"),
            ("arp_ip_target", targets) => json!(
                targets
                    .split([',', ';'])
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            ),
            (_, number) if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => {
                json!(number.parse::<u64>().unwrap_or_default())
            }
            (_, text) => json!(text),
        };
        parameters.insert((*name).to_string(), value);
    }
    Ok(parameters)
}

/// A bonding mode by name, as netplan wants it (the kernel also takes its number).
fn bond_mode(mode: &str) -> &str {
    match mode {
        "0" => "balance-rr",
        "1" => "active-backup",
        "2" => "balance-xor",
        "3" => "broadcast",
        "4" => "802.3ad",
        "5" => "balance-tlb",
        "6" => "balance-alb",
        name => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::network::{parse_bond, parse_ip, parse_route, parse_vlan};

    fn configured(name: &str, addresses: &[(&str, u8, &str)], gateways: &[&str]) -> Configured {
        Configured {
            interface: name.to_string(),
            addresses: addresses
                .iter()
                .map(|(a, p, how)| (a.parse().unwrap(), *p, how.to_string()))
                .collect(),
            gateways: gateways.iter().map(|g| g.parse().unwrap()).collect(),
            dns: Vec::new(),
            ntp: Vec::new(),
        }
    }

    fn mac_of(name: &str) -> Option<[u8; 6]> {
        let last = name.bytes().last()? - b'0';
        Some([0x52, 0x54, 0, 0x12, 0x34, 0x50 + last])
    }

    fn parsed(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn a_static_address_is_written_with_its_gateway_routes_and_nameservers() {
        let words = NetworkWords {
            ip: vec![
                parse_ip("10.0.2.15::10.0.2.2:255.255.255.0:node-1:eth0:none:10.0.2.3").unwrap(),
            ],
            routes: vec![parse_route("192.168.0.0/16:10.0.2.1").unwrap()],
            nameservers: vec!["10.0.0.53".parse().unwrap()],
            ..NetworkWords::default()
        };
        let eth0 = configured("eth0", &[("10.0.2.15", 24, STATIC)], &["10.0.2.2"]);
        let text = network_config(&[eth0], &words, mac_of).unwrap();
        assert_eq!(
            parsed(&text),
            json!({
                "version": 2,
                "ethernets": {
                    "eth0": {
                        "match": { "macaddress": "52:54:00:12:34:50" },
                        "addresses": ["10.0.2.15/24"],
                        "routes": [
                            { "to": "0.0.0.0/0", "via": "10.0.2.2" },
                            { "to": "192.168.0.0/16", "via": "10.0.2.1" }
                        ],
                        "nameservers": { "addresses": ["10.0.2.3", "10.0.0.53"] }
                    }
                }
            })
        );
    }

    #[test]
    fn what_came_by_dhcp_or_advertisements_is_asked_for_again() {
        let eth1 = configured(
            "eth1",
            &[
                ("10.0.9.50", 24, "DHCP from 10.0.9.1"),
                ("fd00::50", 64, "SLAAC"),
            ],
            &["10.0.9.1", "fe80::1"],
        );
        let text = network_config(&[eth1], &NetworkWords::default(), mac_of).unwrap();
        assert_eq!(
            parsed(&text)["ethernets"]["eth1"],
            json!({
                "match": { "macaddress": "52:54:00:12:34:51" },
                "dhcp4": true,
                "dhcp6": true
            })
        );
    }

    #[test]
    fn a_vlan_on_a_bond_names_its_members_by_mac() {
        let words = NetworkWords {
            ip: vec![parse_ip("10.0.7.5::10.0.7.1:24::bond0.7:none").unwrap()],
            bonds: vec![parse_bond("bond0:eth0,eth1:mode=1,miimon=100:9000").unwrap()],
            vlans: vec![parse_vlan("bond0.7:bond0").unwrap()],
            ..NetworkWords::default()
        };
        let vlan = configured("bond0.7", &[("10.0.7.5", 24, STATIC)], &["10.0.7.1"]);
        let document = parsed(&network_config(&[vlan], &words, mac_of).unwrap());
        assert_eq!(
            document["ethernets"],
            json!({
                "eth0": { "match": { "macaddress": "52:54:00:12:34:50" } },
                "eth1": { "match": { "macaddress": "52:54:00:12:34:51" } }
            })
        );
        assert_eq!(
            document["bonds"]["bond0"],
            json!({
                "interfaces": ["eth0", "eth1"],
                "parameters": { "mode": "active-backup", "mii-monitor-interval": 100 },
                "mtu": 9000
            })
        );
        assert_eq!(
            document["vlans"]["bond0.7"],
            json!({
                "id": 7,
                "link": "bond0",
                "addresses": ["10.0.7.5/24"],
                "routes": [{ "to": "0.0.0.0/0", "via": "10.0.7.1" }]
            })
        );
    }

    #[test]
    fn what_netplan_cannot_say_is_refused_by_name() {
        let words = NetworkWords {
            bonds: vec![parse_bond("bond0:eth0,eth1:tlb_dynamic_lb=1").unwrap()],
            ..NetworkWords::default()
        };
        let bond = configured("bond0", &[("10.0.9.50", 24, "DHCP from 10.0.9.1")], &[]);
        let error = network_config(&[bond], &words, mac_of).unwrap_err();
        assert!(
            format!("{error}").contains("bond0's option tlb_dynamic_lb has no netplan equivalent"),
            "{error}"
        );
        let eth0 = configured("eth0", &[("10.0.9.50", 24, "DHCP from 10.0.9.1")], &[]);
        let error = network_config(&[eth0], &NetworkWords::default(), |_| None).unwrap_err();
        assert!(
            format!("{error}").contains("eth0 has no MAC address"),
            "{error}"
        );
    }
}
