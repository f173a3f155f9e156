//! Tenants: the organisations sharing one taskledger. Every API key belongs
//! to one tenant ([`Access::Tenant`]) or is a platform key that sees all of
//! them ([`Access::AllTenants`]); which, is fixed when the key is created and
//! recorded in its `ApiKeyCreated` event.
//!
//! A tenant is only a name: it exists because a key, task or device names
//! it, so there is no tenant aggregate to create first. Everything recorded
//! before tenants existed belongs to [`DEFAULT_TENANT`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The tenant of keys, tasks and devices recorded before tenants existed
/// (their events name none).
pub const DEFAULT_TENANT: &str = "default";

/// The longest tenant name, in bytes.
pub const MAX_TENANT_BYTES: usize = 63;

/// A tenant's name: 1 to [`MAX_TENANT_BYTES`] bytes of lowercase ASCII
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit — safe
/// in a URL, a header, a file name and a log line as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantName(String);

impl TenantName {
    /// The name [`DEFAULT_TENANT`].
    pub fn default_tenant() -> Self {
        Self(DEFAULT_TENANT.to_owned())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a tenant name was refused; its message names the accepted form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a tenant name: use 1 to 63 lowercase letters, digits, '-', '_' or '.', \
     starting with a letter or digit"
)]
pub struct InvalidTenantName(pub String);

impl FromStr for TenantName {
    type Err = InvalidTenantName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let allowed = |byte: u8| matches!(byte, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.');
        let valid = !text.is_empty()
            && text.len() <= MAX_TENANT_BYTES
            && text.bytes().all(allowed)
            && text.as_bytes()[0].is_ascii_alphanumeric();
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidTenantName(text.to_owned()))
        }
    }
}

impl TryFrom<String> for TenantName {
    type Error = InvalidTenantName;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<TenantName> for String {
    fn from(name: TenantName) -> Self {
        name.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whose work a key reaches. Stored in `ApiKeyCreated` as
/// `{"tenant": "acme"}` or `"all_tenants"`; a key created before tenants
/// existed reads as [`DEFAULT_TENANT`]'s (the [`Default`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// One tenant's keys, tasks and devices only.
    Tenant(TenantName),
    /// A platform key: every tenant's.
    AllTenants,
}

impl Default for Access {
    fn default() -> Self {
        Self::Tenant(TenantName::default_tenant())
    }
}

impl Access {
    /// The one tenant the key is limited to; `None` for a platform key.
    pub fn tenant(&self) -> Option<&TenantName> {
        match self {
            Self::Tenant(tenant) => Some(tenant),
            Self::AllTenants => None,
        }
    }

    /// Whether the key reaches what belongs to `tenant`.
    pub fn reaches(&self, tenant: &str) -> bool {
        match self {
            Self::Tenant(own) => own.as_str() == tenant,
            Self::AllTenants => true,
        }
    }

    /// Whether this is a platform key.
    pub fn is_platform(&self) -> bool {
        matches!(self, Self::AllTenants)
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tenant(tenant) => write!(f, "tenant {tenant}"),
            Self::AllTenants => f.write_str("all tenants"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_lowercase_words_of_at_most_63_bytes() {
        for good in ["acme", "a", "org-2", "x_y.z", &"a".repeat(63)] {
            assert!(good.parse::<TenantName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Acme",
            "-acme",
            "a b",
            "a/b",
            "ünï",
            "a\0",
            &"a".repeat(64),
        ] {
            let error = bad.parse::<TenantName>().unwrap_err();
            assert!(error.to_string().contains("lowercase letters"), "{error}");
        }
    }

    #[test]
    fn access_is_stored_as_a_tenant_object_or_all_tenants() {
        let acme = Access::Tenant("acme".parse().unwrap());
        assert_eq!(
            serde_json::to_value(&acme).unwrap(),
            json!({"tenant": "acme"})
        );
        assert_eq!(
            serde_json::to_value(Access::AllTenants).unwrap(),
            json!("all_tenants")
        );
        let back: Access = serde_json::from_value(json!({"tenant": "acme"})).unwrap();
        assert_eq!(back, acme);
        assert!(serde_json::from_value::<Access>(json!({"tenant": "Bad Name"})).is_err());
    }

    #[test]
    fn a_tenant_key_reaches_its_own_tenant_and_a_platform_key_every_one() {
        let acme = Access::Tenant("acme".parse().unwrap());
        assert!(acme.reaches("acme") && !acme.reaches("globex"));
        assert!(Access::AllTenants.reaches("acme") && Access::AllTenants.reaches("globex"));
        assert_eq!(Access::default().tenant().unwrap().as_str(), DEFAULT_TENANT);
    }
}
