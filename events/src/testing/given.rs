//! Given these events, when this command, expect these events or this
//! refusal: the one given/when/then harness, for every [`Aggregate`].
//!
//! ```text
//! given::<Tasks>([submitted()])
//!     .when(start(1))
//!     .then_expect(vec![started(1)]);
//! given::<Tasks>([])
//!     .when(cancel())
//!     .then_error(RefusalKind::NotFound, "does not exist");
//! ```

use std::fmt::Debug;

use crate::{Aggregate, Refusal, RefusalKind};

/// A state to decide a command in.
#[derive(Debug)]
pub struct Given<A: Aggregate> {
    state: A::State,
}

/// A command decided in a [`Given`] state, waiting for its expectation.
#[derive(Debug)]
pub struct Then<A: Aggregate> {
    state: A::State,
    command: A::Command,
    result: Result<Vec<A::Event>, Refusal>,
}

/// The state `history` leaves (folded with the aggregate's `apply`).
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let history: Vec<A::Event> = history.into_iter().collect();
    Given {
        state: A::fold(&history),
    }
}

/// Starts from `state`, which may be one no history produces (to test
/// guards).
pub fn given_state<A: Aggregate>(state: A::State) -> Given<A> {
    Given { state }
}

impl<A: Aggregate> Given<A> {
    /// Decides `command` in the given state.
    pub fn when(self, command: A::Command) -> Then<A> {
        let result = A::decide(&self.state, command.clone());
        Then {
            state: self.state,
            command,
            result,
        }
    }
}

impl<A: Aggregate> Then<A>
where
    A::State: Clone + PartialEq + Debug,
    A::Event: PartialEq + Debug,
    A::Command: Debug,
{
    /// Asserts the decision was exactly `expected` and returns the state
    /// after applying it. Every decided event must change the state (an
    /// event `apply` ignores would be a decision the fold cannot see).
    ///
    /// # Panics
    /// When the command was refused, decided other events, or decided an
    /// event that `apply` ignores.
    #[track_caller]
    pub fn then_expect(self, expected: Vec<A::Event>) -> A::State {
        let (state, command, events) = self.accepted();
        assert_eq!(events, expected, "for {command:?}");
        apply_each::<A>(state, &events)
    }

    /// Like [`Then::then_expect`] for a decision whose events the test does
    /// not spell out.
    ///
    /// # Panics
    /// When the command was refused or decided an event `apply` ignores.
    #[track_caller]
    pub fn then_expect_any(self) -> A::State {
        let (state, _, events) = self.accepted();
        apply_each::<A>(state, &events)
    }

    /// Asserts a refusal of `kind` whose message contains `message_part`
    /// (and is what the refusal displays), and returns it.
    ///
    /// # Panics
    /// When the command was accepted or refused otherwise.
    #[track_caller]
    pub fn then_error(self, kind: RefusalKind, message_part: &str) -> Refusal {
        let error = match self.result {
            Ok(events) => panic!("{:?} was accepted: {events:?}", self.command),
            Err(error) => error,
        };
        assert_eq!(error.kind(), kind, "{error}");
        assert!(
            error.message().contains(message_part),
            "{:?} not in {:?}",
            message_part,
            error.message()
        );
        assert_eq!(error.to_string(), error.message());
        error
    }
}

impl<A: Aggregate> Then<A>
where
    A::Command: Debug,
{
    /// The state, the command and its events; panics when it was refused.
    #[track_caller]
    fn accepted(self) -> (A::State, A::Command, Vec<A::Event>) {
        match self.result {
            Ok(events) => (self.state, self.command, events),
            Err(error) => panic!("{:?} was refused: {error}", self.command),
        }
    }
}

/// Asserts that `refusal` (of a command to an aggregate that does not exist)
/// is `NotFound` and names the aggregate by `short_id`, and that the refusal
/// kinds carry their stable names (as the HTTP problem bodies show them).
///
/// # Panics
/// When any of that does not hold.
#[track_caller]
pub fn assert_not_found_names(refusal: &Refusal, short_id: &str) {
    assert!(refusal.message().contains(short_id), "{refusal}");
    assert_eq!(refusal.kind().as_str(), "not_found");
    assert_eq!(RefusalKind::AlreadyExists.as_str(), "already_exists");
    assert_eq!(
        RefusalKind::InvalidTransition.to_string(),
        "invalid_transition"
    );
    assert_eq!(RefusalKind::Invalid.as_str(), "invalid");
}

/// Applies `events` to `state` in turn, asserting each changes it.
#[track_caller]
fn apply_each<A: Aggregate>(mut state: A::State, events: &[A::Event]) -> A::State
where
    A::State: Clone + PartialEq + Debug,
    A::Event: Debug,
{
    for event in events {
        let next = A::apply(state.clone(), event);
        assert_ne!(next, state, "apply ignored {event:?}");
        state = next;
    }
    state
}
