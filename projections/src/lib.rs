//! The read side of taskledger: the projector runtime (checkpoints stored with
//! the rows they cover, one active instance per projector, rebuilds) and the
//! read models built from the global order.
//!
//! The runtime and the read models arrive with the task API (issue 3); this
//! crate already sits in its place in the dependency graph
//! (`events` ← `projections` ← `replay` ← the binary).
