//! Which proxy a request goes through: `oci.proxy=` except the hosts `oci.no_proxy=` lists,
//! or, at a shell, the environment's `HTTPS_PROXY`, `HTTP_PROXY` and `ALL_PROXY` except
//! `NO_PROXY`'s. Both lists are read here, the same way: domains (with their subdomains), IP
//! addresses and networks, each with an optional port, and `*`.
//!
//! The lists are matched here rather than by reqwest's `NoProxy`, which ignores entries with a
//! port (`registry.lan:5000`), and reads the environment without saying when a variable is
//! malformed or which one a failure went through.

use std::net::IpAddr;

use anyhow::Result;
use ipnet::IpNet;
use reqwest::Url;
use reqwest::blocking::ClientBuilder;

use crate::cmdline::RegistryOptions;
use crate::error::{Failure, classified};

/// The proxies requests go through, and where they come from.
#[derive(Debug, Clone)]
pub struct Proxies {
    /// For `https://` URLs, and what named it (`oci.proxy`, `HTTPS_PROXY`, …).
    https: Option<(Url, &'static str)>,
    /// For `http://` URLs.
    http: Option<(Url, &'static str)>,
    bypass: NoProxy,
}

impl Proxies {
    /// The proxies `options` name (`oci.proxy=`, `oci.no_proxy=`), or else the
    /// environment's; `None` when there are none. A malformed value is an error that names it.
    pub fn from_options(options: &RegistryOptions) -> Result<Option<Proxies>> {
        match (&options.proxy, &options.no_proxy) {
            (Some(url), no_proxy) => {
                let url = parse_proxy_url(url, "oci.proxy")?;
                let bypass = match no_proxy {
                    Some(list) => NoProxy::parse(list).map_err(|e| {
                        classified(Failure::Usage, anyhow::anyhow!("invalid oci.no_proxy: {e}"))
                    })?,
                    None => NoProxy::default(),
                };
                Ok(Some(Proxies {
                    https: Some((url.clone(), "oci.proxy")),
                    http: Some((url, "oci.proxy")),
                    bypass,
                }))
            }
            // oci.no_proxy= alone is refused with the other parameters (cmdline::Given).
            (None, _) => Proxies::from_environment(|name| std::env::var(name).ok()),
        }
    }

    /// The environment's proxies, as curl reads them (lowercase first, `ALL_PROXY` for what
    /// the others leave), with `var` looking a variable up.
    fn from_environment(var: impl Fn(&str) -> Option<String>) -> Result<Option<Proxies>> {
        let find = |names: &[&'static str]| -> Result<Option<(Url, &'static str)>> {
            for &name in names {
                if let Some(value) = var(name).filter(|v| !v.trim().is_empty()) {
                    return Ok(Some((parse_proxy_url(value.trim(), name)?, name)));
                }
            }
            Ok(None)
        };
        let all = find(&["all_proxy", "ALL_PROXY"])?;
        let https = find(&["https_proxy", "HTTPS_PROXY"])?.or_else(|| all.clone());
        let http = find(&["http_proxy", "HTTP_PROXY"])?.or(all);
        if https.is_none() && http.is_none() {
            return Ok(None);
        }
        let bypass = match ["no_proxy", "NO_PROXY"].into_iter().find_map(|name| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v))
        }) {
            Some((name, list)) => NoProxy::parse(&list)
                .map_err(|e| classified(Failure::Usage, anyhow::anyhow!("invalid {name}: {e}")))?,
            None => NoProxy::default(),
        };
        Ok(Some(Proxies {
            https,
            http,
            bypass,
        }))
    }

    /// The proxy for `url`, if it goes through one, and what named it.
    pub fn for_url(&self, url: &Url) -> Option<(&Url, &'static str)> {
        let proxy = match url.scheme() {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        }?;
        (!self.bypass.matches(url)).then_some((&proxy.0, proxy.1))
    }

    /// What names the proxy a request to `url` goes through (`oci.proxy`, `HTTPS_PROXY`…).
    pub fn name_for(&self, url: &str) -> Option<&'static str> {
        let url = Url::parse(url).ok()?;
        self.for_url(&url).map(|(_, name)| name)
    }

    /// Makes `builder`'s clients use these proxies, and no others.
    pub fn apply(self, builder: ClientBuilder) -> ClientBuilder {
        // The proxy's credentials go in Proxy-Authorization, set by reqwest from the URL's
        // user information.
        let proxies = self;
        builder.no_proxy().proxy(reqwest::Proxy::custom(move |url| {
            proxies.for_url(url).map(|(proxy, _)| proxy.clone())
        }))
    }
}

