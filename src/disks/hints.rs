//! Choosing the disk by what it is, not by its kernel name: OpenStack Ironic's root device
//! hints (the names, and their meanings), written as `dd.match=` words with operators that
//! survive every boot loader's quoting (`serial=S6CSNA0R|S6CSNB1Q`, `size>=400G`,
//! `model~samsung`), or handed over verbatim as Ironic's JSON (`dd.hints=b64:…`).

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use super::Disk;
use crate::cmdline::parse_size;

const GIB: f64 = (1u64 << 30) as f64;

/// What a hint looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    Serial,
    Wwn,
    WwnWithExtension,
    WwnVendorExtension,
    Model,
    Vendor,
    Size,
    Rotational,
    Tran,
    Hctl,
    ByPath,
    Name,
}

const ATTRIBUTES: [(&str, Attribute); 12] = [
    ("serial", Attribute::Serial),
    ("wwn", Attribute::Wwn),
    ("wwn_with_extension", Attribute::WwnWithExtension),
    ("wwn_vendor_extension", Attribute::WwnVendorExtension),
    ("model", Attribute::Model),
    ("vendor", Attribute::Vendor),
    ("size", Attribute::Size),
    ("rotational", Attribute::Rotational),
    ("tran", Attribute::Tran),
    ("hctl", Attribute::Hctl),
    ("by_path", Attribute::ByPath),
    ("name", Attribute::Name),
];

impl Attribute {
    fn named(name: &str) -> Option<Attribute> {
        ATTRIBUTES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, attribute)| *attribute)
    }

    /// The disk's values of this attribute, compared as lowercase text.
    fn values(self, disk: &Disk) -> Vec<String> {
        let one = |value: Option<&str>| value.map(normalize).into_iter().collect();
        match self {
            Attribute::Serial => disk.serials.iter().map(|s| normalize(s)).collect(),
            Attribute::Wwn => one(disk.wwn.as_deref()),
            Attribute::WwnWithExtension => {
                one(disk.wwn_with_extension.as_deref().or(disk.wwn.as_deref()))
            }
            Attribute::WwnVendorExtension => one(disk.wwn_vendor_extension.as_deref()),
            Attribute::Model => one(disk.model.as_deref()),
            Attribute::Vendor => one(disk.vendor.as_deref()),
            Attribute::Tran => one(disk.tran),
            Attribute::Hctl => one(disk.hctl.as_deref()),
            Attribute::ByPath => disk
                .by_path
                .iter()
                .map(|p| normalize(&format!("/dev/disk/by-path/{p}")))
                .collect(),
            Attribute::Name => vec![normalize(&format!("/dev/{}", disk.name))],
            Attribute::Size | Attribute::Rotational => Vec::new(),
        }
    }
}

/// Trimmed and lowercase: how Ironic's agent compares.
fn normalize(text: &str) -> String {
    text.trim().to_lowercase()
}

/// How a hint compares.
#[derive(Debug, Clone, PartialEq)]
enum Test {
    /// Equal to one of these.
    OneOf(Vec<String>),
    /// Equal to none of these.
    NoneOf(Vec<String>),
    /// Contains one of these.
    Contains(Vec<String>),
    /// Ordered as text against this (Ironic's `s<`, `s>=`…).
    Text(Vec<Ordering>, String),
    /// The size in bytes, ordered against this.
    Bytes(Vec<Ordering>, u64),
    /// The size counted in whole `unit`s is (or, negated, is not) one of these.
    Units {
        unit: u64,
        counts: Vec<u64>,
        negated: bool,
    },
    /// The size in GiB (a fraction, as Ironic's agent has it) ordered against one of these.
    Gib(Vec<Ordering>, Vec<f64>),
    Flag(bool),
}

