//! Reading history for auditors: chain verification over ranges with
//! progress, export, and the state of a stream as of a time or version.
//!
//! The verifier of the stored log itself lives beside the storage format in
//! `taskledger_events::postgres::verify`; this crate will wrap it for the
//! `taskledger replay` commands and the audit API (issue 6).
