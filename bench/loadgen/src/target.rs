//! The server under test: its address from `--url`, and TCP connects with an
//! optional source address (to spread many clients over 127.0.0.0/8).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::net::{TcpSocket, TcpStream};

/// Where the server listens, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resolved socket address.
    pub addr: SocketAddr,
    /// The `Host` header value (`host:port`).
    pub host: String,
    /// A path prefix from the URL (without a trailing slash), usually empty.
    pub base_path: String,
}

impl Target {
    /// Parses `http://host:port[/prefix]` and resolves the host.
    pub async fn resolve(url: &str) -> Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("ws://"))
            .ok_or_else(|| anyhow!("--url must start with http:// (got {url:?}); TLS is not supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("--url has no host: {url:?}");
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::time::timeout(Duration::from_secs(10), tokio::net::lookup_host(with_port.as_str()))
            .await
            .map_err(|_| anyhow!("resolving {with_port} timed out"))?
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .ok_or_else(|| anyhow!("{with_port} resolves to no address"))?;
        Ok(Target { addr, host: authority.to_string(), base_path: path.trim_end_matches('/').to_string() })
    }

    /// Opens a TCP connection (TCP_NODELAY), bound to `source` first when given.
    pub async fn connect(&self, source: Option<IpAddr>, timeout: Duration) -> Result<TcpStream> {
        let socket = if self.addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .context("creating a socket (out of file descriptors?)")?;
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding the source address {ip}"))?;
        }
        let stream = tokio::time::timeout(timeout, socket.connect(self.addr))
            .await
            .map_err(|_| anyhow!("TCP connect to {} timed out", self.addr))?
            .with_context(|| format!("TCP connect to {}", self.addr))?;
        stream.set_nodelay(true).context("setting TCP_NODELAY")?;
        Ok(stream)
    }
}

/// Source addresses for clients: none (the kernel picks), or `count` loopback
/// addresses 127.0.1.1, 127.0.1.2, … each with its own ephemeral port range.
#[derive(Debug, Clone, Copy)]
pub struct SourceIps {
    count: u32,
}

/// Connections per source address when the count is chosen automatically
/// (the default ephemeral range 32768–60999 holds about 28,000).
pub const AUTO_CLIENTS_PER_SOURCE_IP: u64 = 20_000;

impl SourceIps {
    /// Chooses the addresses: `requested` if given (0 = none), else one per
    /// 20,000 clients when there are more than that and the target is loopback.
    pub fn choose(requested: Option<u32>, clients: u64, target: &Target) -> Result<SourceIps> {
        let loopback = target.addr.ip().is_loopback() && target.addr.is_ipv4();
        let count = match requested {
            Some(0) => 0,
            Some(k) => {
                if !loopback {
                    bail!("--source-ips needs an IPv4 loopback server address (127.x.x.x), got {}", target.addr);
                }
                if k > 65_000 {
                    bail!("--source-ips {k} is too many (at most 65000)");
                }
                k
            }
            None if loopback && clients > AUTO_CLIENTS_PER_SOURCE_IP => {
                u32::try_from(clients.div_ceil(AUTO_CLIENTS_PER_SOURCE_IP)).unwrap_or(65_000).min(65_000)
            }
            None => 0,
        };
        Ok(SourceIps { count })
    }

    /// How many addresses are used (0: the kernel's choice).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The source address for client `i`.
    pub fn for_client(&self, i: u64) -> Option<IpAddr> {
        if self.count == 0 {
            return None;
        }
        let base = u32::from(Ipv4Addr::new(127, 0, 1, 1));
        let offset = u32::try_from(i % u64::from(self.count)).unwrap_or(0);
        Some(IpAddr::V4(Ipv4Addr::from(base + offset)))
    }

    /// A readable description, e.g. `127.0.1.1..127.0.1.5`.
    pub fn describe(&self) -> String {
        match (self.for_client(0), self.for_client(u64::from(self.count.saturating_sub(1)))) {
            (Some(a), Some(b)) => format!("{} source addresses {a}..{b}", self.count),
            _ => "kernel-chosen source address".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_urls() -> Result<()> {
        let t = Target::resolve("http://127.0.0.1:4000").await?;
        assert_eq!(t.addr, "127.0.0.1:4000".parse()?);
        assert_eq!(t.host, "127.0.0.1:4000");
        assert_eq!(t.base_path, "");
        let t = Target::resolve("http://127.0.0.1:4000/prefix/").await?;
        assert_eq!(t.base_path, "/prefix");
        assert!(Target::resolve("https://127.0.0.1:4000").await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn spreads_source_addresses() -> Result<()> {
        let t = Target::resolve("http://127.0.0.1:4000").await?;
        let s = SourceIps::choose(None, 100_000, &t)?;
        assert_eq!(s.count(), 5);
        assert_eq!(s.for_client(0), Some("127.0.1.1".parse()?));
        assert_eq!(s.for_client(6), Some("127.0.1.2".parse()?));
        assert_eq!(SourceIps::choose(None, 1000, &t)?.for_client(3), None);
        assert_eq!(SourceIps::choose(Some(300), 10, &t)?.for_client(299), Some("127.0.2.44".parse()?));
        Ok(())
    }
}
