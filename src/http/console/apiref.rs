//! `/console/api`: the API reference — Swagger UI (swagger-ui-dist,
//! vendored in `assets/vendor/swagger-ui/` by `scripts/vendor-swagger-ui.sh`)
//! rendering `/v1/openapi.json`, with "try it" for a key pasted into the page.
//!
//! The page needs no scope: any signed-in key may read it, as anyone may
//! read `/v1/openapi.json`. "Try it" never uses the session: the session's
//! cookie is `Path=/console`, so a request to `/v1` carries only the key
//! pasted into the page, which `assets/apiref.js` keeps in a variable (never
//! a cookie or web storage) and sends only as the `Authorization` header of
//! a try-it request to this origin.
//!
//! Swagger UI works under the console's CSP unchanged: it runs from files of
//! this origin, its initializer is `assets/apiref.js` (no inline script),
//! React sets its styles through the CSSOM (which `style-src` does not
//! govern), it evaluates no strings, and without the standalone preset
//! nothing inserts a `<style>`. Only its stylesheet's images are inline
//! `data:` URLs; they are served as files of their own ([`VendorStyles`]).

use std::sync::OnceLock;

use askama::Template;
use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};

use super::pages::{self, render, Chrome};
use super::session::SignedIn;
use super::vendor_styles::VendorStyles;

/// The document the page renders.
const OPENAPI_DOCUMENT: &str = "/v1/openapi.json";

/// The API reference page.
#[derive(Template)]
#[template(path = "apiref.html")]
struct ApiReferencePage {
    chrome: Option<Chrome>,
    /// Where the page's script fetches the document from.
    document: &'static str,
}

/// `GET /console/api`.
pub(super) async fn page(signed_in: SignedIn) -> Response {
    render(&ApiReferencePage {
        chrome: Some(Chrome::of(&signed_in)),
        document: OPENAPI_DOCUMENT,
    })
}

/// Swagger UI's stylesheet, its images moved out (made once).
fn styles() -> &'static VendorStyles {
    static STYLES: OnceLock<VendorStyles> = OnceLock::new();
    STYLES.get_or_init(|| {
        VendorStyles::from_css(include_str!("assets/vendor/swagger-ui/swagger-ui.css"))
    })
}

/// `GET /console/assets/api/{file}`: the page's script, Swagger UI's bundle,
/// stylesheet and its images, and their licences, built into the binary.
pub(super) async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body): (&str, &'static [u8]) = match file.as_str() {
        "apiref.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("assets/apiref.js"),
        ),
        "swagger-ui-bundle.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("assets/vendor/swagger-ui/swagger-ui-bundle.js"),
        ),
        "swagger-ui.css" => ("text/css; charset=utf-8", styles().css.as_bytes()),
        // The bundle's opening comment points here.
        "swagger-ui-bundle.js.LICENSE.txt" => (
            "text/plain; charset=utf-8",
            include_bytes!("assets/vendor/swagger-ui/swagger-ui-bundle.js.LICENSE.txt"),
        ),
        "LICENSE" => (
            "text/plain; charset=utf-8",
            include_bytes!("assets/vendor/swagger-ui/LICENSE"),
        ),
        "NOTICE" => (
            "text/plain; charset=utf-8",
            include_bytes!("assets/vendor/swagger-ui/NOTICE"),
        ),
        name => match styles().image(name) {
            Some(image) => (image.content_type, image.bytes.as_slice()),
            None => return pages::no_such_page().await,
        },
    };
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swagger_uis_stylesheet_keeps_no_data_image() {
        let styles = styles();
        assert!(!styles.css.contains("data:"), "a data: URL is left");
        // The select arrow, the copy button, the model toggles, … (and
        // the debug grids no page uses).
        assert!(styles.images.len() >= 10, "{}", styles.images.len());
        for image in &styles.images {
            assert!(
                styles.css.contains(&format!("url(\"{}\")", image.name)),
                "{} is not used",
                image.name
            );
            if image.content_type == "image/svg+xml" {
                let svg = std::str::from_utf8(&image.bytes).unwrap();
                assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
            }
        }
    }

    #[test]
    fn the_page_loads_only_files_of_this_origin() {
        let page = ApiReferencePage {
            chrome: None,
            document: OPENAPI_DOCUMENT,
        }
        .render()
        .unwrap();
        for tag in [
            r#"<link rel="stylesheet" href="/console/assets/api/swagger-ui.css">"#,
            r#"<script src="/console/assets/api/swagger-ui-bundle.js" defer></script>"#,
            r#"<script src="/console/assets/api/apiref.js" defer></script>"#,
            r#"data-document="/v1/openapi.json""#,
        ] {
            assert!(page.contains(tag), "{tag} is missing from {page}");
        }
        assert!(
            !page.contains("<script>") && !page.contains("style="),
            "{page}"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "{page}"
        );
    }
}