/// One hint: an attribute and a test, with the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Hint {
    attribute: Attribute,
    test: Test,
    text: String,
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Hint {
    /// Whether `disk` satisfies the hint.
    pub fn matches(&self, disk: &Disk) -> bool {
        let values = self.attribute.values(disk);
        match &self.test {
            Test::OneOf(wanted) => values.iter().any(|v| wanted.contains(v)),
            Test::NoneOf(unwanted) => !values.iter().any(|v| unwanted.contains(v)),
            Test::Contains(parts) => values
                .iter()
                .any(|v| parts.iter().any(|part| v.contains(part.as_str()))),
            Test::Text(orderings, wanted) => values
                .iter()
                .any(|v| orderings.contains(&v.as_str().cmp(wanted.as_str()))),
            Test::Bytes(orderings, bytes) => orderings.contains(&disk.size.cmp(bytes)),
            Test::Units {
                unit,
                counts,
                negated,
            } => counts.contains(&(disk.size / unit)) != *negated,
            Test::Gib(orderings, sizes) => {
                let gib = disk.size as f64 / GIB;
                sizes.iter().any(|size| {
                    gib.partial_cmp(size)
                        .is_some_and(|ordering| orderings.contains(&ordering))
                })
            }
            Test::Flag(wanted) => disk.rotational == Some(*wanted),
        }
    }
}

/// The orderings an operator accepts.
fn orderings(operator: &str) -> Option<Vec<Ordering>> {
    use Ordering::{Equal, Greater, Less};
    Some(match operator {
        ">" => vec![Greater],
        ">=" => vec![Greater, Equal],
        "<" => vec![Less],
        "<=" => vec![Less, Equal],
        "==" => vec![Equal],
        "!=" => vec![Less, Greater],
        _ => return None,
    })
}

/// Parses a `dd.match=` word's value: `NAME OPERATOR VALUE[|VALUE…]`, with the operators
/// `=`, `!=`, `~` (contains), and for `size` also `>=`, `<=`, `>`, `<`.
pub fn parse_match(text: &str) -> Result<Hint, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
        .unwrap_or(text.len());
    let (name, rest) = text.split_at(split);
    let attribute = Attribute::named(name).ok_or_else(|| {
        let names: Vec<&str> = ATTRIBUTES.iter().map(|(n, _)| *n).collect();
        format!(
            "{text:?} does not start with a hint name ({})",
            names.join(", ")
        )
    })?;
    let operator = ["!=", ">=", "<=", "=", ">", "<", "~"]
        .into_iter()
        .find(|op| rest.starts_with(op))
        .ok_or_else(|| format!("{text:?} has no operator after {name} (=, !=, ~, >=, <=, >, <)"))?;
    // `%XX` stands for a byte a kernel word cannot carry as it is (`%7C` for '|', `%22` for
    // '"', `%25` for '%'), as `ocidd disks` prints such values.
    let alternatives: Vec<String> = rest[operator.len()..]
        .split('|')
        .map(|v| {
            percent_encoding::percent_decode_str(v.trim())
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let alternatives: Vec<&str> = alternatives.iter().map(String::as_str).collect();
    if alternatives.iter().any(|v| v.is_empty()) {
        return Err(format!("{text:?} has an empty value"));
    }
    let bad = |why: &str| Err(format!("{text:?}: {why}"));
    let test = match attribute {
        Attribute::Size => {
            let sized: Vec<(u64, u64)> = alternatives
                .iter()
                .map(|v| size_with_unit(v).map_err(|e| format!("{text:?}: {e}")))
                .collect::<Result<_, _>>()?;
            match operator {
                "=" | "!=" => Test::Units {
                    unit: sized[0].1,
                    counts: sized.iter().map(|(bytes, unit)| bytes / unit).collect(),
                    negated: operator == "!=",
                },
                "~" => return bad("size takes =, !=, >=, <=, > or <, not ~"),
                _ if sized.len() > 1 => return bad("a size comparison takes one value"),
                _ => Test::Bytes(orderings(operator).unwrap_or_default(), sized[0].0),
            }
        }
        Attribute::Rotational => {
            let [value] = alternatives[..] else {
                return bad("rotational takes one value: 0 or 1");
            };
            let flag = match value {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => return bad("rotational is 0 or 1 (or false/true, no/yes)"),
            };
            match operator {
                "=" => Test::Flag(flag),
                "!=" => Test::Flag(!flag),
                _ => return bad("rotational takes = or !="),
            }
        }
        _ => {
            let values: Vec<String> = alternatives
                .iter()
                .map(|v| normalize_value(attribute, v))
                .collect();
            match operator {
                "=" => Test::OneOf(values),
                "!=" => Test::NoneOf(values),
                "~" => Test::Contains(values),
                _ => return bad(&format!("{name} is text: it takes =, != or ~")),
            }
        }
    };
    Ok(Hint {
        attribute,
        test,
        text: text.to_string(),
    })
}

/// A hint's value as the disk's are compared: lowercase, and names and paths in full.
fn normalize_value(attribute: Attribute, value: &str) -> String {
    let value = normalize(value);
    match attribute {
        Attribute::Name if !value.starts_with("/dev/") => format!("/dev/{value}"),
        Attribute::ByPath if !value.starts_with("/dev/") => format!("/dev/disk/by-path/{value}"),
        _ => value,
    }
}

/// A size with its unit (dd's suffixes, powers of 1024 for M, G, T): (bytes, unit).
fn size_with_unit(text: &str) -> Result<(u64, u64), String> {
    let digits = text.trim_end_matches(|c: char| !c.is_ascii_digit());
    if digits.len() == text.len() {
        return Err(format!(
            "the size {text:?} needs a unit (400G, 1T, 512M): a bare number is ambiguous"
        ));
    }
    let unit_error = || format!("{text:?} is not a size with a unit (400G, 1T, 512M)");
    let bytes = parse_size(text).map_err(|_| unit_error())?;
    let unit = parse_size(&format!("1{}", &text[digits.len()..])).map_err(|_| unit_error())?;
    Ok((bytes, unit))
}

/// Parses `dd.hints=b64:…`: Ironic's root device hints as JSON (base64, since the kernel
/// command line splits at spaces), with Ironic's operators (`s==`, `<in>`, `<or>`, `>=`…)
/// and its units (`size` in GiB).
pub fn parse_ironic(text: &str) -> Result<Vec<Hint>, String> {
    use base64::Engine;
    let encoded = text
        .strip_prefix("b64:")
        .ok_or_else(|| format!("{text:?} does not start with b64: (the JSON, base64-encoded)"))?;
    // Padded or not, standard or URL-safe: `base64 -w0` pads, other encoders do not.
    let config = base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
    let standard = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, config);
    let url_safe = base64::engine::GeneralPurpose::new(&base64::alphabet::URL_SAFE, config);
    let json = standard
        .decode(encoded.trim())
        .or_else(|_| url_safe.decode(encoded.trim()))
        .map_err(|e| format!("not valid base64: {e}"))?;
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&json).map_err(|e| format!("not a JSON object: {e}"))?;
    object
        .iter()
        .map(|(name, value)| ironic_hint(name, value))
        .collect()
}

