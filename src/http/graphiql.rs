//! GraphiQL at `GET /graphiql`, served entirely from the binary so that it works with no internet
//! (a private network, a locked-down office): GraphiQL 3.9.0 and React 18.3.1, their production
//! UMD builds vendored under `assets/graphiql/` (pinned, with their licences and provenance in
//! `assets/graphiql/README.md`), plus our page and start-up script. The page is preset with
//! `/graphql`, the WebSocket URL (`/graphql/ws`, graphql-transport-ws) and an `Authorization`
//! header to fill in; it holds no key of its own, which is why it sits outside the key guard.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX_HTML: &[u8] = include_bytes!("graphiql/index.html");

/// The files under `/graphiql/assets/`: name, media type, body, and whether the name carries a
/// version (then browsers may keep it for good).
const ASSETS: &[(&str, &str, &[u8], bool)] = &[
    (
        "graphiql-3.9.0.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql-3.9.0.min.js"),
        true,
    ),
    (
        "graphiql-3.9.0.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql-3.9.0.min.css"),
        true,
    ),
    (
        "react-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-18.3.1.production.min.js"),
        true,
    ),
    (
        "react-dom-18.3.1.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-dom-18.3.1.production.min.js"),
        true,
    ),
    (
        "graphiql-init.js",
        "text/javascript; charset=utf-8",
        include_bytes!("graphiql/graphiql-init.js"),
        false,
    ),
    (
        "graphiql.css",
        "text/css; charset=utf-8",
        include_bytes!("graphiql/graphiql.css"),
        false,
    ),
];

/// Scripts and connections (HTTP and WebSocket) of this origin only. Styles allow inline ones:
/// GraphiQL and React set `style` attributes; fonts and icons come as `data:` URLs in the CSS.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `/graphiql` and its assets.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/graphiql",
            get(|| async { file("text/html; charset=utf-8", INDEX_HTML, false) }),
        )
        .route("/graphiql/assets/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, ..)| *n == name) {
        Some((_, media, body, versioned)) => file(media, body, *versioned),
        None => (StatusCode::NOT_FOUND, "no such GraphiQL asset").into_response(),
    }
}

fn file(media: &'static str, body: &'static [u8], versioned: bool) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if versioned {
            // The version is in the name: a new one gets a new name.
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
