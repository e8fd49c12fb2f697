//! Request paths and queries come from clients.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portcullis::server::routes::{Query, Route};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (path, query) = text.split_once('?').unwrap_or((text, ""));
        let _ = Route::parse(path);
        let _ = Query::parse(Some(query));
    }
});
