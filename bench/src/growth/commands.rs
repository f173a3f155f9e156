//! The `commands` section of `growth`: the latency of device and ledger commands on streams
//! already holding 1k, 10k and 100k events (filled with realistic mixed
//! histories by batched appends), with snapshots on and off, interleaved in
//! the same run, as p50/p99 and their ratios to the shortest stream.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use secrecy::ExposeSecret;
use taskledger::config::settings::Settings;
use taskledger_events::command::{execute, CommandError};
use taskledger_events::device::{DeviceCommand, Devices, Imei, ReceiveDeviceMessage};
use taskledger_events::ledger::{
    ConfirmLedgerEntries, ConfirmationKind, LedgerName, Ledgers, PositionRange,
};
use taskledger_events::postgres::{PgEventStore, StoreOptions};
use taskledger_events::testing::{DeviceHistory, LedgerHistory};
use taskledger_events::{codec, EventStore, ExpectedVersion, Metadata, StreamId};
use uuid::Uuid;

use super::GrowthArgs;
use crate::measure::{millis, percentile};

/// Events per append while filling a stream.
const FILL_BATCH: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Device,
    Ledger,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Ledger => "ledger",
        }
    }
}

/// One measured stream: its kind and what the next command needs.
struct Stream {
    kind: Kind,
    id: StreamId,
    imei: Imei,
    ledger: LedgerName,
    /// The next momsn or position to use.
    next: u64,
}

impl Stream {
    /// The next command on it, run against `store`; its latency.
    async fn command(&mut self, store: &PgEventStore) -> anyhow::Result<Duration> {
        self.next += 1;
        let began = Instant::now();
        let outcome = match self.kind {
            Kind::Device => execute::<Devices>(
                store,
                &self.id,
                (
                    self.imei.clone(),
                    DeviceCommand::Receive(ReceiveDeviceMessage {
                        momsn: self.next,
                        transmit_time: "27-01-01 00:00:00".into(),
                        payload: vec![0x68, 0x69],
                        serial: Some(206_899),
                        latitude: Some(52.1),
                        longitude: Some(-0.2),
                        cep: Some(3.0),
                        received_at: Utc::now(),
                    }),
                ),
                Uuid::new_v4(),
                Metadata::default(),
            )
            .await
            .map(|_| ()),
            Kind::Ledger => execute::<Ledgers>(
                store,
                &self.id,
                ConfirmLedgerEntries {
                    ledger: self.ledger.clone(),
                    kind: ConfirmationKind::Events,
                    ranges: vec![PositionRange {
                        from: self.next,
                        to: self.next,
                    }],
                    reference: format!("tx-{}", self.next),
                    // The bench's positions run past the log's head: the
                    // head only bounds what `decide` accepts.
                    head: u64::MAX,
                    confirmed_at: Utc::now(),
                    confirmed_by: Some("bench".into()),
                    anchor: None,
                },
                Uuid::new_v4(),
                Metadata::default(),
            )
            .await
            .map(|_| ()),
        };
        outcome.map_err(|error: CommandError| anyhow::anyhow!("{error}"))?;
        Ok(began.elapsed())
    }
}

