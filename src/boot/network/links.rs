//! The links under the addresses: the NICs the kernel found, names from `ifname=`, bonds
//! from `bond=` (the bonding driver's sysfs files, which take its options by their names),
//! VLANs from `vlan=` (netlink), and what the kernel says of each link's carrier and
//! addresses.

use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressScope};
use rtnetlink::{Handle, LinkUnspec, LinkVlan};

use crate::cmdline::network::{Bond, IfName, Mac, Vlan};

const CLASS_NET: &str = "/sys/class/net";

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub index: u32,
    pub mac: [u8; 6],
}

fn attribute(name: &str, file: &str) -> Option<String> {
    fs::read_to_string(Path::new(CLASS_NET).join(name).join(file))
        .ok()
        .map(|text| text.trim().to_string())
}

fn read_mac(text: &str) -> Option<[u8; 6]> {
    let octets: Vec<u8> = text
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    octets.try_into().ok()
}

/// The link called `name`, if there is one.
pub fn by_name(name: &str) -> Option<Link> {
    Some(Link {
        name: name.to_string(),
        index: attribute(name, "ifindex")?.parse().ok()?,
        mac: read_mac(&attribute(name, "address")?)?,
    })
}

/// The Ethernet NICs (devices with hardware behind them, so neither bonds nor VLANs), by
/// name.
pub fn nics() -> Vec<Link> {
    let Ok(entries) = fs::read_dir(CLASS_NET) else {
        return Vec::new();
    };
    let mut found: Vec<Link> = entries
        .flatten()
        .filter(|entry| entry.path().join("device").exists())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            // ARPHRD_ETHER
            (attribute(&name, "type")? == "1").then_some(())?;
            by_name(&name)
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The NIC whose own (permanent) address is `mac`: a bond's slaves share one address, so
/// their own is read from the bonding driver once they are enslaved.
pub fn nic_with_mac(mac: &[u8; 6]) -> Option<Link> {
    nics()
        .into_iter()
        .find(|nic| own_mac(&nic.name) == Some(*mac))
}

/// The NIC's own MAC address: the permanent one of a bond's slave, else its address.
pub fn own_mac(name: &str) -> Option<[u8; 6]> {
    attribute(name, "bonding_slave/perm_hwaddr")
        .and_then(|t| read_mac(&t))
        .or_else(|| read_mac(&attribute(name, "address")?))
}

pub fn has_carrier(name: &str) -> bool {
    attribute(name, "carrier").as_deref() == Some("1")
}

pub async fn set_up(handle: &Handle, link: &Link) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).up().build())
        .execute()
        .await
        .with_context(|| format!("bringing {} up", link.name))
}

async fn set_down(handle: &Handle, link: &Link) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(link.index).down().build())
        .execute()
        .await
        .with_context(|| format!("taking {} down", link.name))
}

/// Sets an MTU and a MAC address (from `ip=` or `bond=`), with the link down.
pub async fn set_mtu_and_mac(
    handle: &Handle,
    link: &Link,
    mtu: Option<u32>,
    mac: Option<[u8; 6]>,
) -> Result<()> {
    if mtu.is_none() && mac.is_none() {
        return Ok(());
    }
    let mut message = LinkUnspec::new_with_index(link.index);
    if let Some(mtu) = mtu {
        message = message.mtu(mtu);
    }
    if let Some(mac) = mac {
        set_down(handle, link).await?;
        message = message.address(mac.to_vec());
    }
    handle
        .link()
        .set(message.build())
        .execute()
        .await
        .with_context(|| format!("setting {}'s MTU or MAC address", link.name))
}

/// Renames the NICs as `ifname=` says. A name that is taken by another NIC is refused,
/// before anything is renamed.
pub async fn rename(handle: &Handle, names: &[IfName]) -> Result<()> {
    for wanted in names {
        let Some(nic) = nic_with_mac(&wanted.mac) else {
            bail!(
                "ifname={}:{}: no NIC has that MAC address",
                wanted.name,
                Mac(&wanted.mac)
            );
        };
        if nic.name == wanted.name {
            continue;
        }
        if by_name(&wanted.name).is_some() {
            // Swap names through a temporary one, as udev does.
            let holder = by_name(&wanted.name).context("reading a link")?;
            rename_one(handle, &holder, &format!("rename{}", holder.index)).await?;
        }
        rename_one(handle, &nic, &wanted.name)
            .await
            .with_context(|| format!("ifname={}:{}", wanted.name, Mac(&wanted.mac)))?;
    }
    Ok(())
}