/// A proxy URL: `http://[USER:PASSWORD@]HOST[:PORT]`, or `https://`; without a scheme,
/// `http://` is meant, as curl reads it. The error names the value's source (`name`), never
/// the value: it may hold a password.
fn parse_proxy_url(text: &str, name: &str) -> Result<Url> {
    let with_scheme = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let invalid = |why: &str| {
        classified(
            Failure::Usage,
            anyhow::anyhow!("invalid {name}: {why} (expected http://HOST:PORT)"),
        )
    };
    let url = Url::parse(&with_scheme).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("only http:// and https:// proxies are supported"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    Ok(url)
}

/// A `NO_PROXY` list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NoProxy {
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    host: Host,
    /// Only this port, when the entry names one.
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
enum Host {
    /// `*`: every host.
    Any,
    /// An address or a network.
    Net(IpNet),
    /// A domain and its subdomains (lowercase, without a leading dot).
    Domain(String),
}

impl NoProxy {
    /// Parses a comma-separated list (spaces around entries are ignored): `*`, `10.0.0.0/8`,
    /// `192.0.2.7`, `[2001:db8::1]:5000`, `.example.com`, `*.example.com`,
    /// `registry.lan:5000`. An empty entry is skipped.
    pub fn parse(list: &str) -> Result<NoProxy, String> {
        let mut entries = Vec::new();
        for raw in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            entries.push(Entry::parse(raw)?);
        }
        Ok(NoProxy { entries })
    }

    /// Whether `url` is reached without the proxy.
    pub fn matches(&self, url: &Url) -> bool {
        let Some(host) = url.host() else {
            return false;
        };
        let port = url.port_or_known_default();
        let address = match host {
            url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
            url::Host::Domain(_) => None,
        };
        let name = match host {
            url::Host::Domain(name) => name.trim_end_matches('.').to_ascii_lowercase(),
            _ => String::new(),
        };
        self.entries.iter().any(|entry| {
            let port_matches = entry.port.is_none() || entry.port == port;
            port_matches
                && match &entry.host {
                    Host::Any => true,
                    Host::Net(net) => address.is_some_and(|ip| net.contains(&ip)),
                    Host::Domain(domain) => {
                        name == *domain
                            || name
                                .strip_suffix(domain.as_str())
                                .is_some_and(|rest| rest.ends_with('.'))
                    }
                }
        })
    }
}

impl Entry {
    fn parse(raw: &str) -> Result<Entry, String> {
        let bad = |why: &str| format!("{raw:?} is not a host, address or network ({why})");
        if raw == "*" {
            return Ok(Entry {
                host: Host::Any,
                port: None,
            });
        }
        // [v6]:port, [v6], v6 (several colons), v4[/len][:port], name[:port].
        let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (inside, port)
        } else if raw.matches(':').count() > 1 {
            (raw, None)
        } else {
            match raw.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (raw, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| bad("the port is not a number"))
            })
            .transpose()?;
        let host = if let Ok(net) = host.parse::<IpNet>() {
            Host::Net(net)
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            Host::Net(IpNet::from(ip))
        } else {
            let domain = host
                .strip_prefix("*.")
                .or_else(|| host.strip_prefix('.'))
                .unwrap_or(host)
                .trim_end_matches('.')
                .to_ascii_lowercase();
            let valid = !domain.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
            if !valid {
                return Err(bad("not a domain name"));
            }
            Host::Domain(domain)
        };
        Ok(Entry { host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bypassed(list: &str, url: &str) -> bool {
        NoProxy::parse(list)
            .unwrap()
            .matches(&Url::parse(url).unwrap())
    }

    #[test]
    fn entries_with_and_without_ports() {
        let list = "localhost:5000, .lan,10.0.0.0/8 ,[::1]:8443,192.0.2.7,*.corp.example";
        assert!(bypassed(list, "http://localhost:5000/v2/"));
        assert!(!bypassed(list, "http://localhost:5001/v2/"));
        assert!(bypassed(list, "https://registry.lan/v2/"));
        assert!(bypassed(list, "https://lan/v2/"));
        assert!(!bypassed(list, "https://plan/v2/"));
        assert!(bypassed(list, "http://10.1.2.3:5000/"));
        assert!(!bypassed(list, "http://11.1.2.3/"));
        assert!(bypassed(list, "https://[::1]:8443/"));
        assert!(!bypassed(list, "https://[::1]/"));
        assert!(bypassed(list, "http://192.0.2.7:1/"));
        assert!(bypassed(list, "https://r.corp.example/"));
        assert!(bypassed(list, "https://REGISTRY.LAN./"));
        assert!(bypassed("*", "https://anything/"));
        // A port given for a scheme's default port.
        assert!(bypassed("r.example:443", "https://r.example/"));
        assert!(!bypassed("r.example:443", "http://r.example/"));
        assert!(bypassed("::1", "http://[::1]:9/"));
    }

    #[test]
    fn bad_entries() {
        for list in ["host:port", "[::1", "[::1]x", "a b", "10.0.0.0/33:5"] {
            assert!(NoProxy::parse(list).is_err(), "{list}");
        }
        assert_eq!(NoProxy::parse(" , ").unwrap(), NoProxy::default());
    }

    #[test]
    fn the_environment_as_curl_reads_it() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(Proxies::from_environment(env(&[])).unwrap().is_none());
        let proxies = Proxies::from_environment(env(&[
            ("HTTPS_PROXY", "proxy.lan:3128"),
            ("NO_PROXY", "registry.lan:5000"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            proxies.name_for("https://registry.lan/v2/"),
            Some("HTTPS_PROXY")
        );
        assert_eq!(proxies.name_for("https://registry.lan:5000/v2/"), None);
        assert_eq!(proxies.name_for("http://registry.lan/v2/"), None);
        let all = Proxies::from_environment(env(&[("ALL_PROXY", "http://p:1")]))
            .unwrap()
            .unwrap();
        assert_eq!(all.name_for("http://r/"), Some("ALL_PROXY"));
        for bad in [
            &[("HTTPS_PROXY", "socks5://p:1")][..],
            &[("http_proxy", "http://")][..],
            &[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", "[::1")][..],
        ] {
            let bad: &'static [(&str, &str)] = Box::leak(bad.to_vec().into_boxed_slice());
            let error = Proxies::from_environment(env(bad)).unwrap_err();
            assert!(format!("{error:#}").contains("invalid "), "{error:#}");
        }
    }
}
