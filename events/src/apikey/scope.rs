//! What an API key may do: [`Scope`], with its stable names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One permission an API key can hold.
///
/// Stored and serialized as its name (`"tasks:write"`), fixed by explicit
/// renames and [`Scope::as_str`]; never renamed. `Admin` is a scope of its
/// own: whether it implies the others is the HTTP layer's policy, not
/// encoded here.
///
/// The order (`Ord`) is the declaration order, so a `BTreeSet<Scope>` always
/// lists scopes the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Submit and cancel tasks.
    #[serde(rename = "tasks:write")]
    TasksWrite,
    /// Read tasks and their results.
    #[serde(rename = "tasks:read")]
    TasksRead,
    /// Send messages to devices.
    #[serde(rename = "devices:write")]
    DevicesWrite,
    /// Read devices and their messages.
    #[serde(rename = "devices:read")]
    DevicesRead,
    /// Read the log and the auditors' findings.
    #[serde(rename = "audit:read")]
    AuditRead,
    /// Confirm what a ledger recorded (ledger sync consumers).
    #[serde(rename = "ledger:write")]
    LedgerWrite,
    /// Create, enable, replay and delete webhooks.
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    /// Read webhooks and their delivery logs.
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    /// Manage API keys and the service.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope, in order.
    pub const ALL: [Scope; 9] = [
        Self::TasksWrite,
        Self::TasksRead,
        Self::DevicesWrite,
        Self::DevicesRead,
        Self::AuditRead,
        Self::LedgerWrite,
        Self::WebhooksWrite,
        Self::WebhooksRead,
        Self::Admin,
    ];

    /// The stable name, as stored and serialized (`tasks:write`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TasksWrite => "tasks:write",
            Self::TasksRead => "tasks:read",
            Self::DevicesWrite => "devices:write",
            Self::DevicesRead => "devices:read",
            Self::AuditRead => "audit:read",
            Self::LedgerWrite => "ledger:write",
            Self::WebhooksWrite => "webhooks:write",
            Self::WebhooksRead => "webhooks:read",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    /// The stable name (`tasks:write`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = UnknownScope;

    /// The scope named exactly `name` (case-sensitive, no surrounding
    /// whitespace).
    ///
    /// # Errors
    /// [`UnknownScope`] when `name` is not one of the names in [`Scope::ALL`];
    /// its message lists the valid ones.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|scope| scope.as_str() == name)
            .ok_or_else(|| UnknownScope {
                name: name.to_owned(),
            })
    }
}

/// A scope name that is not one of [`Scope::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope {name:?}; valid scopes are tasks:write, tasks:read, devices:write, \
     devices:read, audit:read, ledger:write, webhooks:write, webhooks:read, admin"
)]
pub struct UnknownScope {
    /// The name that was given.
    pub name: String,
}
