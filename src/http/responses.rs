//! The error responses many routes share, declared once: a route names the
//! groups that apply to it in its `responses(...)` (for example
//! `responses((status = 200, …), Authenticated, JsonBody, (status = 404, …))`),
//! and each group's responses are `$ref`s to one entry under the document's
//! `components/responses`, which [`SharedResponses`] adds.
//!
//! A route's own line for a status a group also covers replaces the group's
//! (responses are keyed by status; the later one wins), so list the groups
//! first and give a route's own line only where it says more: its own
//! description must then cover the group's causes too.

use std::collections::BTreeMap;

use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{
    ContentBuilder, HeaderBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder,
};
use utoipa::{IntoResponses, Modify, PartialSchema, ToSchema};

use super::problem::Problem;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One shared response: its name under `components/responses`, status and
/// description.
struct Shared {
    name: &'static str,
    status: &'static str,
    description: &'static str,
    retry_after: bool,
}

const UNAUTHORIZED: Shared = Shared {
    name: "Unauthorized",
    status: "401",
    description: "No valid API key: none sent, not `Authorization: Bearer <key>`, \
                  unknown, revoked or expired, or a secret a rotation replaced whose \
                  grace period ended; `detail` says which",
    retry_after: false,
};

const FORBIDDEN: Shared = Shared {
    name: "Forbidden",
    status: "403",
    description: "The key holds none of the scopes this operation admits (its `security`)",
    retry_after: false,
};

const TOO_MANY_REQUESTS: Shared = Shared {
    name: "TooManyRequests",
    status: "429",
    description: "The API key made more requests per second than it may here (its own \
                  `--rate-limit`, or `[limits] requests_per_second`), or holds as many \
                  open event streams as it may; retry after `Retry-After` seconds",
    retry_after: true,
};

const UNAVAILABLE: Shared = Shared {
    name: "Unavailable",
    status: "503",
    description: "The database or the event store cannot answer right now (the API key \
                  cannot be checked, or the read or write failed); retry after \
                  `Retry-After` seconds",
    retry_after: true,
};

const READ_WAIT_EXPIRED: Shared = Shared {
    name: "ReadWaitExpired",
    status: "503",
    description: "The read model has not caught up to the `min_version` or \
                  `min_position` asked for within the read wait (it lags; the log \
                  has that much), or the database cannot answer right now; retry \
                  after `Retry-After` seconds",
    retry_after: true,
};

const BEYOND_THE_LOG: Shared = Shared {
    name: "BeyondTheLog",
    status: "422",
    description: "`min_position` is beyond the log's head (answered at once)",
    retry_after: false,
};

const BAD_REQUEST: Shared = Shared {
    name: "BadRequest",
    status: "400",
    description: "A malformed request: a path segment, query parameter or header that \
                  does not parse or is out of range, or a body that is not JSON; \
                  `detail` names it",
    retry_after: false,
};

const PAYLOAD_TOO_LARGE: Shared = Shared {
    name: "PayloadTooLarge",
    status: "413",
    description: "The body is larger than the 256 KiB any route accepts",
    retry_after: false,
};

const UNSUPPORTED_MEDIA_TYPE: Shared = Shared {
    name: "UnsupportedMediaType",
    status: "415",
    description: "The body is not sent as `Content-Type: application/json`",
    retry_after: false,
};

const UNPROCESSABLE: Shared = Shared {
    name: "Unprocessable",
    status: "422",
    description: "JSON of the wrong shape (a missing, unknown or mistyped field) or a \
                  value out of range; `detail` says which",
    retry_after: false,
};

const PLATFORM_ONLY: Shared = Shared {
    name: "PlatformOnly",
    status: "403",
    description: "The key holds none of the scopes this operation admits (its `security`), \
                  or it is a tenant key: this operation spans every tenant and needs a \
                  platform key (all tenants)",
    retry_after: false,
};