async fn rename_one(handle: &Handle, link: &Link, name: &str) -> Result<()> {
    set_down(handle, link).await?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(link.index)
                .name(name.to_string())
                .build(),
        )
        .execute()
        .await
        .with_context(|| format!("renaming {} to {name}", link.name))
}

/// Creates a bond and enslaves its NICs, through the bonding driver's sysfs files: they take
/// every option by the name `bond=` gives it.
pub async fn create_bond(handle: &Handle, bond: &Bond) -> Result<Link> {
    let word = || format!("bond={}", bond.name);
    let dir = PathBuf::from(CLASS_NET).join(&bond.name);
    if !dir.join("bonding").exists() {
        write_sysfs(
            &Path::new(CLASS_NET).join("bonding_masters"),
            &format!("+{}", bond.name),
        )
        .with_context(word)?;
    }
    let link =
        by_name(&bond.name).with_context(|| format!("{}: the bond did not appear", word()))?;
    set_down(handle, &link).await?;
    // The mode first: the driver takes some options only in some modes.
    let (mode, others): (Vec<_>, Vec<_>) = bond.options.iter().partition(|(k, _)| k == "mode");
    for (key, value) in mode.into_iter().chain(others) {
        let file = dir.join("bonding").join(key);
        if !file.exists() {
            bail!("{}: the bonding driver has no option {key}", word());
        }
        write_sysfs(&file, value)
            .with_context(|| format!("{}: the bonding driver refused {key}={value}", word()))?;
    }
    for slave in &bond.slaves {
        let Some(nic) = by_name(slave) else {
            bail!("{}: there is no interface {slave}", word());
        };
        set_down(handle, &nic).await?;
        write_sysfs(&dir.join("bonding/slaves"), &format!("+{slave}"))
            .with_context(|| format!("{}: enslaving {slave}", word()))?;
    }
    set_mtu_and_mac(handle, &link, bond.mtu, None).await?;
    set_up(handle, &link).await?;
    by_name(&bond.name).with_context(word)
}

fn write_sysfs(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// Creates a VLAN on its parent (a NIC or a bond), both up.
pub async fn create_vlan(handle: &Handle, vlan: &Vlan) -> Result<Link> {
    let word = || format!("vlan={}:{}", vlan.name, vlan.parent);
    let Some(parent) = by_name(&vlan.parent) else {
        bail!("{}: there is no interface {}", word(), vlan.parent);
    };
    set_up(handle, &parent).await?;
    if by_name(&vlan.name).is_none() {
        handle
            .link()
            .add(LinkVlan::new(&vlan.name, parent.index, vlan.id).build())
            .execute()
            .await
            .with_context(|| format!("{}: creating the VLAN", word()))?;
    }
    let link =
        by_name(&vlan.name).with_context(|| format!("{}: the VLAN did not appear", word()))?;
    set_up(handle, &link).await?;
    Ok(link)
}

/// An address on a link, as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub address: IpAddr,
    pub prefix: u8,
    /// Still being checked for duplicates (IPv6 DAD): not usable yet.
    pub tentative: bool,
    /// Duplicate address detection found another host with it.
    pub duplicate: bool,
    pub link_local: bool,
}

/// The addresses on `link` (IPv4 and IPv6).
pub async fn addresses(handle: &Handle, link: &Link) -> Result<Vec<Address>> {
    let mut stream = handle
        .address()
        .get()
        .set_link_index_filter(link.index)
        .execute();
    let mut found = Vec::new();
    while let Some(message) = stream.try_next().await.context("reading addresses")? {
        if message.header.index != link.index {
            continue;
        }
        let mut address = None;
        let mut flags = AddressFlags::empty();
        for attribute in &message.attributes {
            match attribute {
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Local(a) if address.is_none() => address = Some(*a),
                AddressAttribute::Flags(f) => flags = *f,
                _ => {}
            }
        }
        let Some(address) = address else { continue };
        found.push(Address {
            address,
            prefix: message.header.prefix_len,
            tentative: flags.contains(AddressFlags::Tentative),
            duplicate: flags.contains(AddressFlags::Dadfailed),
            link_local: message.header.scope == AddressScope::Link,
        });
    }
    Ok(found)
}

/// Polls `link`'s addresses until `done` picks one, or `limit` passes (then the last list).
pub async fn wait_for_address<F>(
    handle: &Handle,
    link: &Link,
    limit: Duration,
    done: F,
) -> Result<Result<Address, Vec<Address>>>
where
    F: Fn(&Address) -> bool,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let list = addresses(handle, link).await?;
        if let Some(found) = list.iter().find(|a| done(a)) {
            return Ok(Ok(found.clone()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Err(list));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
