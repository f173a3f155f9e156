//! `taskledger devices`: what a platform admin does to devices from the
//! command line — assign one to a tenant (the CLI's `PUT /v1/devices/{imei}`).

use anyhow::Context as _;
use chrono::{SubsecRound, Utc};
use clap::Subcommand;
use taskledger_events::device::{AssignDevice, DeviceCommand, Imei};
use taskledger_events::postgres::PgEventStore;
use taskledger_events::tenant::TenantName;
use taskledger_events::Metadata;

use crate::commands::execute_device;

/// What to do with devices.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Assign a device to a tenant: from now on that tenant's keys send to
    /// it and read it, and no other tenant's do.
    Assign {
        /// The modem's IMEI (15 digits).
        #[arg(value_parser = parse_imei)]
        imei: Imei,
        /// The tenant it belongs to from now on.
        #[arg(long)]
        tenant: TenantName,
    },
}

fn parse_imei(text: &str) -> Result<Imei, String> {
    Imei::new(text)
}

/// Runs a `devices` subcommand against `store`.
///
/// # Errors
/// A database failure or a refused command, with a message saying which.
pub async fn run(store: &PgEventStore, command: DevicesCommand) -> anyhow::Result<()> {
    match command {
        DevicesCommand::Assign { imei, tenant } => {
            let command = DeviceCommand::Assign(AssignDevice {
                tenant: tenant.clone(),
                assigned_at: Utc::now().trunc_subsecs(6),
                assigned_by: Some("cli".into()),
            });
            let executed = execute_device(store, &imei, command, Metadata::of_actor("cli"))
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))
                .with_context(|| format!("assigning device {}", imei.as_str()))?;
            let changed = if executed.events.is_empty() {
                " (it already was)"
            } else {
                ""
            };
            println!(
                "device {} is assigned to tenant {tenant}{changed}",
                imei.as_str()
            );
            Ok(())
        }
    }
}
