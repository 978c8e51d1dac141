//! Any configuration text: loading and validating never panic, and every
//! error renders a message.
//!
//! The input, as UTF-8 (lossy), is the TOML file; its lines of the form
//! `K=V` are also used as environment variables (`REDMIRROR_` is prepended
//! when missing).
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use redmirror_config::Layers;

fn file() -> &'static std::path::Path {
    static FILE: OnceLock<tempfile::TempPath> = OnceLock::new();
    FILE.get_or_init(|| tempfile::NamedTempFile::new().expect("temp file").into_temp_path())
}

fn check(layers: Result<Layers, redmirror_config::ConfigError>) {
    match layers {
        Err(e) => assert!(!e.to_string().is_empty()),
        Ok(layers) => {
            use redmirror_config::settings::{DEST_URL, KAFKA_BROKERS, SOURCE_URL};
            for needs in [&[][..], &[&SOURCE_URL, &DEST_URL, &KAFKA_BROKERS][..]] {
                match layers.validate(needs) {
                    Ok(config) => {
                        let _ = format!("{config:?}");
                    }
                    Err(e) => assert!(!e.to_string().is_empty()),
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = file();
    {
        let mut f = std::fs::File::create(path).expect("create temp file");
        f.write_all(text.as_bytes()).expect("write temp file");
    }
    check(Layers::load(Some(path), Vec::new()));

    let env: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let k = k.trim();
            let k = if k.starts_with("REDMIRROR_") {
                k.to_string()
            } else {
                format!("REDMIRROR_{k}")
            };
            (k, v.to_string())
        })
        .collect();
    check(Layers::load(None, env.clone()));
    check(Layers::load(Some(path), env));
});
