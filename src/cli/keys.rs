//! `taskledger keys create|list|revoke|rotate`: API keys from the command
//! line. Creation, revocation and rotation are events (so access changes are
//! audited, and the service sees them on its next request); only a SHA-256
//! of each secret is stored, and the secret itself is shown once.

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::time::Duration;

use anyhow::Context;
use chrono::{SecondsFormat, Utc};
use secrecy::ExposeSecret;
use taskledger_events::apikey::{
    hash_secret, ApiKeyCommand, ApiKeyId, ApiKeys, CreateApiKey, RevokeApiKey, RotateApiKey, Scope,
};
use taskledger_events::command::CommandError;
use taskledger_events::postgres::PgEventStore;
use taskledger_events::tenant::{Access, TenantName};
use taskledger_events::Metadata;
use taskledger_projections::api_keys::ApiKeysProjector;
use taskledger_projections::runtime::RuntimeOptions;
use taskledger_projections::ProjectorRuntime;
use uuid::Uuid;

use crate::commands::execute;
use crate::http::keys::new_secret;

/// How long `keys list` waits for a running service's projector.
const CATCH_UP: Duration = Duration::from_secs(10);

/// The `keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create a key and print it once, alone on the last line of output.
    /// Name exactly one of --tenant and --all-tenants.
    #[command(group(clap::ArgGroup::new("access").required(true).multiple(false)))]
    Create {
        /// What the key is for (1 to 100 bytes).
        #[arg(long)]
        name: String,
        /// Comma-separated: tasks:write, tasks:read, devices:write,
        /// devices:read, audit:read, ledger:write, webhooks:write, webhooks:read, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// The one tenant whose tasks and devices the key reaches.
        #[arg(long, group = "access")]
        tenant: Option<TenantName>,
        /// A platform key: every tenant's tasks and devices, the global
        /// feeds and the operations routes.
        #[arg(long, group = "access")]
        all_tenants: bool,
        /// Stop working after this long: a number and a unit, such as
        /// 30d, 12h, 15m or 2s (units may be combined: 1h30m).
        #[arg(long, value_parser = parse_expires_in)]
        expires_in: Option<Duration>,
        /// At most this many requests per second (a whole number, at least
        /// 1) instead of the service's default (`[limits]`).
        #[arg(long)]
        rate_limit: Option<NonZeroU32>,
    },
    /// List keys (never their secrets); a platform key's tenant is `*`.
    List,
    /// Revoke a key by its id.
    Revoke {
        /// The key's id (from `keys create` or `keys list`).
        key_id: Uuid,
        /// Why, for the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Give a key a new secret, printed once on the last line; the old
    /// secret keeps working for --grace, then stops.
    Rotate {
        /// The key's id (from `keys create` or `keys list`).
        key_id: Uuid,
        /// How long the old secret keeps working: 0s (the default: at once,
        /// as after a leak) up to 7d, such as 10m or 1h.
        #[arg(long, value_parser = parse_grace, default_value = "0s")]
        grace: Duration,
    },
}

