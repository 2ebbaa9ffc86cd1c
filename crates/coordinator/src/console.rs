//! The web console: a single-page app (plain ES modules, no framework, nothing
//! fetched at run time) embedded in the binary and served by the coordinator's
//! gateway at `/` on its own port, beside gRPC and the HTTP/JSON API it calls.
//!
//! The files live in `crates/coordinator/console/`; [`asset`] maps a request
//! path to one of them. `index.html` refers to the others relatively
//! (`console/app.js`), and the scripts call the API relatively (`v1/jobs`),
//! so the console also works behind an Ingress that serves it under a path
//! prefix ending in `/`.

/// Every console file: request path, content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("/", HTML, include_bytes!("../console/index.html")),
    ("/index.html", HTML, include_bytes!("../console/index.html")),
    (
        "/console/style.css",
        CSS,
        include_bytes!("../console/style.css"),
    ),
    (
        "/console/icon.svg",
        SVG,
        include_bytes!("../console/icon.svg"),
    ),
    ("/console/app.js", JS, include_bytes!("../console/app.js")),
    ("/console/api.js", JS, include_bytes!("../console/api.js")),
    ("/console/dom.js", JS, include_bytes!("../console/dom.js")),
    (
        "/console/charts.js",
        JS,
        include_bytes!("../console/charts.js"),
    ),
    (
        "/console/colormaps.js",
        JS,
        include_bytes!("../console/colormaps.js"),
    ),
    ("/console/jobs.js", JS, include_bytes!("../console/jobs.js")),
    (
        "/console/submit.js",
        JS,
        include_bytes!("../console/submit.js"),
    ),
    (
        "/console/models.js",
        JS,
        include_bytes!("../console/models.js"),
    ),
    (
        "/console/explain.js",
        JS,
        include_bytes!("../console/explain.js"),
    ),
    (
        "/console/workers.js",
        JS,
        include_bytes!("../console/workers.js"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";

/// The content type and bytes of the console file served at `path` (`/`,
/// `/console/app.js`, ...); `None` for any other path.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|&(_, content_type, bytes)| (content_type, bytes))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn console_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
    }

    #[test]
    fn index_and_scripts_are_served_with_their_types() {
        let (content_type, html) = asset("/").unwrap();
        assert_eq!(content_type, HTML);
        assert!(
            std::str::from_utf8(html)
                .unwrap()
                .contains("console/app.js")
        );
        assert_eq!(asset("/console/app.js").unwrap().0, JS);
        assert_eq!(asset("/console/style.css").unwrap().0, CSS);
        assert!(asset("/console/nope.js").is_none());
        assert!(asset("/v1/jobs").is_none());
        assert!(asset("/console/../Cargo.toml").is_none());
    }

    #[test]
    fn every_file_of_the_folder_is_served() {
        let mut on_disk: Vec<String> = std::fs::read_dir(console_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "index.html")
            .map(|name| format!("/console/{name}"))
            .collect();
        on_disk.sort();
        let mut served: Vec<String> = ASSETS
            .iter()
            .map(|(p, _, _)| p.to_string())
            .filter(|p| p.starts_with("/console/"))
            .collect();
        served.sort();
        assert_eq!(on_disk, served, "list new console files in ASSETS");
    }

    #[test]
    fn every_module_import_is_served() {
        // `import ... from "./x.js"` in any script, and the files index.html
        // names, must be assets: a missing one breaks the page only in a browser.
        for &(path, content_type, bytes) in ASSETS {
            if content_type != JS && content_type != HTML {
                continue;
            }
            let text = std::str::from_utf8(bytes).unwrap();
            let mut rest = text;
            while let Some(at) = rest.find("from \"./") {
                let tail = &rest[at + "from \"./".len()..];
                let name = &tail[..tail.find('"').unwrap()];
                assert!(
                    asset(&format!("/console/{name}")).is_some(),
                    "{path} imports {name}, which is not served"
                );
                rest = tail;
            }
            for attr in ["src=\"console/", "href=\"console/"] {
                let mut rest = text;
                while let Some(at) = rest.find(attr) {
                    let tail = &rest[at + attr.len()..];
                    let name = &tail[..tail.find('"').unwrap()];
                    assert!(
                        asset(&format!("/console/{name}")).is_some(),
                        "{path} links {name}, which is not served"
                    );
                    rest = tail;
                }
            }
        }
    }
}
