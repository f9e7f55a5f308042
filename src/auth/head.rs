//! [`Head`]: the request head a response future keeps for one replay after a 401.
//!
//! Every request whose body can be replayed keeps its head, and most are never replayed,
//! so the head is recorded in one allocation: the URI and the headers are copied as bytes
//! into one buffer sized up front. A `Parts` clone would cost a header map (two
//! allocations) plus one more for each header name or value the caller built from a
//! string (cloning such `Bytes` the first time allocates their shared form): 8 allocations
//! for a POST with three headers where this costs 1 (`benches/allocations.rs`, the
//! "≤ AddAuthorization + 2" target in BENCHMARKS.md). The rare replay parses the bytes back
//! (the values were valid, so they are again). The buffer belongs to this one request: it
//! is wiped and freed with it, never pooled, since headers may carry the caller's cookies
//! or API keys.

use std::fmt;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};
use zeroize::Zeroize;

/// The head of a request, kept to send it again.
pub(crate) struct Head {
    method: Method,
    version: Version,
    extensions: Extensions,
    /// The URI as written (`scheme://authority/path?query`), then each header as
    /// name length, value length (4 bytes each, little endian), sensitive flag (1 byte),
    /// name, value.
    bytes: Vec<u8>,
    uri_len: usize,
}

impl Head {
    /// Record the head of a request (before our `Authorization` header is added).
    #[inline]
    pub(crate) fn record(parts: &Parts) -> Self {
        let headers: usize = parts
            .headers
            .iter()
            .map(|(name, value)| HEADER_PREFIX + name.as_str().len() + value.len())
            .sum();
        let mut bytes = Vec::with_capacity(uri_len(&parts.uri) + headers);
        write_uri(&mut bytes, &parts.uri);
        let uri_len = bytes.len();
        for (name, value) in &parts.headers {
            // A caller's own `Authorization` is replaced by ours on the replay anyway:
            // never copy a credential into the reused buffer.
            if name != AUTHORIZATION {
                write_header(&mut bytes, name, value);
            }
        }
        Self {
            method: parts.method.clone(),
            version: parts.version,
            extensions: parts.extensions.clone(),
            bytes,
            uri_len,
        }
    }

    /// The head as it was recorded, to build the request again. `None` if the URI or a
    /// header does not parse back (it always does: they were valid when recorded).
    pub(crate) fn into_parts(mut self) -> Option<Parts> {
        let uri = Uri::try_from(&self.bytes[..self.uri_len]).ok()?;
        let mut headers = HeaderMap::new();
        let mut rest = &self.bytes[self.uri_len..];
        while !rest.is_empty() {
            let (recorded, tail) = read_header(rest)?;
            let name = HeaderName::from_bytes(recorded.name).ok()?;
            let mut value = HeaderValue::from_bytes(recorded.value).ok()?;
            value.set_sensitive(recorded.sensitive);
            headers.append(name, value);
            rest = tail;
        }
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = std::mem::take(&mut self.method);
        parts.uri = uri;
        parts.version = self.version;
        parts.headers = headers;
        parts.extensions = std::mem::take(&mut self.extensions);
        Some(parts)
    }
}

impl Drop for Head {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl fmt::Debug for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the URI or the headers: they may carry secrets of the caller's.
        f.debug_struct("Head")
            .field("method", &self.method)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// The bytes before each recorded header's name: two lengths and the sensitive flag.
const HEADER_PREFIX: usize = 9;

/// How many bytes `write_uri` writes for `uri`.
fn uri_len(uri: &Uri) -> usize {
    uri.scheme().map_or(0, |s| s.as_str().len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path().len()
        + uri.query().map_or(0, |q| q.len() + 1)
}

/// The URI as `Uri`'s `Display` writes it, which parses back to an equal `Uri`.
#[inline]
fn write_uri(bytes: &mut Vec<u8>, uri: &Uri) {
    if let Some(scheme) = uri.scheme() {
        bytes.extend_from_slice(scheme.as_str().as_bytes());
        bytes.extend_from_slice(b"://");
    }
    if let Some(authority) = uri.authority() {
        bytes.extend_from_slice(authority.as_str().as_bytes());
    }
    bytes.extend_from_slice(uri.path().as_bytes());
    if let Some(query) = uri.query() {
        bytes.push(b'?');
        bytes.extend_from_slice(query.as_bytes());
    }
}

#[inline]
fn write_header(bytes: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    let (name, sensitive, value) = (
        name.as_str().as_bytes(),
        value.is_sensitive(),
        value.as_bytes(),
    );
    // Header names and values are far below 4 GiB; `u32::MAX` marks one that is not, which
    // then fails to parse back (no replay) rather than being cut.
    let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX).to_le_bytes();
    bytes.extend_from_slice(&len(name));
    bytes.extend_from_slice(&len(value));
    bytes.push(u8::from(sensitive));
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(value);
}

/// One header as recorded: name, value, whether the value is sensitive.
struct Recorded<'a> {
    name: &'a [u8],
    value: &'a [u8],
    sensitive: bool,
}

