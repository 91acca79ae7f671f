//! The console's static files, embedded in the binary at build time (`dataplane/console/dist/`,
//! built from `dataplane/console/src/` by `dataplane/console/build`; see docs/console.md), served
//! under `/console/` with a strict Content-Security-Policy.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;

/// The Content-Security-Policy of every console file: scripts, styles, images and
/// connections from the instance's own origin only, no inline script or style, no
/// plugins, no `<base>`, no form posts, and no framing by any page.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self'; font-src 'self'; connect-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file of the console; the first is the page itself.
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../console/dist/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../console/dist/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../console/dist/console.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../console/dist/icon.svg"),
    },
];

/// The headers every console answer carries.
fn security_headers(headers: &mut HeaderMap) {
    let set = |headers: &mut HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        headers,
        header::HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    set(headers, header::CACHE_CONTROL, "no-cache");
}

fn serve(asset: &Asset) -> Response {
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    security_headers(headers);
    response
}

/// `GET /console/`: the page.
pub(crate) async fn index() -> Response {
    serve(&ASSETS[0])
}

/// `GET /console`: to `/console/` (relative links resolve below it).
pub(crate) async fn redirect() -> Redirect {
    Redirect::permanent(vibe_api::console::CONSOLE_PATH)
}

/// `GET /console/{file}`: one of the embedded files, else 404.
pub(crate) async fn file(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset),
        None => {
            let mut response = ApiError::NotFound("No such console file.".into()).into_response();
            security_headers(response.headers_mut());
            response
        }
    }
}
