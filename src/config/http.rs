//! `[http]`: where the local API listens, which `Host` names it answers to, and the optional
//! bearer token that state-changing requests must carry.

use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// Default HTTP listen address.
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:7331";
/// Shortest accepted API token: shorter ones can be guessed over the network.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest accepted API token file (after trimming, the token); a larger file is a mistake.
pub const MAX_TOKEN_LEN: usize = 4096;

/// `[http]` section.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the local API and dashboard. Default `127.0.0.1:7331` (loopback only).
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// `Host` names (or addresses), each with an optional port, the API answers to besides
    /// loopback names and addresses and the listen address. Requests naming any other host
    /// are refused, so a web page cannot reach the API through a DNS name rebound to it.
    #[serde(default)]
    pub allowed_hosts: Vec<AllowedHost>,
    /// A file holding a bearer token; when set, every state-changing request must carry
    /// `Authorization: Bearer <token>`. Reads stay open.
    pub token_file: Option<PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            allowed_hosts: Vec::new(),
            token_file: None,
        }
    }
}

fn default_http_listen() -> SocketAddr {
    DEFAULT_HTTP_LISTEN.parse().expect("constant address")
}

/// The warning to give when the API listens beyond loopback without a token: then anyone
/// who can reach the port can start jobs (uploads still need a signer's key), and read the
/// whole mesh.
pub fn exposure_warning(http: &HttpConfig) -> Option<String> {
    if http.listen.ip().to_canonical().is_loopback() || http.token_file.is_some() {
        return None;
    }
    Some(format!(
        "the HTTP API listens on {}, beyond loopback, without [http] token_file: anyone who can reach it can start jobs and read the whole mesh; set token_file, or listen on 127.0.0.1",
        http.listen
    ))
}

/// One entry of `allowed_hosts`: a DNS name or IP address, lowercased, IPv6 without brackets,
/// and a port if the entry names one (then only that port is allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    /// Name or address, lowercase, no trailing dot, IPv6 without brackets.
    pub host: String,
    /// The only port allowed with it, if given.
    pub port: Option<u16>,
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

/// Splits a `Host` value (`name`, `name:port`, `1.2.3.4:port`, `[v6]`, `[v6]:port`; a bare
/// IPv6 literal too) into its lowercased host, without a trailing dot or brackets, and port.
/// `None` when it is not of that shape.
pub fn split_host_port(value: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match tail {
            "" => None,
            t => Some(t.strip_prefix(':')?),
        };
        (h, port)
    } else {
        match value.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => (value, None), // bare IPv6 literal
            Some((h, p)) => (h, Some(p)),
            None => (value, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let valid = host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')));
    valid.then_some((host, port))
}

impl FromStr for AllowedHost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.contains('*') {
            return Err(format!(
                "invalid allowed host {s:?}: wildcards are not supported; list each name the API is reached by"
            ));
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "invalid allowed host {s:?}: give a host name or address with an optional port, not a URL (e.g. \"shoal.example.com\" or \"10.0.0.5:7331\")"
            ));
        }
        let (host, port) = split_host_port(s).ok_or_else(|| {
            format!("invalid allowed host {s:?}: expected a host name or address with an optional port, e.g. \"shoal.example.com\" or \"[fd00::5]:7331\"")
        })?;
        Ok(AllowedHost { host, port })
    }
}

