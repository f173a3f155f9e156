//! Where a webhook may point: a URL's host is resolved and every address it
//! resolves to is checked ([`resolve`]); loopback, private, link-local,
//! shared (carrier-grade NAT), unique-local, multicast, unspecified and
//! cloud-metadata addresses are refused unless `[webhooks]
//! allow_private_targets` is on. The HTTP API checks at creation and the
//! deliverer again before every attempt, and connects only to an address it
//! checked (DNS rebinding: a name that resolved to a public address at
//! creation may resolve to 127.0.0.1 later).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;

/// A target that was refused, and why, for a 422 or a delivery's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// A checked target: the URL, its host and the addresses it may be reached
/// at (every one allowed).
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL.
    pub url: Url,
    /// Its host name (or address), as written.
    pub host: String,
    /// Where it resolved to.
    pub addresses: Vec<SocketAddr>,
}

/// Resolves `url`'s host and checks every address.
///
/// # Errors
/// [`Refused`], naming the rule: not http(s), credentials, no host, does
/// not resolve, or
/// an address that is not allowed (unless `allow_private`).
pub async fn resolve(url: &str, allow_private: bool) -> Result<Target, Refused> {
    let parsed = Url::parse(url).map_err(|error| Refused(format!("url {url:?}: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refused("url must start with http:// or https://".into()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Refused(
            "url must not contain credentials (user:password@); receivers check the signature instead"
                .into(),
        ));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| Refused("url must name a host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| Refused("url has no port".into()))?;
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|error| Refused(format!("the url's host {host:?} does not resolve: {error}")))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(Refused(format!(
            "the url's host {host:?} resolves to no address"
        )));
    }
    if !allow_private {
        if let Some((address, what)) = addresses
            .iter()
            .find_map(|address| forbidden(address.ip()).map(|what| (address.ip(), what)))
        {
            return Err(Refused(format!(
                "the url's host {host:?} resolves to {address}, a {what} address; webhooks may \
                 only point at public addresses (unless [webhooks] allow_private_targets = true)"
            )));
        }
    }
    Ok(Target {
        url: parsed,
        host,
        addresses,
    })
}

/// What kind of address that may not be a target `ip` is, if it is one.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        Some("cloud metadata")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast or reserved")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if first == 0xfd00 && ip.segments()[1] == 0x0ec2 {
        Some("cloud metadata")
    } else if (first & 0xfe00) == 0xfc00 {
        Some("unique-local (private)")
    } else if (first & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast or reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_named() {
        for (address, what) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "cloud metadata"),
            ("169.254.3.4", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("0.0.0.0", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("fd12::1", "unique-local (private)"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fe80::1", "link-local"),
        ] {
            assert_eq!(forbidden(address.parse().unwrap()), Some(what), "{address}");
        }
        for address in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert_eq!(forbidden(address.parse().unwrap()), None, "{address}");
        }
    }

    #[tokio::test]
    async fn literal_addresses_are_checked_without_dns() {
        let refused = resolve("http://127.0.0.1:9/hook", false).await.unwrap_err();
        assert!(refused.0.contains("loopback"), "{refused}");
        assert!(refused.0.contains("allow_private_targets"), "{refused}");
        let refused = resolve("http://[::1]:9/hook", false).await.unwrap_err();
        assert!(refused.0.contains("loopback"), "{refused}");
        let target = resolve("http://127.0.0.1:9/hook", true).await.unwrap();
        assert_eq!(target.addresses, vec!["127.0.0.1:9".parse().unwrap()]);
        assert!(resolve("ftp://127.0.0.1/", true).await.is_err());
    }
}
