//! The aggregate contract: what every aggregate (task, API key, device,
//! ledger) gives command handling ([`crate::command`]) and its
//! given/when/then tests (`crate::testing`, feature `testing`).
//!
//! An aggregate is a folder (or file) in this crate with its commands, its
//! events, its state and a unit struct implementing [`Aggregate`] (e.g.
//! [`crate::task::Tasks`]) that names it in `execute::<Tasks>(…)`.

use crate::codec::DomainEvent;
use crate::snapshot::SnapshotPolicy;
use crate::Refusal;

/// An aggregate: its state, commands and events, and the two pure functions
/// between them.
///
/// [`decide`](Aggregate::decide) and [`apply`](Aggregate::apply) are pure
/// and synchronous: no IO, no clock, no randomness (times, ids and random
/// bytes arrive in the command). Events are stored through their
/// [`DomainEvent`] form (stored type names and schema version), which is
/// also how [`crate::command::load`] reads them back.
pub trait Aggregate {
    /// The aggregate's name in metrics (`tasks`, `api_keys`, …): fixed and
    /// snake_case, so the label set stays small and stable.
    const NAME: &'static str;
    /// The prefix of its streams' ids (`task-`, `apikey-`, `device-`,
    /// `ledger-`); one stream per aggregate instance.
    const STREAM_PREFIX: &'static str;

    /// Whether and how often its state is snapshotted, under which state
    /// schema ([`crate::snapshot`]). `None` (the default): every load folds
    /// the whole stream, right for streams that stay short.
    const SNAPSHOTS: Option<SnapshotPolicy<Self::State>> = None;

    /// The folded state; `Default` is "no events yet".
    type State: Default + Send;
    /// What callers ask for. `Clone`: a command is decided again after a
    /// version conflict.
    type Command: Clone + Send;
    /// What happened.
    type Event: DomainEvent + Send;

    /// The command's name in metrics: its enum variant (`Submit`, `Start`,
    /// …), never anything from its fields, so the label set stays small.
    fn command_name(command: &Self::Command) -> &'static str;

    /// Decides what `command` makes happen in `state`: the events, in order
    /// (none when the command changes nothing, e.g. a repeated
    /// confirmation), or why it is refused. The same state and command
    /// always give the same answer.
    ///
    /// # Errors
    /// The [`Refusal`], with its kind and a message for the caller; nothing
    /// happened.
    fn decide(state: &Self::State, command: Self::Command) -> Result<Vec<Self::Event>, Refusal>;

    /// Folds one event into the state. Total: an event that does not fit the
    /// state leaves it as it was (`decide` never produces one).
    fn apply(state: Self::State, event: &Self::Event) -> Self::State;

    /// The state after all of `events`, in order, starting from
    /// `State::default()`.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(Self::State::default(), Self::apply)
    }
}

/// Inside an `impl Aggregate`: [`Aggregate::decide`] and
/// [`Aggregate::apply`] as the module's own free functions `decide(&State,
/// Command)` and `apply(State, &Event)`, which callers outside command
/// handling (projections, the auditor's replay) use directly.
macro_rules! decide_and_apply_by_module_functions {
    () => {
        fn decide(
            state: &Self::State,
            command: Self::Command,
        ) -> Result<Vec<Self::Event>, $crate::Refusal> {
            decide(state, command)
        }

        fn apply(state: Self::State, event: &Self::Event) -> Self::State {
            apply(state, event)
        }
    };
}
pub(crate) use decide_and_apply_by_module_functions;
