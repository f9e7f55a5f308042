//! Secrets in memory: bytes that are wiped when dropped, headers marked sensitive, and the
//! exact credential a Basic header carries (scrubbed by value from every message, see
//! [`scrub`](crate::error::scrub)).

use bytes::Bytes;
use http::header::InvalidHeaderValue;
use http::HeaderValue;
use zeroize::Zeroize;

/// Bytes that are wiped when the last `Bytes` sharing them is dropped.
struct Wiped(Vec<u8>);

impl AsRef<[u8]> for Wiped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// `bytes` as `Bytes` that are wiped when the last copy is dropped: for a request body
/// holding a secret (`client_secret_post`).
pub(crate) fn wiped_bytes(bytes: Vec<u8>) -> Bytes {
    Bytes::from_owner(Wiped(bytes))
}

/// A header value holding a secret: marked sensitive (never HPACK-indexed, hidden by
/// `Debug`), sharing `bytes` without copying them, and wiping them when the last copy of
/// the header is dropped (or at once, when they are not a valid header value).
pub(crate) fn sensitive_header(bytes: Vec<u8>) -> Result<HeaderValue, InvalidHeaderValue> {
    let mut header = HeaderValue::from_maybe_shared(wiped_bytes(bytes))?;
    header.set_sensitive(true);
    Ok(header)
}

/// The credential of an `Authorization: Basic <credential>` header exactly as it is sent,
/// without its `=` padding (so that an echo with or without the padding contains it), or
/// `""` for any other header.
pub(crate) fn basic_credential(header: &HeaderValue) -> &str {
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Basic "))
        .map_or("", |credential| credential.trim_end_matches('='))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sensitive_and_shared() {
        let header = sensitive_header(b"Bearer abc".to_vec()).unwrap();
        assert!(header.is_sensitive());
        assert_eq!(header, "Bearer abc");
        assert!(sensitive_header(b"a\nb".to_vec()).is_err());
    }

    #[test]
    fn the_basic_credential_as_sent() {
        let header = sensitive_header(b"Basic bGtncGRlOlludnFqQXhxZnZtcA==".to_vec()).unwrap();
        assert_eq!(basic_credential(&header), "bGtncGRlOlludnFqQXhxZnZtcA");
        let bearer = sensitive_header(b"Bearer abc".to_vec()).unwrap();
        assert_eq!(basic_credential(&bearer), "");
    }
}
