//! A vendored stylesheet with its inline `data:` images moved to files of
//! their own, so that it works under the console's CSP: `default-src 'self'`
//! refuses `data:` images (`img-src` falls back to it), and loosening that
//! for one library would loosen it for every page.
//!
//! Swagger UI's `swagger-ui.css` draws its icons (the select arrow, the
//! copy button, the model toggles, …) as `url("data:image/svg+xml;…")`.
//! [`VendorStyles::from_css`] rewrites each such `url(…)` to a relative
//! `url("image-<sha256>.<ext>")` and keeps the decoded image, to be served
//! beside the stylesheet. The vendored file stays exactly as npm ships it.

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A stylesheet whose `data:` images are files of their own.
#[derive(Debug)]
pub(super) struct VendorStyles {
    /// The stylesheet, each `data:` image replaced by its file's name.
    pub(super) css: String,
    /// The images it names, each once.
    pub(super) images: Vec<Image>,
}

/// One image taken out of the stylesheet.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Image {
    /// Its file name, `image-<the first 16 hex digits of its SHA-256>.<ext>`.
    pub(super) name: String,
    /// Its media type, as the `data:` URL gave it.
    pub(super) content_type: &'static str,
    /// Its bytes, decoded.
    pub(super) bytes: Vec<u8>,
}

impl VendorStyles {
    /// `css` with every `url(data:…)` of a known image type moved out. A
    /// `url(…)` that is not one, or that this does not understand (another
    /// media type, a CSS hex escape), is left as it is: the unit test over
    /// the vendored file holds that none is left.
    pub(super) fn from_css(css: &str) -> Self {
        let mut out = String::with_capacity(css.len());
        let mut images: Vec<Image> = Vec::new();
        let mut rest = css;
        while let Some(start) = rest.find("url(") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "url(".len()..];
            let Some((url, length)) = url_argument(after) else {
                out.push_str("url(");
                rest = after;
                continue;
            };
            match data_image(&url) {
                Some(image) => {
                    out.push_str(&format!("url(\"{}\")", image.name));
                    if !images.iter().any(|known| known.name == image.name) {
                        images.push(image);
                    }
                }
                None => out.push_str(&rest[start..start + "url(".len() + length]),
            }
            rest = &after[length..];
        }
        out.push_str(rest);
        Self { css: out, images }
    }

    /// The image named `name`, if the stylesheet had it.
    pub(super) fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|image| image.name == name)
    }
}

/// The URL of a `url(` argument at the start of `text` (quoted or not, CSS
/// escapes undone) and the length of `text` it took, its `)` included; `None`
/// for one this does not read (unclosed, or with a hex escape).
fn url_argument(text: &str) -> Option<(String, usize)> {
    let blank = text.len() - text.trim_start().len();
    let quote = text[blank..]
        .chars()
        .next()
        .filter(|c| *c == '"' || *c == '\'');
    let Some(quote) = quote else {
        let end = text.find(')')?;
        return Some((text[..end].trim().to_owned(), end + 1));
    };
    let mut url = String::new();
    let mut chars = text.char_indices().skip_while(|(at, _)| *at <= blank);
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => {
                let (_, escaped) = chars.next()?;
                if escaped.is_ascii_hexdigit() || escaped == '\n' {
                    return None;
                }
                url.push(escaped);
            }
            c if c == quote => break,
            c => url.push(c),
        }
    }
    let (closing, _) = chars.find(|(_, c)| !c.is_whitespace())?;
    (text[closing..].starts_with(')')).then_some((url, closing + 1))
}

/// The image a `data:` URL holds, if it is one of the types a stylesheet
/// draws with.
fn data_image(url: &str) -> Option<Image> {
    let (header, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mut parameters = header.split(';');
    let (content_type, extension) = match parameters.next()? {
        "image/svg+xml" => ("image/svg+xml", "svg"),
        "image/png" => ("image/png", "png"),
        "image/jpeg" => ("image/jpeg", "jpg"),
        "image/gif" => ("image/gif", "gif"),
        _ => return None,
    };
    let bytes = if parameters.any(|parameter| parameter == "base64") {
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .ok()?
    } else {
        percent_decoded(data)?
    };
    let digest = hex::encode(Sha256::digest(&bytes));
    Some(Image {
        name: format!("image-{}.{extension}", &digest[..16]),
        content_type,
        bytes,
    })
}

/// `text` with its `%XX` escapes decoded (RFC 3986); `None` for a `%` not
/// followed by two hex digits.
fn percent_decoded(text: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2)?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_images_become_files_and_other_urls_stay() {
        let css = concat!(
            r#".a{background:url("data:image/svg+xml;charset=utf-8,<svg xmlns=\"http://www.w3.org/2000/svg\"><path fill=\"%23fff\" d=\"M1 1\"/></svg>") center}"#,
            ".b{background-image:url(data:image/png;base64,iVBORw0KGgo=)}",
            r#".c{background:url( "data:image/svg+xml;charset=utf-8,<svg xmlns=\"http://www.w3.org/2000/svg\"><path fill=\"%23fff\" d=\"M1 1\"/></svg>" )}"#,
            ".d{background:url(/console/assets/favicon.svg)}",
            ".e{background:url(data:font/woff2;base64,AAAA)}",
            r#".f{background:url("data:image/svg+xml,\26 lt;")}"#,
        );
        let styles = VendorStyles::from_css(css);
        assert_eq!(styles.images.len(), 2, "{:?}", styles.images);
        let svg = &styles.images[0];
        assert_eq!(svg.content_type, "image/svg+xml");
        assert_eq!(
            String::from_utf8(svg.bytes.clone()).unwrap(),
            r##"<svg xmlns="http://www.w3.org/2000/svg"><path fill="#fff" d="M1 1"/></svg>"##
        );
        assert!(svg.name.starts_with("image-") && svg.name.ends_with(".svg"));
        let png = &styles.images[1];
        assert_eq!(png.bytes, b"\x89PNG\r\n\x1a\n");
        assert!(png.name.ends_with(".png"));
        assert_eq!(
            styles.css,
            format!(
                concat!(
                    r#".a{{background:url("{svg}") center}}"#,
                    r#".b{{background-image:url("{png}")}}"#,
                    r#".c{{background:url("{svg}")}}"#,
                    ".d{{background:url(/console/assets/favicon.svg)}}",
                    ".e{{background:url(data:font/woff2;base64,AAAA)}}",
                    r#".f{{background:url("data:image/svg+xml,\26 lt;")}}"#,
                ),
                svg = svg.name,
                png = png.name
            )
        );
        assert_eq!(styles.image(&svg.name), Some(svg));
        assert_eq!(styles.image("image-0000000000000000.svg"), None);
    }

    #[test]
    fn a_url_this_cannot_read_is_left_alone() {
        for css in [
            "a{b:url(",
            "a{b:url(data:image/png;base64,not base64!)}",
            r#"a{b:url("data:image/svg+xml,%2")}"#,
            r#"a{b:url("unclosed)}"#,
        ] {
            let styles = VendorStyles::from_css(css);
            assert_eq!(styles.css, css);
            assert!(styles.images.is_empty(), "{css}");
        }
    }
}
