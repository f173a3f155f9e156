//! Long, realistic streams for snapshot tests and the `growth` benchmark:
//! a device's mixed history (mostly messages it sent, with outbound
//! messages queued, attempted, sent or failed and retried, and now and then
//! an assignment) and a ledger's confirmations (in order, with holes filled
//! later). Deterministic for a seed; every event is one `decide` could have
//! produced from the events before it.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::device::{
    DeviceAssigned, DeviceEvent, DeviceMessageFailed, DeviceMessageQueued, DeviceMessageReceived,
    DeviceMessageSendAttempted, DeviceMessageSent, Imei,
};
use crate::ledger::{LedgerEntriesConfirmed, LedgerEvent, LedgerName, PositionRange};
use crate::tenant::TenantName;

/// A small deterministic generator (SplitMix64): enough spread for a mix
/// of kinds, and no dependency.
#[derive(Debug, Clone)]
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// An outbound message in flight: its id, its attempts so far and whether
/// one is under way.
#[derive(Debug, Clone)]
struct InFlight {
    message_id: Uuid,
    attempts: u32,
    sending: bool,
}

/// A device's history, one event at a time (an endless iterator).
#[derive(Debug, Clone)]
pub struct DeviceHistory {
    imei: Imei,
    mix: Mix,
    at: DateTime<Utc>,
    momsn: u64,
    in_flight: Vec<InFlight>,
    mt_id: u64,
}

impl DeviceHistory {
    /// The history of `imei`, shaped by `seed`.
    pub fn new(imei: Imei, seed: u64) -> Self {
        Self {
            imei,
            mix: Mix(seed),
            at: DateTime::from_timestamp(1_767_225_600, 0).expect("a valid time"),
            momsn: 0,
            in_flight: Vec::new(),
            mt_id: 0,
        }
    }

    fn received(&mut self) -> DeviceEvent {
        self.momsn += 1;
        DeviceEvent::Received(DeviceMessageReceived {
            imei: self.imei.clone(),
            momsn: self.momsn,
            transmit_time: self.at.format("%y-%m-%d %H:%M:%S").to_string(),
            payload_hex: format!("{:016x}", self.mix.next()),
            serial: Some(206_899),
            latitude: Some(52.0 + self.mix.below(1_000) as f64 / 1_000.0),
            longitude: Some(-0.5 + self.mix.below(1_000) as f64 / 1_000.0),
            cep: Some(3.0),
            received_at: self.at,
        })
    }

    /// The next step of an outbound message (or a new one).
    fn outbound(&mut self) -> DeviceEvent {
        if self.in_flight.len() < 3 && (self.in_flight.is_empty() || self.mix.below(3) == 0) {
            let message_id = Uuid::from_u64_pair(self.mix.next(), self.mix.next());
            self.in_flight.push(InFlight {
                message_id,
                attempts: 0,
                sending: false,
            });
            return DeviceEvent::Queued(DeviceMessageQueued {
                imei: self.imei.clone(),
                message_id,
                payload_hex: "68656c6c6f".into(),
                flush: false,
                queued_at: self.at,
                queued_by: Some("key-1".into()),
            });
        }
        let index = self.mix.below(self.in_flight.len() as u64) as usize;
        let message = self.in_flight[index].clone();
        if !message.sending {
            let attempt = message.attempts + 1;
            self.in_flight[index].attempts = attempt;
            self.in_flight[index].sending = true;
            return DeviceEvent::SendAttempted(DeviceMessageSendAttempted {
                message_id: message.message_id,
                attempt,
                attempted_at: self.at,
            });
        }
        // An attempt is under way: its answer.
        let attempt = message.attempts;
        let succeeded = self.mix.below(4) != 0;
        let final_failure = !succeeded && attempt >= 3;
        if succeeded || final_failure {
            self.in_flight.remove(index);
        } else {
            // Queued again for its next attempt.
            self.in_flight[index].sending = false;
        }
        if succeeded {
            self.mt_id += 1;
            DeviceEvent::Sent(DeviceMessageSent {
                message_id: message.message_id,
                attempt,
                mt_id: self.mt_id,
                sent_at: self.at,
            })
        } else {
            DeviceEvent::Failed(DeviceMessageFailed {
                message_id: message.message_id,
                attempt,
                code: Some(32),
                text: "no network service".into(),
                permanent: false,
                final_failure,
                failed_at: self.at,
                retry_at: (!final_failure).then(|| self.at + Duration::seconds(30)),
            })
        }
    }
}

impl Iterator for DeviceHistory {
    type Item = DeviceEvent;

    fn next(&mut self) -> Option<DeviceEvent> {
        self.at += Duration::seconds(60);
        let event = match self.mix.below(100) {
            0 => DeviceEvent::Assigned(DeviceAssigned {
                imei: self.imei.clone(),
                tenant: TenantName::default_tenant(),
                assigned_at: self.at,
                assigned_by: Some("platform".into()),
            }),
            1..=69 => self.received(),
            _ => self.outbound(),
        };
        Some(event)
    }
}

/// A ledger's confirmations, one event at a time (an endless iterator):
/// mostly the next few positions, sometimes leaving a hole that a later
/// confirmation fills.
#[derive(Debug, Clone)]
pub struct LedgerHistory {
    ledger: LedgerName,
    mix: Mix,
    at: DateTime<Utc>,
    next: u64,
    hole: Option<PositionRange>,
}

impl LedgerHistory {
    /// The confirmations of `ledger`, shaped by `seed`.
    pub fn new(ledger: LedgerName, seed: u64) -> Self {
        Self {
            ledger,
            mix: Mix(seed),
            at: DateTime::from_timestamp(1_767_225_600, 0).expect("a valid time"),
            next: 1,
            hole: None,
        }
    }
}

impl Iterator for LedgerHistory {
    type Item = LedgerEvent;

    fn next(&mut self) -> Option<LedgerEvent> {
        self.at += Duration::seconds(1);
        let range = match self.hole.take() {
            Some(hole) if self.mix.below(2) == 0 => hole,
            hole => {
                self.hole = hole;
                let length = 1 + self.mix.below(20);
                if self.hole.is_none() && self.mix.below(10) == 0 {
                    self.hole = Some(PositionRange {
                        from: self.next,
                        to: self.next + 1,
                    });
                    self.next += 2;
                }
                let range = PositionRange {
                    from: self.next,
                    to: self.next + length - 1,
                };
                self.next += length;
                range
            }
        };
        Some(LedgerEvent::Confirmed(LedgerEntriesConfirmed {
            ledger: self.ledger.clone(),
            ranges: vec![range],
            reference: format!("tx-{}", self.mix.next()),
            confirmed_at: self.at,
            confirmed_by: Some("key-ledger".into()),
            anchor: None,
        }))
    }
}