fn ironic_hint(name: &str, value: &serde_json::Value) -> Result<Hint, String> {
    let attribute = Attribute::named(name).ok_or_else(|| format!("{name:?} is not a hint"))?;
    let expression = match value {
        serde_json::Value::String(s) => s.trim().to_lowercase(),
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::Bool(b) => b.to_string(),
        _ => return Err(format!("{name}: {value} is not a hint value")),
    };
    let text = format!("{name}: {value}");
    let bad = |why: &str| Err(format!("{name}: {why} ({value})"));
    if expression.is_empty() {
        return bad("empty");
    }
    // Ironic's grammar: an operator first, or none; `<or>` between alternatives.
    const OPERATORS: [&str; 14] = [
        "<all-in>", "<or>", "<in>", "s==", "s!=", "s<=", "s<", "s>=", "s>", "==", "!=", ">=", "<=",
        "=",
    ];
    let operator = OPERATORS
        .into_iter()
        .chain([">", "<"])
        .find(|op| expression.starts_with(op));
    let values: Vec<String> = match operator {
        Some(op) => expression
            .split(op)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect(),
        None => vec![expression.clone()],
    };
    if values.is_empty() {
        return bad("no value");
    }
    let test = match attribute {
        Attribute::Rotational => {
            let flag = match expression.as_str() {
                "1" | "true" | "yes" | "y" | "on" | "t" => true,
                "0" | "false" | "no" | "n" | "off" | "f" => false,
                _ => return bad("not a boolean"),
            };
            Test::Flag(flag)
        }
        Attribute::Size => {
            let sizes: Vec<f64> = values
                .iter()
                .map(|v| v.parse::<u64>().ok().filter(|&n| n > 0).map(|n| n as f64))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("{name}: sizes are whole GiB above 0 ({value})"))?;
            let orderings = match operator {
                None | Some("<or>") => orderings("==").unwrap_or_default(),
                // Ironic's legacy `=` is "at least".
                Some("=") => orderings(">=").unwrap_or_default(),
                Some(op) => match orderings(op) {
                    Some(orderings) if sizes.len() == 1 => orderings,
                    _ => return bad("not a size comparison"),
                },
            };
            Test::Gib(orderings, sizes)
        }
        _ => {
            let values: Vec<String> = values
                .iter()
                .map(|v| normalize_value(attribute, v))
                .collect();
            match operator {
                None | Some("s==") | Some("<or>") => Test::OneOf(values),
                Some("s!=") => Test::NoneOf(values),
                Some("<in>") => Test::Contains(values),
                Some(op @ ("s<" | "s<=" | "s>" | "s>=")) if values.len() == 1 => {
                    let ordering = orderings(&op[1..]).unwrap_or_default();
                    Test::Text(ordering, values[0].clone())
                }
                Some(op) => return bad(&format!("{op} does not apply to text")),
            }
        }
    };
    Ok(Hint {
        attribute,
        test,
        text,
    })
}

