//! The chat page at `/` and its assets under `/page/`, embedded in the binary: plain files
//! (`src/page/`), no build step. Every answer carries a strict Content-Security-Policy: only
//! this server's scripts, styles and API, no inline script or style, no plugins, no framing,
//! so nothing a model writes into a reply can run even if it reached the DOM as markup.

use axum::Router;
use axum::http::HeaderName;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// Scripts, styles, images and fetches from this origin only; everything else refused.
/// `img-src` stays on `'self'` so a model's markdown image cannot make the browser call out.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// One embedded file and the route that serves it.
#[derive(Debug)]
struct Asset {
    route: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: [Asset; 7] = [
    Asset {
        route: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("page/index.html"),
    },
    Asset {
        route: "/page/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/app.js"),
    },
    Asset {
        route: "/page/api.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/api.js"),
    },
    Asset {
        route: "/page/render.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/render.js"),
    },
    Asset {
        route: "/page/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("page/style.css"),
    },
    Asset {
        route: "/page/vendor/markdown-it.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("page/vendor/markdown-it.min.js"),
    },
    Asset {
        route: "/page/vendor/LICENSE",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("page/vendor/LICENSE"),
    },
];

/// The page's routes, for any router state (they read none).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.route, get(move || async move { serve(asset) }))
    })
}

fn serve(asset: &'static Asset) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            // The page is small and changes with the binary: revalidate rather than run a
            // stale script against a newer API.
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                HeaderName::from_static("cross-origin-opener-policy"),
                "same-origin",
            ),
        ],
        asset.body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(route: &str) -> &'static str {
        let asset = ASSETS.iter().find(|a| a.route == route).expect(route);
        std::str::from_utf8(asset.body).expect("assets are UTF-8")
    }

    #[test]
    fn the_page_links_only_assets_that_are_served() {
        let html = text("/");
        let linked: Vec<&str> = html
            .split(['"', '\''])
            .filter(|part| part.starts_with("/page/"))
            .collect();
        assert!(linked.contains(&"/page/app.js"), "{linked:?}");
        assert!(linked.contains(&"/page/style.css"), "{linked:?}");
        for route in linked {
            assert!(
                ASSETS.iter().any(|a| a.route == route),
                "{route} not served"
            );
        }
        let imports = |route: &str| {
            text(route)
                .lines()
                .filter_map(|line| line.strip_prefix("import "))
                .filter_map(|line| line.split('"').nth(1))
                .collect::<Vec<_>>()
        };
        let app = imports("/page/app.js");
        assert_eq!(app, ["/page/api.js", "/page/render.js"]);
        let render = imports("/page/render.js");
        assert_eq!(render, ["/page/vendor/markdown-it.min.js"]);
        for route in app.into_iter().chain(render) {
            assert!(
                ASSETS.iter().any(|a| a.route == route),
                "{route} not served"
            );
        }
    }

    #[test]
    fn the_policy_allows_no_inline_script_or_style_and_the_page_needs_none() {
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        let html = text("/");
        assert!(!html.contains("<style"), "inline style would be refused");
        assert!(!html.contains(" style="), "inline style would be refused");
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap_or_default();
            assert!(
                tag.contains("src="),
                "inline script would be refused: {tag}"
            );
        }
        let handler = html.split_whitespace().find(|word| {
            word.strip_prefix("on")
                .and_then(|rest| rest.split_once('='))
                .is_some_and(|(name, _)| name.bytes().all(|b| b.is_ascii_lowercase()))
        });
        assert_eq!(handler, None, "inline handlers would be refused");
    }
}
