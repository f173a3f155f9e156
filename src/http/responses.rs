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

/// Declares the shared responses, one entry each:
/// `CONSTANT: "status" Name, "description";` (`"status" Name retry_after`
/// for one with a `Retry-After` header), and [`ALL`] of them.
macro_rules! shared_responses {
    ($($constant:ident: $status:literal $name:ident $($retry_after:ident)?, $description:expr;)+) => {
        $(
            const $constant: Shared = Shared {
                name: stringify!($name),
                status: $status,
                description: $description,
                retry_after: !stringify!($($retry_after)?).is_empty(),
            };
        )+

        /// Every shared response, each added once to the document's
        /// components.
        const ALL: &[&Shared] = &[$(&$constant),+];
    };
}

shared_responses! {
    UNAUTHORIZED: "401" Unauthorized,
        "No valid API key: none sent, not `Authorization: Bearer <key>`, \
         unknown, revoked or expired, or a secret a rotation replaced whose \
         grace period ended; `detail` says which";
    FORBIDDEN: "403" Forbidden,
        "The key holds none of the scopes this operation admits (its `security`)";
    PLATFORM_ONLY: "403" PlatformOnly,
        "The key holds none of the scopes this operation admits (its `security`), \
         or it is a tenant key: this operation spans every tenant and needs a \
         platform key (all tenants)";
    TOO_MANY_REQUESTS: "429" TooManyRequests retry_after,
        "The API key made more requests per second than it may here (its own \
         `--rate-limit`, or `[limits] requests_per_second`), or holds as many \
         open event streams as it may; retry after `Retry-After` seconds";
    UNAVAILABLE: "503" Unavailable retry_after,
        "The database or the event store cannot answer right now (the API key \
         cannot be checked, or the read or write failed); retry after \
         `Retry-After` seconds";
    READ_WAIT_EXPIRED: "503" ReadWaitExpired retry_after,
        "The read model has not caught up to the `min_version` or \
         `min_position` asked for within the read wait (it lags; the log \
         has that much), or the database cannot answer right now; retry \
         after `Retry-After` seconds";
    BEYOND_THE_LOG: "422" BeyondTheLog,
        "`min_position` is beyond the log's head (answered at once)";
    BAD_REQUEST: "400" BadRequest,
        "A malformed request: a path segment, query parameter or header that \
         does not parse or is out of range, or a body that is not JSON; \
         `detail` names it";
    PAYLOAD_TOO_LARGE: "413" PayloadTooLarge,
        "The body is larger than the 256 KiB any route accepts";
    UNSUPPORTED_MEDIA_TYPE: "415" UnsupportedMediaType,
        "The body is not sent as `Content-Type: application/json`";
    UNPROCESSABLE: "422" Unprocessable,
        "JSON of the wrong shape (a missing, unknown or mistyped field) or a \
         value out of range; `detail` says which";
    OTHER_TENANT: "403" OtherTenant, "A tenant key named another tenant";
    NO_SUCH_TASK: "404" NoSuchTask, "No such task";
    NO_SUCH_KEY: "404" NoSuchKey, "No such key";
    NO_SUCH_WEBHOOK: "404" NoSuchWebhook,
        "No such webhook (for a tenant key: none of its tenant's), or it was deleted";
    NO_SUCH_PROJECTION: "404" NoSuchProjection, "No such projection, or it never ran";
    UNASSIGNED_DEVICE: "404" UnassignedDevice,
        "A tenant key: the device is not assigned to its tenant";
    MALFORMED_IMEI_OR_BODY: "400" MalformedImeiOrBody,
        "A malformed IMEI, or a body that is not JSON";
}

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
    /// [`super::problem::OptionalJson`]): 400, 413, 415 and 422, as its
    /// rejections answer.
    JsonBody => [BAD_REQUEST, PAYLOAD_TOO_LARGE, UNSUPPORTED_MEDIA_TYPE, UNPROCESSABLE];
    /// Every route with path segments, query parameters or headers that must
    /// parse ([`super::problem::ApiQuery`], ids, names): 400.
    Malformed => [BAD_REQUEST];
    /// Routes that act for a tenant a platform key names (a submission, an
    /// upload): a tenant key naming another tenant is 403. List it after
    /// [`Authenticated`], whose 403 it replaces.
    OtherTenant => [OTHER_TENANT];
    /// Routes on one task (`{id}`) whose 404 means only that: no such task
    /// (for a tenant key: none of its tenant's, [`super::tenancy`]).
    NoSuchTask => [NO_SUCH_TASK];
    /// Routes on one API key (`{id}`): 404 for an id no key has.
    NoSuchKey => [NO_SUCH_KEY];
    /// Routes on one webhook (`{id}`): 404 for none, a deleted one, or
    /// another tenant's ([`super::webhooks`]).
    NoSuchWebhook => [NO_SUCH_WEBHOOK];
    /// Routes on one projection (`{name}`) as it runs: 404 for a name no
    /// projector has, or one that has no checkpoint in this deployment.
    NoSuchProjection => [NO_SUCH_PROJECTION];
    /// Routes on one device (`{imei}`) that a tenant key reaches only when
    /// the device is assigned to its tenant: 404 otherwise.
    UnassignedDevice => [UNASSIGNED_DEVICE];
    /// Routes with an IMEI in the path and a JSON body: 400 for either
    /// malformed. List it after [`JsonBody`], whose 400 it replaces.
    MalformedImeiOrBody => [MALFORMED_IMEI_OR_BODY];
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
            PlatformOnly::responses(),
            OtherTenant::responses(),
            NoSuchTask::responses(),
            NoSuchKey::responses(),
            NoSuchProjection::responses(),
            UnassignedDevice::responses(),
            MalformedImeiOrBody::responses(),
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
