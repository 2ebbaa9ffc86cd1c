//! The web console's static files (placeholder until the console lands).

/// The content type and bytes of the console file at `path`, if any.
pub fn asset(path: &str) -> Option<(&'static str, &'static [u8])> {
    match path {
        "/" => Some((
            "text/html; charset=utf-8",
            b"<!doctype html><title>Camshaft</title>",
        )),
        _ => None,
    }
}
