//! What the listings share: the page size a query asks for, checked; the
//! page cut from a fetch of one more than asked (which tells whether
//! another follows); and the keyset cursor of the listings ordered by an
//! instant and an id.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::problem::Problem;

/// The page size asked for (`default` when not given); 400 unless it is
/// from 1 to `max`.
pub(crate) fn page_size(limit: Option<u32>, default: u32, max: u32) -> Result<u32, Problem> {
    let limit = limit.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be from 1 to {max}; got {limit}"
        )));
    }
    Ok(limit)
}

/// The first `limit` of `items` (fetched one more than `limit`), and the
/// next page's cursor (`cursor` of the last item kept) when there were
/// more.
pub(crate) fn cut_page<T>(
    mut items: Vec<T>,
    limit: usize,
    cursor: impl FnOnce(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next = items.last().map(cursor);
    (items, next)
}

/// Where a page ordered by (instant, id), newest first, ends. Sent as
/// `{microseconds since the epoch}_{uuid}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Keyset {
    /// The last item's instant.
    pub(crate) at: DateTime<Utc>,
    /// The last item's id.
    pub(crate) id: Uuid,
}

impl Keyset {
    /// A cursor this service sent; 400 for anything else.
    pub(crate) fn parse(text: &str) -> Result<Self, Problem> {
        let bad = || Problem::bad_request("cursor must be the next_cursor of an earlier page");
        let (micros, id) = text.split_once('_').ok_or_else(bad)?;
        let micros: i64 = micros.parse().map_err(|_| bad())?;
        Ok(Self {
            at: DateTime::from_timestamp_micros(micros).ok_or_else(bad)?,
            id: Uuid::parse_str(id).map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for Keyset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}_{}", self.at.timestamp_micros(), self.id.simple())
    }
}