pub(super) async fn commands(settings: &Settings, args: &GrowthArgs) -> anyhow::Result<()> {
    let url = settings.database_url.expose_secret();
    let on = PgEventStore::connect(url, StoreOptions::default())?;
    let off = PgEventStore::connect(
        url,
        StoreOptions {
            snapshots: false,
            ..StoreOptions::default()
        },
    )?;
    let snapshots = on.snapshots().context("the store keeps snapshots")?;
    let run = Uuid::new_v4().as_u64_pair().0 % 1_000_000;
    let first = *args
        .command_lengths
        .first()
        .context("--command-lengths names none")?;
    let mut baseline: std::collections::HashMap<(&str, bool), (f64, f64)> = Default::default();
    for kind in [Kind::Device, Kind::Ledger] {
        for (index, &length) in args.command_lengths.iter().enumerate() {
            let mut stream = fill(&on, kind, run, index, length).await?;
            // Warm up both ways: the first load with snapshots on folds the
            // whole stream and writes the first snapshot.
            for _ in 0..3 {
                stream.command(&on).await?;
                stream.command(&off).await?;
            }
            snapshots.settled().await;
            let samples_off = (args.command_samples_off as u64)
                .min((args.command_samples as u64 * first / length.max(1)).max(10))
                as usize;
            let mut timed_on = Vec::with_capacity(args.command_samples);
            let mut timed_off = Vec::with_capacity(samples_off);
            for sample in 0..args.command_samples.max(samples_off) {
                if sample < args.command_samples {
                    timed_on.push(stream.command(&on).await?);
                }
                if sample < samples_off {
                    timed_off.push(stream.command(&off).await?);
                }
            }
            snapshots.settled().await;
            let mut p99s = Vec::new();
            for (snapshots_on, mut timed) in [(true, timed_on), (false, timed_off)] {
                timed.sort_unstable();
                let p50 = millis(percentile(&timed, 0.50));
                let p99 = millis(percentile(&timed, 0.99));
                let (base50, base99) = *baseline
                    .entry((kind.name(), snapshots_on))
                    .or_insert((p50, p99));
                println!(
                    "growth commands {} len={length} snapshots={} samples={} p50={p50:.2}ms p99={p99:.2}ms ratio_vs_len{first}=p50:{:.2},p99:{:.2}",
                    kind.name(),
                    if snapshots_on { "on" } else { "off" },
                    timed.len(),
                    p50 / base50,
                    p99 / base99,
                );
                p99s.push(p99);
            }
            println!(
                "growth commands {} len={length} p99_on_vs_off={:.3}",
                kind.name(),
                p99s[0] / p99s[1]
            );
        }
    }
    Ok(())
}

/// A new stream of `kind` holding `length` events, appended `FILL_BATCH`
/// at a time.
async fn fill(
    store: &PgEventStore,
    kind: Kind,
    run: u64,
    index: usize,
    length: u64,
) -> anyhow::Result<Stream> {
    let imei = Imei::new(&format!("30{run:06}{index:07}")).map_err(anyhow::Error::msg)?;
    let ledger = LedgerName::new(&format!("bench-{run}-{index}")).map_err(anyhow::Error::msg)?;
    let id = match kind {
        Kind::Device => imei.stream_id(),
        Kind::Ledger => StreamId::new(format!("ledger-{}", ledger.as_str()))?,
    };
    let began = Instant::now();
    let mut devices = DeviceHistory::new(imei.clone(), run);
    let mut ledgers = LedgerHistory::new(ledger.clone(), run);
    let mut version = 0;
    let mut next = 0;
    while version < length {
        let count = FILL_BATCH.min((length - version) as usize);
        let events: Vec<_> = match kind {
            Kind::Device => devices
                .by_ref()
                .take(count)
                .map(|event| codec::encode(&event, Uuid::new_v4(), Metadata::default()))
                .collect(),
            Kind::Ledger => ledgers
                .by_ref()
                .take(count)
                .map(|event| {
                    let taskledger_events::ledger::LedgerEvent::Confirmed(confirmed) = &event;
                    next = confirmed
                        .ranges
                        .iter()
                        .map(|r| r.to)
                        .max()
                        .unwrap_or(next)
                        .max(next);
                    codec::encode(&event, Uuid::new_v4(), Metadata::default())
                })
                .collect(),
        };
        let expected = if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        };
        store
            .append(&id, expected, events)
            .await
            .with_context(|| format!("filling {id}"))?;
        version += count as u64;
    }
    println!(
        "growth commands {} len={length} filled in {:.1}s",
        kind.name(),
        began.elapsed().as_secs_f64()
    );
    Ok(Stream {
        kind,
        id,
        imei,
        ledger,
        // Device: momsns past the history's; ledger: positions past the
        // highest confirmed (and past any hole a history left).
        next: match kind {
            Kind::Device => 10_000_000,
            Kind::Ledger => next + 1_000,
        },
    })
}