/// Runs a `keys` subcommand against `store`.
///
/// # Errors
/// Bad scopes or names, an unknown or already revoked key, or a database
/// failure, each with a message that says which.
pub async fn run(store: &PgEventStore, command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create {
            name,
            scopes,
            tenant,
            all_tenants: _,
            expires_in,
            rate_limit,
        } => {
            // clap requires exactly one of --tenant and --all-tenants.
            let access = tenant.map_or(Access::AllTenants, Access::Tenant);
            let created_at = Utc::now();
            let expires_at = expires_in
                .map(|duration| {
                    chrono::Duration::from_std(duration)
                        .ok()
                        .and_then(|duration| created_at.checked_add_signed(duration))
                        .context("--expires-in is too long")
                })
                .transpose()?;
            let scopes = scopes
                .iter()
                .map(|scope| scope.trim().parse::<Scope>())
                .collect::<Result<BTreeSet<_>, _>>()?;
            let key_id = ApiKeyId(Uuid::new_v4());
            let secret = new_secret(key_id);
            let command = ApiKeyCommand::Create(CreateApiKey {
                key_id,
                name: name.clone(),
                scopes: scopes.clone(),
                key_hash: hash_secret(secret.expose_secret()),
                created_at,
                created_by: Some("cli".into()),
                access: access.clone(),
                expires_at,
                rate_limit,
            });
            append(store, key_id, command).await?;
            let scopes: Vec<&str> = scopes.iter().map(|scope| scope.as_str()).collect();
            let expiry = expires_at.map_or_else(String::new, |at| {
                format!(
                    ", expiring {}",
                    at.to_rfc3339_opts(SecondsFormat::Secs, true)
                )
            });
            println!(
                "created API key {key_id} ({name}) for {access} with scopes {}{expiry}",
                scopes.join(",")
            );
            println!("send it as 'Authorization: Bearer <key>'; it is shown only now:");
            println!("{}", secret.expose_secret());
            Ok(())
        }
        KeysCommand::List => {
            ProjectorRuntime::new(store.clone(), ApiKeysProjector, RuntimeOptions::default())
                .catch_up(CATCH_UP)
                .await
                .context("bringing the api_keys projection up to date")?;
            let client = store
                .pool()
                .get()
                .await
                .context("connecting to the database")?;
            let rows = client
                .query(
                    "SELECT key_id, name, array_to_string(scopes, ','), created_at, revoked_at,
                            COALESCE(tenant, '*'), expires_at
                     FROM api_keys ORDER BY created_at, key_id",
                    &[],
                )
                .await
                .context("reading api_keys")?;
            println!(
                "{:<36}  {:<20}  {:<16}  {:<40}  {:<20}  status",
                "id", "name", "tenant", "scopes", "created"
            );
            for row in rows {
                let key_id: Uuid = row.get(0);
                let name: String = row.get(1);
                let scopes: String = row.get(2);
                let created: chrono::DateTime<Utc> = row.get(3);
                let revoked: Option<chrono::DateTime<Utc>> = row.get(4);
                let tenant: String = row.get(5);
                let expires: Option<chrono::DateTime<Utc>> = row.get(6);
                let status = match (revoked, expires) {
                    (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    (None, Some(at)) if at <= Utc::now() => {
                        format!("expired {}", at.format("%Y-%m-%d %H:%M"))
                    }
                    (None, Some(at)) => format!("active until {}", at.format("%Y-%m-%d %H:%M")),
                    (None, None) => "active".to_owned(),
                };
                println!(
                    "{key_id:<36}  {name:<20}  {tenant:<16}  {scopes:<40}  {:<20}  {status}",
                    created.format("%Y-%m-%d %H:%M")
                );
            }
            Ok(())
        }
        KeysCommand::Revoke { key_id, reason } => {
            let key_id = ApiKeyId(key_id);
            let command = ApiKeyCommand::Revoke(RevokeApiKey {
                key_id,
                reason,
                revoked_at: Utc::now(),
                revoked_by: Some("cli".into()),
            });
            append(store, key_id, command).await?;
            println!("revoked API key {key_id}");
            Ok(())
        }
        KeysCommand::Rotate { key_id, grace } => {
            let key_id = ApiKeyId(key_id);
            let secret = new_secret(key_id);
            let rotated_at = Utc::now();
            let grace = chrono::Duration::from_std(grace).context("--grace is too long")?;
            let command = ApiKeyCommand::Rotate(RotateApiKey {
                key_id,
                key_hash: hash_secret(secret.expose_secret()),
                grace,
                rotated_at,
                rotated_by: Some("cli".into()),
            });
            append(store, key_id, command).await?;
            let until = rotated_at + grace;
            println!(
                "rotated API key {key_id}; the old secret works until {}",
                until.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
            println!("send the new one as 'Authorization: Bearer <key>'; it is shown only now:");
            println!("{}", secret.expose_secret());
            Ok(())
        }
    }
}

/// `--grace`: a duration such as `10m`, `1h` or `0s`.
fn parse_grace(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|_| {
        format!("{text:?} is not a duration: use a number and a unit, such as 0s, 10m, 1h or 7d")
    })
}

/// `--expires-in`: a positive duration such as `30d` or `2s`.
fn parse_expires_in(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!(
            "{text:?} is not a duration: use a number and a unit, such as 30d, 12h, 15m or 2s"
        )),
    }
}

/// Runs `command` on the key's stream as the command line (the log's
/// actor `cli`); a refusal or failure says why.
async fn append(
    store: &PgEventStore,
    key_id: ApiKeyId,
    command: ApiKeyCommand,
) -> anyhow::Result<()> {
    execute::<ApiKeys>(
        store,
        &key_id.stream_id(),
        command,
        Uuid::new_v4(),
        Metadata::of_actor("cli"),
    )
    .await
    .map(|_| ())
    .map_err(|error: CommandError| anyhow::anyhow!("{error}"))
}
