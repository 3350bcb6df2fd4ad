//! Fuzz check for `castellan.toml` parsing: any input either parses or
//! fails with a diagnostic that renders, and never panics.

use std::path::Path;

use castellan_model::Config;

/// Feeds `data` to the configuration parser and checks what comes back.
pub fn check_config(data: &[u8]) {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(source, Path::new("fuzz.toml")) {
        Ok(config) => {
            for connection in config.connections.values() {
                let origin = connection.upstream.origin();
                assert!(
                    origin.starts_with("http://") || origin.starts_with("https://"),
                    "upstream origin {origin:?} has another scheme"
                );
                assert!(!connection.upstream.host.is_empty(), "empty upstream host");
            }
            let names = config.secret_names();
            assert!(names.windows(2).all(|pair| pair[0] < pair[1]));
        }
        Err(error) => {
            // Rendering computes lines and columns from byte offsets, which
            // must stay inside the source.
            assert!(!error.to_string().is_empty(), "empty configuration error");
        }
    }
}
