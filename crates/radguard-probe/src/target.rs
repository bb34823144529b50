//! What to probe: `host:port` (plain DICOM, PS3.8) or `tls://host:port` (DICOM over TLS,
//! PS3.15 B.12).

use std::fmt;
use std::str::FromStr;

use crate::ProbeError;

/// One endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl FromStr for Target {
    type Err = ProbeError;

    fn from_str(s: &str) -> Result<Target, ProbeError> {
        let bad = |why: &str| ProbeError::Target(format!("{s:?}: {why}"));
        let (tls, rest) = match s.split_once("://") {
            Some(("tls", r)) => (true, r),
            Some(("dicom", r)) => (false, r),
            Some((scheme, _)) => return Err(bad(&format!("unknown scheme {scheme:?}"))),
            None => (false, s),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("expected HOST:PORT"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be 1..65535"))?;
        Ok(Target {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.tls {
            write!(f, "tls://{host}:{}", self.port)
        } else {
            write!(f, "{host}:{}", self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        let t: Target = "127.0.0.1:104".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("127.0.0.1", 104, false));
        let t: Target = "tls://pacs.example:2762".parse().unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.tls),
            ("pacs.example", 2762, true)
        );
        assert_eq!(t.to_string(), "tls://pacs.example:2762");
        let t: Target = "[::1]:11112".parse().unwrap();
        assert_eq!(t.host, "::1");
        assert_eq!(t.to_string(), "[::1]:11112");
        for bad in ["host", "host:0", "host:x", ":104", "http://h:1"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
    }
}
