//! `--allow` and `--deny`: source networks that bypass synguard or are dropped, as CIDRs on the
//! command line or in files (one per line, `#` comments).

use std::{fs, path::Path, str::FromStr};

use ipnet::IpNet;

use crate::Error;

/// A CIDR as an operator writes it: `198.51.100.0/24`, `2001:db8::/32`, or a bare address
/// (a /32 or /128). Host bits must be clear, so a typo does not silently cover another network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match text.parse::<std::net::IpAddr>() {
                Ok(addr) => IpNet::from(addr),
                Err(_) => {
                    // Escaped: the text may come from a file or the control socket, and an
                    // error is one line of a log or a terminal.
                    return Err(format!(
                        "'{}' is not a CIDR (expected e.g. 198.51.100.0/24 or 2001:db8::/32)",
                        text.escape_debug()
                    ));
                }
            },
        };
        if net.trunc() != net {
            return Err(format!(
                "'{text}' has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(Cidr(net))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Reads a file of CIDRs: one per line; blank lines and `#` comments are skipped. Errors name
/// the file and line.
pub fn read_file(path: &Path) -> Result<Vec<Cidr>, Error> {
    let text = fs::read_to_string(path).map_err(|reason| Error::ListFileUnreadable {
        path: path.to_path_buf(),
        reason,
    })?;
    let mut cidrs = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let cidr = line.parse().map_err(|reason| Error::ListFile {
            path: path.to_path_buf(),
            line: number + 1,
            reason,
        })?;
        cidrs.push(cidr);
    }
    Ok(cidrs)
}

/// The allow and deny lists, checked: no prefix on both.
#[derive(Clone, Debug, Default)]
pub struct Lists {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

impl Lists {
    pub fn new(mut allow: Vec<Cidr>, mut deny: Vec<Cidr>) -> Result<Lists, Error> {
        allow.sort();
        allow.dedup();
        deny.sort();
        deny.dedup();
        if let Some(both) = allow.iter().find(|c| deny.binary_search(c).is_ok()) {
            return Err(Error::ListedTwice {
                cidr: both.to_string(),
            });
        }
        Ok(Lists { allow, deny })
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_bare_addresses() {
        assert_eq!(
            "198.51.100.0/24".parse::<Cidr>().unwrap().0.prefix_len(),
            24
        );
        assert_eq!("198.51.100.7".parse::<Cidr>().unwrap().0.prefix_len(), 32);
        assert_eq!("2001:db8::/32".parse::<Cidr>().unwrap().0.prefix_len(), 32);
        assert_eq!("2001:db8::1".parse::<Cidr>().unwrap().0.prefix_len(), 128);
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().0.prefix_len(), 0);
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        for (text, needle) in [
            ("10.0.0.1/16", "host bits set; did you mean 10.0.0.0/16?"),
            ("10.0.0.0/33", "is not a CIDR"),
            ("example.com", "is not a CIDR"),
            ("", "is not a CIDR"),
            ("2001:db8::1/32", "did you mean 2001:db8::/32?"),
        ] {
            let err = text.parse::<Cidr>().unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_prefix_on_both_lists_is_refused() {
        let c = |s: &str| s.parse::<Cidr>().unwrap();
        let err = Lists::new(vec![c("10.0.0.0/8")], vec![c("10.0.0.0/8")]).unwrap_err();
        assert!(err.to_string().contains("on both"), "{err}");
        // Nested prefixes are fine: the longest match decides.
        let lists = Lists::new(
            vec![c("10.1.2.3/32")],
            vec![c("10.0.0.0/8"), c("10.0.0.0/8")],
        );
        assert_eq!(lists.unwrap().deny.len(), 1, "duplicates merged");
    }

    #[test]
    fn files_skip_comments_and_name_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("synguard-lists-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        fs::write(
            &good,
            "# scanners\n198.51.100.0/24\n\n2001:db8::/32 # lab\n",
        )
        .unwrap();
        assert_eq!(read_file(&good).unwrap().len(), 2);
        let bad = dir.join("bad");
        fs::write(&bad, "198.51.100.0/24\n198.51.100.1/24\n").unwrap();
        let err = read_file(&bad).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "bad:2: '198.51.100.1/24' has host bits set; did you mean 198.51.100.0/24?"
            ),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