const ALL: [&Shared; 11] = [
    &UNAUTHORIZED,
    &FORBIDDEN,
    &PLATFORM_ONLY,
    &TOO_MANY_REQUESTS,
    &UNAVAILABLE,
    &READ_WAIT_EXPIRED,
    &BEYOND_THE_LOG,
    &BAD_REQUEST,
    &PAYLOAD_TOO_LARGE,
    &UNSUPPORTED_MEDIA_TYPE,
    &UNPROCESSABLE,
];

fn references(shared: &[&Shared]) -> BTreeMap<String, RefOr<Response>> {
    shared
        .iter()
        .map(|shared| {
            (
                shared.status.to_owned(),
                RefOr::Ref(Ref::from_response_name(shared.name)),
            )
        })
        .collect()
}

/// A problem+json response with `description` (and a `Retry-After`
/// header when the problem carries one).
fn problem_response(description: &str, retry_after: bool) -> Response {
    let mut response = ResponseBuilder::new().description(description).content(
        PROBLEM_JSON,
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(Problem::name())))
            .build(),
    );
    if retry_after {
        response = response.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ))
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    response.build()
}

/// Declares response groups: `Group => [SHARED, …]`, each an
/// [`IntoResponses`] whose responses refer to those shared ones.
macro_rules! response_groups {
    ($($(#[$doc:meta])* $group:ident => [$($shared:ident),+];)+) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $group {}

            impl IntoResponses for $group {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    references(&[$(&$shared),+])
                }
            }
        )+
    };
}

response_groups! {
    /// Every route that takes an API key: 401, 403, 429 (the key's request
    /// rate, [`super::limits`]) and 503 (the key is looked up in the
    /// database, and every such route reads or writes it).
    Authenticated => [UNAUTHORIZED, FORBIDDEN, TOO_MANY_REQUESTS, UNAVAILABLE];
    /// Every route that spans all tenants (the global feeds, verification,
    /// projection operations, ledgers): [`Authenticated`], with a 403 that
    /// also refuses tenant keys ([`super::tenancy::PlatformAuthorized`]).
    PlatformOnly => [UNAUTHORIZED, PLATFORM_ONLY, TOO_MANY_REQUESTS, UNAVAILABLE];
    /// Reads that wait for the read model (`min_version`, `min_position`;
    /// [`super::consistency`]): their 503 also means "it lags, retry". List it
    /// after [`Authenticated`], whose 503 it replaces.
    ReadWait => [READ_WAIT_EXPIRED];
    /// Reads that wait for a global position (`min_position`): [`ReadWait`]'s
    /// 503, and 422 at once for a position beyond the log's head. List it after
    /// [`Authenticated`], whose 503 it replaces.
    PositionWait => [READ_WAIT_EXPIRED, BEYOND_THE_LOG];
    /// Every route with a JSON body ([`super::problem::ApiJson`] or
    /// [`super::problem::optional_json`]): 400, 413, 415 and 422, as its
    /// rejections answer.
    JsonBody => [BAD_REQUEST, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, UNPROCESSABLE];
    /// Every route with path segments, query parameters or headers that must
    /// parse ([`super::problem::ApiQuery`], ids, names): 400.
    Malformed => [BAD_REQUEST];
}

/// Adds the shared responses and the [`Problem`] schema they refer to to
/// the document's components.
#[derive(Debug)]
pub struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components
            .schemas
            .insert(Problem::name().into_owned(), Problem::schema());
        for shared in ALL {
            components.responses.insert(
                shared.name.to_owned(),
                RefOr::T(problem_response(shared.description, shared.retry_after)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_names_a_component() {
        let mut document = OpenApi::default();
        SharedResponses.modify(&mut document);
        let components = document.components.unwrap();
        let groups = [
            Authenticated::responses(),
            ReadWait::responses(),
            PositionWait::responses(),
            JsonBody::responses(),
            Malformed::responses(),
        ];
        for (status, response) in groups.iter().flatten() {
            let RefOr::Ref(reference) = response else {
                panic!("{status} is not a reference");
            };
            let name = reference
                .ref_location
                .strip_prefix("#/components/responses/")
                .unwrap();
            assert!(components.responses.contains_key(name), "{name}");
        }
        assert!(components.schemas.contains_key("Problem"));
    }
}
