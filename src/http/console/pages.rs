//! What every console page shares: the frame around it (who is signed in,
//! the sign-out form), rendering a template, and the pages for a refusal —
//! "not found" for an unknown or another tenant's thing, the problem's own
//! words for the rest.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use taskledger_events::apikey::Scope;
use taskledger_events::tenant::Access;

use super::api::Refusal;
use super::session::SignedIn;
use crate::http::auth::{
    Admin, Caller, ReadDevices, ReadLedger, ReadLog, ReadTasks, ReadWebhooks, RequiredScopes,
};
use crate::http::problem::Problem;

/// The frame of a signed-in page: the key it acts as, and the session's
/// CSRF token for the sign-out form.
#[derive(Debug, Clone)]
pub(super) struct Chrome {
    /// The session's CSRF token.
    pub(super) csrf: String,
    /// Who the key is, in words (`key 1a2b3c4d · tenant acme`).
    pub(super) who: String,
    /// The pages in the navigation: (path, name), those whose `/v1` routes
    /// the key may use. Only what is shown: each page still asks `/v1`,
    /// which decides.
    pub(super) nav: Vec<(&'static str, &'static str)>,
}

/// Every page of the navigation, with what a key needs for its link to be
/// shown: one of the scopes of the `/v1` routes it reads, and for the
/// platform pages a key for all tenants.
const NAV: &[(&str, &str, &[Scope], bool)] = &[
    ("/console/tasks", "Tasks", ReadTasks::SCOPES, false),
    ("/console/devices", "Devices", ReadDevices::SCOPES, false),
    ("/console/webhooks", "Webhooks", ReadWebhooks::SCOPES, false),
    ("/console/ledgers", "Ledgers", ReadLedger::SCOPES, true),
    ("/console/projections", "Projections", Admin::SCOPES, true),
    ("/console/audit", "Audit", ReadLog::SCOPES, true),
    ("/console/api", "API", &[], false),
];

/// The navigation links `caller` is shown (see [`Chrome::nav`]).
fn nav_for(caller: &Caller) -> Vec<(&'static str, &'static str)> {
    let platform = matches!(caller.access, Access::AllTenants);
    NAV.iter()
        .filter(|(_, _, scopes, platform_only)| {
            (platform || !platform_only)
                && (scopes.is_empty() || caller.require_any(scopes).is_ok())
        })
        .map(|(path, name, _, _)| (*path, *name))
        .collect()
}

impl Chrome {
    pub(super) fn of(signed_in: &SignedIn) -> Self {
        let reach = match &signed_in.caller.access {
            Access::AllTenants => "all tenants".to_owned(),
            Access::Tenant(tenant) => format!("tenant {tenant}"),
        };
        let key = signed_in.caller.key_id.to_string();
        Self {
            csrf: signed_in.csrf.clone(),
            who: format!("key {} · {reach}", &key[..8]),
            nav: nav_for(&signed_in.caller),
        }
    }
}

/// A page that only says something: not found, refused, failed.
#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    chrome: Option<Chrome>,
    title: &'a str,
    detail: &'a str,
}

/// A query of the form fields filled in, each trimmed; blank ones are left
/// out. More pairs may be appended before it is finished.
pub(super) fn filled_in<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> form_urlencoded::Serializer<'static, String> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        let value = value.trim();
        if !value.is_empty() {
            query.append_pair(name, value);
        }
    }
    query
}

/// `template` rendered, as a 200 page.
pub(super) fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => Problem::internal()
            .because("rendering a console page", error)
            .into_response(),
    }
}

/// A page saying `title` and `detail`, answered with `status`.
pub(super) fn message(
    status: StatusCode,
    chrome: Option<Chrome>,
    title: &str,
    detail: &str,
) -> Response {
    let page = MessagePage {
        chrome,
        title,
        detail,
    };
    (status, render(&page)).into_response()
}

/// The "not found" page (404): `what` does not exist, or not for this key.
pub(super) fn not_found(chrome: Option<Chrome>, what: &str) -> Response {
    message(
        StatusCode::NOT_FOUND,
        chrome,
        "Not found",
        &format!("{what} does not exist, or this key cannot see it."),
    )
}

/// The page for what `/v1` refused: 404 as the "not found" page, anything
/// else with its problem's words and status.
pub(super) fn refused(chrome: Option<Chrome>, refusal: &Refusal, what: &str) -> Response {
    if refusal.status == StatusCode::NOT_FOUND {
        return not_found(chrome, what);
    }
    message(refusal.status, chrome, &refusal.title, &refusal.detail)
}

/// The page for a problem met before any page could be shown (keys cannot
/// be checked right now).
pub(super) fn problem_page(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    message(status, None, &problem.title, &problem.detail)
}

/// The console's answer to a path it does not have.
pub(super) async fn no_such_page() -> Response {
    not_found(None, "This page")
}

/// 403: a form came without this session's CSRF token; nothing was done.
pub(super) fn forged(chrome: Chrome) -> Response {
    message(
        StatusCode::FORBIDDEN,
        Some(chrome),
        "Refused",
        "The form did not carry this session's token, so nothing was done. \
         Reload the page and try again.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(scopes: &[Scope], access: Access) -> Caller {
        Caller {
            key_id: uuid::Uuid::new_v4(),
            scopes: scopes.to_vec(),
            access,
            rate_limit: None,
        }
    }

    #[test]
    fn the_navigation_shows_the_pages_a_key_may_use() {
        let paths = |caller: &Caller| -> Vec<&str> {
            nav_for(caller).into_iter().map(|(path, _)| path).collect()
        };
        let acme = Access::Tenant("acme".parse().unwrap());
        assert_eq!(
            paths(&caller(&[Scope::TasksRead], acme.clone())),
            ["/console/tasks", "/console/api"]
        );
        // A tenant's admin key: no platform page (their /v1 routes refuse it).
        assert_eq!(
            paths(&caller(&[Scope::Admin], acme.clone())),
            [
                "/console/tasks",
                "/console/devices",
                "/console/webhooks",
                "/console/api"
            ]
        );
        assert_eq!(
            paths(&caller(&[Scope::WebhooksRead], acme)),
            ["/console/webhooks", "/console/api"]
        );
        assert_eq!(
            paths(&caller(&[Scope::AuditRead], Access::AllTenants)),
            ["/console/ledgers", "/console/audit", "/console/api"]
        );
        assert_eq!(
            paths(&caller(&[Scope::Admin], Access::AllTenants)).len(),
            NAV.len()
        );
    }

    #[test]
    fn what_a_page_shows_is_escaped() {
        let page = MessagePage {
            chrome: Some(Chrome {
                csrf: "token\"><script>".to_owned(),
                who: "key 1a2b3c4d · tenant acme".to_owned(),
                nav: vec![("/console/tasks", "Tasks")],
            }),
            title: "<script>alert(1)</script>",
            detail: "a \"quoted\" & <b>bold</b> detail",
        }
        .render()
        .unwrap();
        assert!(!page.contains("<script>alert"), "{page}");
        assert!(
            page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{page}"
        );
        assert!(!page.contains("token\"><script>"), "{page}");
        assert!(!page.contains("<b>bold</b>"), "{page}");
        // Nothing inline: the CSP allows only this origin's files.
        assert!(
            !page.contains("<script>") && !page.contains("style="),
            "{page}"
        );
        assert!(page.contains(r#"<script src="/console/assets/console.js" defer></script>"#));
    }
}
