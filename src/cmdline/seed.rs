//! The words that give each machine its identity after the image: `ocidd.configdrive=` (a
//! config drive, by URL or as a blob), `ocidd.nocloud=` (a NoCloud seed built from parts).
//! Their URLs may name the machine: `{mac}`, `{uuid}`, `{serial}`.

use crate::reference::{ImageSource, parse_blob};

/// What the install writes after the image, in a partition of its own at the disk's end.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedOptions {
    /// `ocidd.configdrive=`: a prebuilt config drive (ISO9660 or FAT).
    pub config_drive: Option<SeedSource>,
    /// `ocidd.nocloud=`: where `user-data`, `meta-data` and the rest are.
    pub nocloud: Option<UrlTemplate>,
    /// `ocidd.copy_network`: the network /init configured goes into the NoCloud seed.
    pub copy_network: bool,
    /// That network as NoCloud `network-config` (version 2), once /init rendered it.
    pub network_config: Option<String>,
}

impl SeedOptions {
    pub fn is_empty(&self) -> bool {
        self.config_drive.is_none() && self.nocloud.is_none()
    }

    /// The rules between the words, once all are given.
    pub fn check(&self) -> Result<(), String> {
        if self.config_drive.is_some() && self.nocloud.is_some() {
            return Err(
                "ocidd.configdrive= and ocidd.nocloud= are mutually exclusive: give one of them"
                    .to_string(),
            );
        }
        if self.copy_network && self.config_drive.is_some() {
            return Err(
                "ocidd.copy_network cannot edit the prebuilt config drive of ocidd.configdrive=: serve the seed as parts with ocidd.nocloud=, or put the network in the config drive"
                    .to_string(),
            );
        }
        if self.copy_network && self.nocloud.is_none() {
            return Err(
                "ocidd.copy_network writes into the NoCloud seed ocidd builds: give ocidd.nocloud= too"
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// Where a config drive comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedSource {
    Url(UrlTemplate),
    /// A blob in a registry, named by its digest.
    Blob(ImageSource),
}

impl SeedSource {
    /// An http(s) URL, else `REGISTRY/REPOSITORY@sha256:HEX`.
    pub fn parse(text: &str) -> Result<SeedSource, String> {
        if text.starts_with("http://") || text.starts_with("https://") {
            return UrlTemplate::parse(text).map(SeedSource::Url);
        }
        parse_blob(text)
            .map(SeedSource::Blob)
            .map_err(|why| format!("neither an http(s) URL nor a blob by digest: {why}"))
    }
}

/// What a URL's placeholder stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `{mac}`: the MAC address of the interface the install's network runs on.
    Mac,
    /// `{uuid}`: the machine's DMI (SMBIOS) system UUID.
    Uuid,
    /// `{serial}`: the machine's DMI system serial number.
    Serial,
}

impl Placeholder {
    pub const ALL: [Placeholder; 3] = [Placeholder::Mac, Placeholder::Uuid, Placeholder::Serial];

    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Mac => "{mac}",
            Placeholder::Uuid => "{uuid}",
            Placeholder::Serial => "{serial}",
        }
    }
}

/// An http(s) URL that may name the machine with placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate(String);

impl UrlTemplate {
    /// Refuses an unknown placeholder, a brace left open, and what is not an http(s) URL
    /// once the placeholders are filled.
    pub fn parse(text: &str) -> Result<UrlTemplate, String> {
        let template = UrlTemplate(text.to_string());
        let filled = template.fill(|_| Ok::<_, String>("x".to_string()))?;
        super::parse_http_url(&filled)?;
        Ok(template)
    }

    /// The placeholders it uses.
    pub fn placeholders(&self) -> Vec<Placeholder> {
        Placeholder::ALL
            .into_iter()
            .filter(|p| self.0.contains(p.name()))
            .collect()
    }

    /// The URL with each placeholder replaced by what `value` gives for it (percent-encoded
    /// where a URL needs it).
    pub fn fill<E: From<String>>(
        &self,
        mut value: impl FnMut(Placeholder) -> Result<String, E>,
    ) -> Result<String, E> {
        let mut url = String::new();
        let mut rest = self.0.as_str();
        while let Some(open) = rest.find('{') {
            url.push_str(&rest[..open]);
            let after = &rest[open..];
            let close = after
                .find('}')
                .ok_or_else(|| format!("a {{ without its }} in {:?}", self.0))?;
            let name = &after[..=close];
            let placeholder = Placeholder::ALL
                .into_iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| {
                    format!("{name} is not a placeholder (they are {{mac}}, {{uuid}}, {{serial}})")
                })?;
            let text = value(placeholder)?;
            url.extend(percent_encoding::utf8_percent_encode(
                &text,
                percent_encoding::NON_ALPHANUMERIC,
            ));
            rest = &after[close + 1..];
        }
        url.push_str(rest);
        Ok(url)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_and_encoded() {
        let template = UrlTemplate::parse("http://10.0.2.2:8080/seeds/{mac}/{serial}/").unwrap();
        assert_eq!(
            template.placeholders(),
            [Placeholder::Mac, Placeholder::Serial]
        );
        let url = template
            .fill(|p| {
                Ok::<_, String>(match p {
                    Placeholder::Mac => "52:54:00:12:34:56".to_string(),
                    _ => "SN 1/2".to_string(),
                })
            })
            .unwrap();
        assert_eq!(
            url,
            "http://10.0.2.2:8080/seeds/52%3A54%3A00%3A12%3A34%3A56/SN%201%2F2/"
        );
    }

    #[test]
    fn what_is_not_a_template_is_refused() {
        for (text, why) in [
            ("http://h/{host}", "{host} is not a placeholder"),
            ("http://h/{mac", "without its }"),
            ("ftp://h/x", "neither an http(s) URL"),
            ("nothing", "neither an http(s) URL"),
        ] {
            let error = SeedSource::parse(text).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert!(matches!(
            SeedSource::parse(
                "registry.example.com/seeds@sha256:0000000000000000000000000000000000000000000000000000000000000000"
            ),
            Ok(SeedSource::Blob(_))
        ));
    }

    #[test]
    fn the_words_exclude_each_other() {
        let url = UrlTemplate::parse("http://h/seed/").unwrap();
        let both = SeedOptions {
            config_drive: Some(SeedSource::Url(url.clone())),
            nocloud: Some(url.clone()),
            ..SeedOptions::default()
        };
        assert!(both.check().unwrap_err().contains("mutually exclusive"));
        let drive = SeedOptions {
            config_drive: Some(SeedSource::Url(url.clone())),
            copy_network: true,
            ..SeedOptions::default()
        };
        assert!(drive.check().unwrap_err().contains("cannot edit"));
        let alone = SeedOptions {
            copy_network: true,
            ..SeedOptions::default()
        };
        assert!(
            alone
                .check()
                .unwrap_err()
                .contains("give ocidd.nocloud= too")
        );
        let fine = SeedOptions {
            nocloud: Some(url),
            copy_network: true,
            ..SeedOptions::default()
        };
        assert_eq!(fine.check(), Ok(()));
    }
}
