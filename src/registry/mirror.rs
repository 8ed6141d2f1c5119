//! Mirrors (`oci.mirror=HOST[:PORT][/PREFIX]`), in containerd's `hosts.toml` model: pull-through
//! caches (distribution's proxy mode, a Harbor proxy-cache project) and P2P mirrors (Spegel,
//! Dragonfly) that serve what is addressed by digest. What a mirror sends is checked against
//! the digest like anything else, so a mirror cannot change what is written.

use std::fmt;
use std::str::FromStr;

/// One `oci.mirror=` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The scheme given (`http://`, `https://`), if any; else the registry's rule applies.
    scheme: Option<Scheme>,
    /// `HOST[:PORT]`, an IPv6 address in brackets.
    host: String,
    /// A repository prefix (a Harbor proxy-cache project, `dockerhub-cache`), without slashes
    /// at either end.
    prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl Mirror {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    /// The repository at the mirror: `PREFIX/REPOSITORY`.
    pub fn repository(&self, repository: &str) -> String {
        match &self.prefix {
            Some(prefix) => format!("{prefix}/{repository}"),
            None => repository.to_string(),
        }
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Some(Scheme::Http) => write!(f, "http://")?,
            Some(Scheme::Https) => write!(f, "https://")?,
            None => {}
        }
        write!(f, "{}", self.host)?;
        if let Some(prefix) = &self.prefix {
            write!(f, "/{prefix}")?;
        }
        Ok(())
    }
}

impl FromStr for Mirror {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        // The value is not repeated when it carries credentials: consoles are logged.
        if text.contains('@') {
            return Err(
                "a mirror is HOST[:PORT][/PREFIX], without credentials (give them in oci.auth=); the value is not repeated, since it may hold a password".to_string(),
            );
        }
        let bad = |why: &str| format!("{text:?} is not HOST[:PORT][/PREFIX]: {why}");
        let (scheme, rest) = if let Some(rest) = text.strip_prefix("http://") {
            (Some(Scheme::Http), rest)
        } else if let Some(rest) = text.strip_prefix("https://") {
            (Some(Scheme::Https), rest)
        } else if text.contains("://") {
            return Err(bad("the scheme must be http:// or https://"));
        } else {
            (None, text)
        };
        let (host, prefix) = match rest.split_once('/') {
            Some((host, prefix)) => (host, Some(prefix.trim_end_matches('/'))),
            None => (rest, None),
        };
        // A URL parser checks the host and port as a URL would carry them (IPv6 in brackets).
        let valid_host = url::Url::parse(&format!("https://{host}/")).is_ok_and(|url| {
            url.host_str().is_some_and(|h| !h.is_empty())
                && url.username().is_empty()
                && url.password().is_none()
        });
        if !valid_host {
            return Err(bad("the host is not valid"));
        }
        if host.ends_with(':') {
            return Err(bad("the port is empty"));
        }
        let prefix = match prefix {
            None | Some("") => None,
            Some(prefix) => {
                if !prefix.split('/').all(is_path_component) {
                    return Err(bad(
                        "the prefix must be repository path components (lowercase letters and digits, joined by . _ __ or -)",
                    ));
                }
                Some(prefix.to_string())
            }
        };
        Ok(Mirror {
            scheme,
            host: host.to_string(),
            prefix,
        })
    }
}

/// A repository path component as the distribution spec defines it,
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`: so never `.` or `..`, which would take requests
/// outside `/v2/`.
fn is_path_component(component: &str) -> bool {
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alphanumeric(first) || !alphanumeric(last) {
        return false;
    }
    // Between runs of letters and digits: one '.', one or two '_', or any number of '-'.
    bytes
        .split(|&b| alphanumeric(b))
        .filter(|separator| !separator.is_empty())
        .all(|separator| {
            matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|&b| b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_prefixes_and_schemes() {
        let m: Mirror = "cache.example:5000".parse().unwrap();
        assert_eq!((m.host(), m.scheme()), ("cache.example:5000", None));
        assert_eq!(m.repository("disks/base"), "disks/base");
        let m: Mirror = "harbor.example/dockerhub-cache/".parse().unwrap();
        assert_eq!(m.host(), "harbor.example");
        assert_eq!(m.repository("disks/base"), "dockerhub-cache/disks/base");
        assert_eq!(m.to_string(), "harbor.example/dockerhub-cache");
        let m: Mirror = "http://127.0.0.1:30020".parse().unwrap();
        assert_eq!(m.scheme(), Some(Scheme::Http));
        assert_eq!(m.to_string(), "http://127.0.0.1:30020");
        let m: Mirror = "https://[::1]:5000/a/b".parse().unwrap();
        assert_eq!((m.host(), m.scheme()), ("[::1]:5000", Some(Scheme::Https)));
        assert_eq!(m.repository("r"), "a/b/r");
        // The scheme's default port is kept as given.
        let m: Mirror = "mirror.example:443".parse().unwrap();
        assert_eq!(m.host(), "mirror.example:443");
        for good in ["m/a.b", "m/a_b", "m/a__b", "m/a---b", "m/0x"] {
            assert!(good.parse::<Mirror>().is_ok(), "{good}");
        }
        // Credentials in the value are not repeated in the error.
        let e = "https://u:S3CRET@m.example".parse::<Mirror>().unwrap_err();
        assert!(!e.contains("S3CRET") && e.contains("oci.auth="), "{e}");
    }

    #[test]
    fn refuses_what_is_not_a_mirror() {
        for bad in [
            "",
            "/prefix",
            "ftp://mirror.example",
            "mirror.example:",
            "mirror.example:port",
            "mirror.example:99999",
            "user:pw@mirror.example",
            "mirror.example/Upper",
            "mirror.example/a//b",
            "mirror.example/a?x=1",
            "[::1",
            "mirror example",
            "mirror.example/..",
            "mirror.example/a/../../x",
            "mirror.example/.",
            "mirror.example/.hidden",
            "mirror.example/a..b",
            "mirror.example/a___b",
            "mirror.example/a-",
        ] {
            assert!(bad.parse::<Mirror>().is_err(), "{bad:?}");
        }
    }
}
