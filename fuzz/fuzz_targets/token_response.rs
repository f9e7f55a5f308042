//! Arbitrary bytes as a token endpoint answer: `Ok` or a typed error, never a panic.
#![no_main]

use docplanner_auth::source::parse_token_response;
use http::{HeaderMap, StatusCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&first, body)) = input.split_first() else {
        return;
    };
    // The first byte picks the status: success or one of the error classes.
    let status = [200u16, 201, 400, 401, 429, 500, 503][usize::from(first) % 7];
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    match parse_token_response(status, &HeaderMap::new(), body) {
        Ok((token, lifetime)) => assert!(!token.is_empty() && !lifetime.is_zero()),
        Err(error) => assert!(error.is_token_endpoint()),
    }
});