/// Which of several matching disks to take, when asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    Smallest,
    Largest,
}

impl std::str::FromStr for Pick {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "smallest" => Ok(Pick::Smallest),
            "largest" => Ok(Pick::Largest),
            _ => Err(format!("{text:?} is not smallest or largest")),
        }
    }
}

/// How the target disk is chosen: hints it must match (all of them), and what to take when
/// several do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub hints: Vec<Hint>,
    pub pick: Option<Pick>,
}

/// Why no disk was chosen; nothing is written. The message is one line; the table of the
/// disks goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.hints.is_empty() && self.pick.is_none()
    }

    fn describe(&self) -> String {
        let hints: Vec<String> = self.hints.iter().map(Hint::to_string).collect();
        hints.join(", ")
    }

    /// The target: the one disk that matches every hint, or `target` (a disk name, or a
    /// /dev/disk/by-id or by-path name resolved as udev would) when it matches them too.
    /// A target that exists as a file or device and is not among `disks` (a regular file, a
    /// loop device) is taken as it is, when there are no hints.
    pub fn choose(&self, disks: &[Disk], target: Option<&Path>) -> Result<PathBuf, Refusal> {
        let matching: Vec<&Disk> = disks
            .iter()
            .filter(|d| self.hints.iter().all(|h| h.matches(d)))
            .collect();
        match target {
            Some(target) => {
                let named = disks.iter().find(|d| d.is_named(target));
                match named {
                    Some(disk) if matching.iter().any(|m| m.name == disk.name) => Ok(disk.path()),
                    Some(disk) => {
                        let resolved = if target == disk.path() {
                            String::new()
                        } else {
                            format!(" ({})", disk.path().display())
                        };
                        Err(Refusal(format!(
                            "the target {}{resolved} does not match the hints {}: it is not the disk they describe; nothing was written",
                            target.display(),
                            self.describe()
                        )))
                    }
                    None if !self.hints.is_empty() => Err(Refusal(format!(
                        "the target {} is not a disk the hints {} can be checked against; nothing was written",
                        target.display(),
                        self.describe()
                    ))),
                    None if target.exists() && !target.starts_with("/dev/disk") => {
                        Ok(target.to_path_buf())
                    }
                    None => Err(Refusal(format!(
                        "the target {} does not exist; nothing was written",
                        target.display()
                    ))),
                }
            }
            None => match (matching.as_slice(), self.pick) {
                ([], _) => Err(Refusal(format!(
                    "no disk matches the hints {}; nothing was written",
                    self.describe()
                ))),
                ([one], _) => Ok(one.path()),
                (several, Some(pick)) => {
                    let by_size = |a: &&&Disk, b: &&&Disk| a.size.cmp(&b.size);
                    let chosen = match pick {
                        Pick::Smallest => several.iter().min_by(by_size),
                        Pick::Largest => several.iter().max_by(by_size),
                    };
                    let tied = several
                        .iter()
                        .filter(|d| chosen.is_some_and(|c| c.size == d.size))
                        .count();
                    match chosen {
                        Some(disk) if tied == 1 => Ok(disk.path()),
                        _ => Err(Refusal(format!(
                            "{} disks match the hints {} and {tied} of them are the {} size; add a hint; nothing was written",
                            several.len(),
                            self.describe(),
                            if pick == Pick::Smallest {
                                "smallest"
                            } else {
                                "largest"
                            }
                        ))),
                    }
                }
                (several, None) => {
                    let names: Vec<String> = several
                        .iter()
                        .map(|d| d.path().display().to_string())
                        .collect();
                    Err(Refusal(format!(
                        "{} disks match the hints {}: {}; add a hint, or choose with dd.pick=smallest or largest; nothing was written",
                        several.len(),
                        self.describe(),
                        names.join(", ")
                    )))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(name: &str, size_gib: u64, serial: &str, model: &str, tran: &'static str) -> Disk {
        Disk {
            name: name.to_string(),
            size: size_gib << 30,
            rotational: Some(tran == "sata"),
            tran: Some(tran),
            model: Some(model.to_string()),
            vendor: Some("ATA".to_string()),
            serials: vec![serial.to_string()],
            wwn: Some(format!("0x5000c500{:08x}", size_gib)),
            hctl: Some("0:0:0:0".to_string()),
            by_path: vec![format!("pci-0000:00:1f.2-ata-{size_gib}.0")],
            ..Disk::default()
        }
    }

    fn disks() -> Vec<Disk> {
        vec![
            disk(
                "nvme0n1",
                476,
                "S6CSNA0R",
                "Samsung SSD 980 PRO 500GB",
                "nvme",
            ),
            disk("sda", 1863, "ZL2A1B2C", "ST2000NM0055", "sata"),
            disk("sdb", 1863, "ZL2A9X8Y", "ST2000NM0055", "sata"),
            disk("vda", 64, "boot-disk", "", "virtio"),
        ]
    }

    fn chosen(words: &[&str], pick: Option<Pick>, target: Option<&str>) -> Result<String, String> {
        let hints = words
            .iter()
            .map(|w| parse_match(w))
            .collect::<Result<Vec<_>, _>>()?;
        Selection { hints, pick }
            .choose(&disks(), target.map(Path::new))
            .map(|p| p.display().to_string())
            .map_err(|r| r.0)
    }

    #[test]
    fn each_hint_and_operator() {
        let one = |words: &[&str]| chosen(words, None, None);
        assert_eq!(one(&["serial=s6csna0r"]).unwrap(), "/dev/nvme0n1");
        assert_eq!(one(&["serial=ZL2A9X8Y"]).unwrap(), "/dev/sdb");
        assert_eq!(one(&["serial=S6CSNB1Q|ZL2A1B2C"]).unwrap(), "/dev/sda");
        assert_eq!(one(&["model~980 pro"]).unwrap(), "/dev/nvme0n1");
        assert_eq!(one(&["tran=nvme"]).unwrap(), "/dev/nvme0n1");
        assert_eq!(one(&["tran=virtio"]).unwrap(), "/dev/vda");
        assert_eq!(one(&["size<100G"]).unwrap(), "/dev/vda");
        assert_eq!(one(&["size>=400G", "size<=600G"]).unwrap(), "/dev/nvme0n1");
        assert_eq!(one(&["size=476G"]).unwrap(), "/dev/nvme0n1");
        assert_eq!(
            one(&["rotational=0", "tran!=virtio"]).unwrap(),
            "/dev/nvme0n1"
        );
        assert_eq!(one(&["name=vda"]).unwrap(), "/dev/vda");
        assert_eq!(one(&["name=/dev/vda"]).unwrap(), "/dev/vda");
        assert_eq!(one(&["wwn=0x5000C500000001dc"]).unwrap(), "/dev/nvme0n1");
        assert_eq!(
            one(&["by_path=pci-0000:00:1f.2-ata-64.0"]).unwrap(),
            "/dev/vda"
        );
        assert_eq!(
            one(&["by_path=/dev/disk/by-path/pci-0000:00:1f.2-ata-64.0"]).unwrap(),
            "/dev/vda"
        );
        assert!(
            one(&["serial=nothing"])
                .unwrap_err()
                .contains("no disk matches")
        );
        let several = one(&["model=ST2000NM0055"]).unwrap_err();
        assert!(
            several.contains("2 disks match") && several.contains("/dev/sda, /dev/sdb"),
            "{several}"
        );
    }

    #[test]
    fn pick_and_target_interlock() {
        assert_eq!(
            chosen(&["rotational=1"], Some(Pick::Smallest), None).unwrap_err(),
            "2 disks match the hints rotational=1 and 2 of them are the smallest size; add a hint; nothing was written"
        );
        assert_eq!(
            chosen(&["tran!=virtio"], Some(Pick::Smallest), None).unwrap(),
            "/dev/nvme0n1"
        );
        let tied = chosen(&[], Some(Pick::Largest), None).unwrap_err();
        assert!(
            tied.contains("4 disks match") && tied.contains("2 of them are the largest"),
            "{tied}"
        );
        // dd.of and the hints must agree.
        assert_eq!(
            chosen(&["serial=ZL2A1B2C"], None, Some("/dev/sda")).unwrap(),
            "/dev/sda"
        );
        let refused = chosen(&["serial=ZL2A1B2C"], None, Some("/dev/sdb")).unwrap_err();
        assert!(
            refused.contains("does not match the hints serial=ZL2A1B2C"),
            "{refused}"
        );
        let by_path = chosen(
            &[],
            None,
            Some("/dev/disk/by-path/pci-0000:00:1f.2-ata-64.0"),
        );
        assert_eq!(by_path.unwrap(), "/dev/vda");
        let missing = chosen(&[], None, Some("/dev/disk/by-id/ata-nothing")).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
    }

    #[test]
    fn bad_match_words() {
        for (word, why) in [
            ("colour=red", "does not start with a hint name"),
            ("serial", "has no operator"),
            ("serial=", "empty value"),
            ("serial=a||b", "empty value"),
            ("size>=400", "needs a unit"),
            ("size~400G", "not ~"),
            ("size>=1G|2G", "one value"),
            ("rotational=maybe", "0 or 1"),
            ("model>=a", "is text"),
            ("size>=abcG", "not a size with a unit"),
            ("size=1Q", "not a size with a unit"),
        ] {
            let error = parse_match(word).unwrap_err();
            assert!(error.contains(why), "{word}: {error}");
            assert!(!error.contains("512, 64k"), "{word}: {error}");
        }
    }

    #[test]
    fn ironic_hints_verbatim() {
        use base64::Engine;
        let encode = |json: &str| {
            format!(
                "b64:{}",
                base64::engine::general_purpose::STANDARD.encode(json)
            )
        };
        let choose = |json: &str| {
            let hints = parse_ironic(&encode(json))?;
            Selection { hints, pick: None }
                .choose(&disks(), None)
                .map(|p| p.display().to_string())
                .map_err(|r| r.0)
        };
        assert_eq!(choose(r#"{"serial": "S6CSNA0R"}"#).unwrap(), "/dev/nvme0n1");
        assert_eq!(choose(r#"{"serial": "s== zl2a1b2c"}"#).unwrap(), "/dev/sda");
        assert_eq!(
            choose(r#"{"serial": "<or> nothing <or> ZL2A9X8Y"}"#).unwrap(),
            "/dev/sdb"
        );
        assert_eq!(choose(r#"{"model": "<in> 980"}"#).unwrap(), "/dev/nvme0n1");
        assert_eq!(
            choose(r#"{"size": ">= 400", "rotational": false}"#).unwrap(),
            "/dev/nvme0n1"
        );
        assert_eq!(choose(r#"{"size": 64}"#).unwrap(), "/dev/vda");
        assert_eq!(choose(r#"{"name": "/dev/sdb"}"#).unwrap(), "/dev/sdb");
        // Unpadded base64, as many encoders write it.
        let unpadded = encode(r#"{"name": "/dev/sdb"}"#)
            .trim_end_matches('=')
            .to_string();
        assert!(unpadded.len() % 4 != 0, "{unpadded}");
        let hints = parse_ironic(&unpadded).unwrap();
        assert_eq!(hints.len(), 1);
        assert!(choose(r#"{"size": "<= 100", "tran": "s!= virtio"}"#).is_err());
        for bad in [
            r#"{"colour": "red"}"#,
            r#"{"size": "big"}"#,
            r#"{"size": -1}"#,
            r#"{"rotational": "perhaps"}"#,
            r#"["serial"]"#,
        ] {
            assert!(choose(bad).is_err(), "{bad}");
        }
        assert!(parse_ironic("eyJzZXJpYWwiOiAi").is_err());
        assert!(parse_ironic("b64:!!!").is_err());
    }
}