impl<'de> Deserialize<'de> for AllowedHost {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Reads an API token file: the token is its content with surrounding whitespace trimmed. It
/// must be at least [`MIN_TOKEN_LEN`] visible ASCII characters without spaces (it travels in
/// an HTTP header), and the file must not be accessible to others than its owner and group
/// (`chmod o-rwx`), like any secret.
pub fn read_token(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o007 != 0 {
            return Err(format!(
                "{}: readable or writable by others (mode {:o}); run chmod o-rwx on it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    let mut text = String::new();
    file.take(MAX_TOKEN_LEN as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "{}: longer than {MAX_TOKEN_LEN} bytes; it should hold only the token",
            path.display()
        ));
    }
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "{}: is empty; put a token in it, e.g. `openssl rand -hex 32 > {}`",
            path.display(),
            path.display()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{}: the token must be visible ASCII characters without spaces (it is sent in an HTTP header)",
            path.display()
        ));
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "{}: the token is shorter than {MIN_TOKEN_LEN} characters; use e.g. `openssl rand -hex 32`",
            path.display()
        ));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::collections::HashMap;

    const ALLOW: &str = "[network]\ntrusted_nodes = [\"Gb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\"]\n";

    fn parse_text(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse(
            text,
            Path::new("/etc/shoal/shoal.toml"),
            &HashMap::<String, String>::new(),
        )
    }

    #[test]
    fn host_values_split() {
        let ok = |s: &str, h: &str, p: Option<u16>| assert_eq!(split_host_port(s), Some((h.to_string(), p)), "{s}");
        ok("localhost", "localhost", None);
        ok("LocalHost:7331", "localhost", Some(7331));
        ok("shoal.example.com.", "shoal.example.com", None);
        ok("127.0.0.1:80", "127.0.0.1", Some(80));
        ok("[::1]:7331", "::1", Some(7331));
        ok("[::1]", "::1", None);
        ok("::1", "::1", None);
        for bad in [
            "",
            ":80",
            "a b",
            "evil.example:x",
            "[::1",
            "[nope]:1",
            "a..b",
            "host:99999",
            "a/b",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn allowed_hosts_parse() {
        let h: AllowedHost = "Shoal.Example.com:8080".parse().unwrap();
        assert_eq!((h.host.as_str(), h.port), ("shoal.example.com", Some(8080)));
        assert_eq!(h.to_string(), "shoal.example.com:8080");
        let h: AllowedHost = "fd00::5".parse().unwrap();
        assert_eq!(h.to_string(), "[fd00::5]");
        for (bad, says) in [
            ("*", "wildcards"),
            ("*.example.com", "wildcards"),
            ("http://x", "not a URL"),
            ("", "expected a host"),
            ("a b", "expected a host"),
        ] {
            let e = bad.parse::<AllowedHost>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn token_files_are_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let good = write("good", "  0123456789abcdef0123\n", 0o640);
        assert_eq!(read_token(&good).unwrap(), "0123456789abcdef0123");
        for (name, text, mode, says) in [
            ("empty", "\n  \n", 0o600, "is empty"),
            ("short", "abc", 0o600, "shorter than"),
            ("spaces", "0123456789 abcdef", 0o600, "visible ASCII"),
            ("open", "0123456789abcdef0123", 0o644, "chmod o-rwx"),
        ] {
            let e = read_token(&write(name, text, mode)).unwrap_err();
            assert!(e.contains(says), "{name}: {e}");
        }
        let huge = write("huge", &"a".repeat(MAX_TOKEN_LEN + 1), 0o600);
        assert!(read_token(&huge).unwrap_err().contains("longer than"));
        assert!(read_token(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn http_access_settings_are_checked() {
        let c = parse_text(&format!(
            "{ALLOW}[http]\nallowed_hosts = [\"Shoal.example.com\", \"10.0.0.5:7331\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.http.allowed_hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            ["shoal.example.com", "10.0.0.5:7331"]
        );
        let err = parse_text(&format!("{ALLOW}[http]\nallowed_hosts = [\"*\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 4") && err.contains("allowed_hosts") && err.contains("wildcards"),
            "{err}"
        );
        // The token file is read at check time: a missing, empty or world-readable file is
        // refused with the key and its line.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("shoal.toml");
        let check = |token: Option<(&str, u32)>| {
            let file = dir.path().join("api.token");
            let _ = std::fs::remove_file(&file);
            if let Some((text, mode)) = token {
                std::fs::write(&file, text).unwrap();
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            Config::parse(
                &format!("{ALLOW}[http]\nlisten = \"0.0.0.0:7331\"\ntoken_file = \"api.token\"\n"),
                &config_path,
                &HashMap::<String, String>::new(),
            )
        };
        let c = check(Some(("s3cret-token-0123456789\n", 0o600))).unwrap();
        assert_eq!(
            c.api_token(&config_path).unwrap().as_deref(),
            Some("s3cret-token-0123456789")
        );
        for (token, says) in [
            (None, "No such file"),
            (Some(("\n", 0o600)), "is empty"),
            (Some(("s3cret-token-0123456789", 0o644)), "chmod o-rwx"),
        ] {
            let err = check(token).unwrap_err().to_string();
            assert!(
                err.contains("shoal.toml:5") && err.contains("http.token_file") && err.contains(says),
                "{err}"
            );
        }
    }
}
