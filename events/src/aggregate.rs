//! The aggregate contract: what every aggregate (task, API key, device,
//! ledger) gives command handling ([`crate::command`]) and its
//! given/when/then tests (`crate::testing`, feature `testing`).
//!
//! An aggregate is a folder (or file) in this crate with its commands, its
//! events, its state and a unit struct implementing [`Aggregate`] (e.g.
//! [`crate::task::Tasks`]) that names it in `execute::<Tasks>(…)`; an
//! aggregate whose `decide` and `apply` are its module's free functions
//! defines both with `aggregate_of_module_functions!`.

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

/// Defines an aggregate's unit struct and its [`Aggregate`] impl, for an
/// aggregate whose [`decide`](Aggregate::decide) and
/// [`apply`](Aggregate::apply) are the module's own free functions
/// `decide(&State, Command)` and `apply(State, &Event)` (which callers
/// outside command handling, such as projections and the auditor's replay,
/// use directly):
///
/// ```text
/// crate::aggregate::aggregate_of_module_functions! {
///     /// The task aggregate, for [`crate::command::execute`] …
///     pub struct Tasks;
///     NAME = "tasks", STREAM_PREFIX = TaskId::STREAM_PREFIX;
///     State = TaskState, Event = TaskEvent;
///     Command = TaskCommand { Submit, Cancel, Start, … }
/// }
/// ```
///
/// and, with a snapshot policy (optional, as in the trait: `None` when left
/// out) and a command that is one struct:
///
/// ```text
/// crate::aggregate::aggregate_of_module_functions! {
///     pub struct Ledgers;
///     NAME = "ledgers", STREAM_PREFIX = "ledger-";
///     SNAPSHOTS = Some(SnapshotPolicy::json(100, 1));
///     State = LedgerState, Event = LedgerEvent;
///     Command = ConfirmLedgerEntries as "Confirm"
/// }
/// ```
///
/// [`command_name`](Aggregate::command_name) is the command's variant
/// (`variant_name!`) for a command enum, which lists every variant; for a
/// command that is a struct, the one name after `as`
/// (`Command = ConfirmLedgerEntries as "Confirm"`).
macro_rules! aggregate_of_module_functions {
    (
        $(#[$meta:meta])*
        pub struct $aggregate:ident;
        NAME = $name:literal, STREAM_PREFIX = $prefix:expr;
        $($(#[$snapshots_meta:meta])* SNAPSHOTS = $snapshots:expr;)?
        State = $state:ty, Event = $event:ty;
        Command = $command:ident $($command_names:tt)+
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy)]
        pub struct $aggregate;

        impl $crate::Aggregate for $aggregate {
            const NAME: &'static str = $name;
            const STREAM_PREFIX: &'static str = $prefix;
            $(
                $(#[$snapshots_meta])*
                const SNAPSHOTS: Option<$crate::snapshot::SnapshotPolicy<$state>> = $snapshots;
            )?

            type State = $state;
            type Command = $command;
            type Event = $event;

            $crate::aggregate::aggregate_of_module_functions!(
                @command_name $command $($command_names)+
            );

            fn decide(state: &$state, command: $command) -> Result<Vec<$event>, $crate::Refusal> {
                decide(state, command)
            }

            fn apply(state: $state, event: &$event) -> $state {
                apply(state, event)
            }
        }
    };
    (@command_name $command:ident { $($variant:ident),+ $(,)? }) => {
        fn command_name(command: &$command) -> &'static str {
            $crate::aggregate::variant_name!(command, $command { $($variant),+ })
        }
    };
    (@command_name $command:ident as $name:literal) => {
        fn command_name(_: &$command) -> &'static str {
            $name
        }
    };
}
pub(crate) use aggregate_of_module_functions;

/// The name of the variant `value` is (`"Submit"` for
/// `TaskCommand::Submit(_)`), for an enum whose every variant holds one
/// value: an aggregate's [`command_name`](Aggregate::command_name). Every
/// variant is listed, and the match is exhaustive, so the list cannot fall
/// behind the enum.
macro_rules! variant_name {
    ($value:expr, $enum:ident { $($variant:ident),+ $(,)? }) => {
        match $value {
            $($enum::$variant(_) => stringify!($variant),)+
        }
    };
}
pub(crate) use variant_name;

#[cfg(test)]
mod tests {
    use super::Aggregate;
    use crate::apikey::{ApiKeyCommand, ApiKeyId, ApiKeys, RevokeApiKey};
    use crate::device::{AttemptSend, DeviceCommand, Devices, Imei};
    use crate::testing::{at, FIXED_ID};
    use crate::verification::{RecordVerification, Verifications};
    use crate::webhook::{EnableWebhook, WebhookCommand, WebhookId, Webhooks};

    #[test]
    fn a_commands_name_is_its_variant_or_its_aggregates_one_name() {
        let revoke = ApiKeyCommand::Revoke(RevokeApiKey {
            key_id: ApiKeyId(FIXED_ID),
            reason: None,
            revoked_at: at(0),
            revoked_by: None,
        });
        assert_eq!(ApiKeys::command_name(&revoke), "Revoke");
        let enable = WebhookCommand::Enable(EnableWebhook {
            webhook_id: WebhookId(FIXED_ID),
            enabled_at: at(0),
            enabled_by: None,
        });
        assert_eq!(Webhooks::command_name(&enable), "Enable");
        let attempt = DeviceCommand::AttemptSend(AttemptSend {
            message_id: FIXED_ID,
            attempt: 1,
            attempted_at: at(0),
        });
        let imei = Imei::new("300234010753370").unwrap();
        assert_eq!(Devices::command_name(&(imei, attempt)), "AttemptSend");
        let record = RecordVerification {
            from_position: 1,
            through_position: 1,
            chain_hash: "0".repeat(64),
            verified_by: "auditor".into(),
            verified_at: at(0),
        };
        assert_eq!(Verifications::command_name(&record), "Record");
    }
}