/// The first recorded header of `bytes`, and the bytes after it.
fn read_header(bytes: &[u8]) -> Option<(Recorded<'_>, &[u8])> {
    let len = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let (name_len, value_len) = (len(0)?, len(4)?);
    let sensitive = *bytes.get(8)? != 0;
    let rest = bytes.get(9..)?;
    let end = name_len.checked_add(value_len)?;
    let recorded = Recorded {
        name: rest.get(..name_len)?,
        value: rest.get(name_len..end)?,
        sensitive,
    };
    Some((recorded, rest.get(end..)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parts(request: Request<()>) -> Parts {
        request.into_parts().0
    }

    #[test]
    fn round_trip() {
        let mut sensitive = HeaderValue::from_static("s3cr3t");
        sensitive.set_sensitive(true);
        let mut original = parts(
            Request::post("https://www.doctoralia.es:8443/api/v3/integration/x?a=1&b=%20")
                .version(Version::HTTP_2)
                .header("content-type", "application/json")
                .header("x-request-id", "abc")
                .header("accept", "a")
                .header("accept", "b")
                .header("x-key", sensitive)
                .header("x-bytes", HeaderValue::from_bytes(b"caf\xe9").unwrap())
                .extension(42_u32)
                .body(())
                .unwrap(),
        );
        original.headers.insert(
            "authorization",
            HeaderValue::from_static("Basic callers-own"),
        );
        let head = Head::record(&original);
        assert!(
            !head.bytes.windows(11).any(|w| w == b"callers-own"),
            "never copied"
        );
        let again = head.into_parts().unwrap();
        assert_eq!(again.method, Method::POST);
        assert_eq!(again.version, Version::HTTP_2);
        assert_eq!(
            again.uri,
            "https://www.doctoralia.es:8443/api/v3/integration/x?a=1&b=%20"
        );
        assert_eq!(again.extensions.get::<u32>(), Some(&42));
        original.headers.remove("authorization");
        assert_eq!(again.headers, original.headers);
        let accept: Vec<_> = again.headers.get_all("accept").iter().collect();
        assert_eq!(accept, ["a", "b"]);
        assert!(again.headers["x-key"].is_sensitive());
        assert!(!again.headers["x-request-id"].is_sensitive());
    }

    #[test]
    fn uris_of_every_shape() {
        for uri in [
            "https://h",
            "https://h/",
            "https://h?q",
            "http://127.0.0.1:8080/a/b?c=d#frag",
            "/relative?x",
            "*",
            "h:443",
        ] {
            let original = parts(Request::get(uri).body(()).unwrap());
            let again = Head::record(&original).into_parts().unwrap();
            assert_eq!(again.uri, original.uri, "{uri}");
        }
    }

    /// The Debug of a head shows its method and size, never the URI or a header (they may
    /// carry the caller's secrets).
    #[test]
    fn debug_shows_no_uri_and_no_header() {
        let request = parts(
            Request::post("https://h/p?key=s3cr3t")
                .header("x-api-key", "s3cr3t")
                .body(())
                .unwrap(),
        );
        let head = Head::record(&request);
        let shown = format!("{head:?}");
        let size = head.bytes.len();
        assert_eq!(shown, format!("Head {{ method: POST, bytes: {size}, .. }}"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn one_allocation_sized_up_front() {
        let request = parts(
            Request::post("https://h:8443/p?q=1")
                .header("content-type", "application/json")
                .header("x-request-id", "abc")
                .body(())
                .unwrap(),
        );
        let head = Head::record(&request);
        assert_eq!(head.bytes.len(), head.bytes.capacity(), "no reallocation");
    }
}
