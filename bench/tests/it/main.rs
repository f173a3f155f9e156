//! The `taskledger-bench` binary as a user runs it: its command line, and a
//! tiny run of each benchmark against a scratch database, whose output lines
//! keep their shape (scripts and the README's figures read them).

mod cli;
mod helpers;
mod smoke;
