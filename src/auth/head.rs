//! [`Head`]: the request head a response future keeps for one replay after a 401.
//!
//! Most requests are never replayed, so the head is recorded as cheaply as possible: the
//! URI and the headers are copied as bytes into a buffer reused per thread, instead of
//! cloned. A clone would touch a reference count per URI part and per header value (an
//! atomic read-modify-write each, twice counting the drop) and allocate the header map's
//! tables; the copy is a few `memcpy`s into memory that is already there. The rare replay
//! parses the bytes back into a URI and a header map (the values were valid, so they are
//! again).

use std::cell::RefCell;
use std::fmt;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::request::Parts;
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

/// Buffers kept per thread for reuse: enough for the requests one thread has in flight
/// at once in a busy client; more are allocated and freed as usual.
const POOLED_BUFFERS: usize = 32;
/// A buffer larger than this (a head with unusually large headers) is freed, not kept.
const MAX_POOLED_CAPACITY: usize = 4 * 1024;
/// The first capacity of a buffer: a URL and a few headers.
const INITIAL_CAPACITY: usize = 512;

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    BUFFERS
        .try_with(|buffers| buffers.try_borrow_mut().ok().and_then(|mut b| b.pop()))
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn give_back(mut buffer: Vec<u8>) {
    if buffer.capacity() == 0 || buffer.capacity() > MAX_POOLED_CAPACITY {
        return;
    }
    buffer.clear();
    let _ = BUFFERS.try_with(|buffers| {
        if let Ok(mut buffers) = buffers.try_borrow_mut() {
            if buffers.len() < POOLED_BUFFERS {
                buffers.push(buffer);
            }
        }
    });
}

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
        let mut bytes = take_buffer();
        if bytes.capacity() == 0 {
            bytes.reserve(INITIAL_CAPACITY);
        }
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
        give_back(std::mem::take(&mut self.bytes));
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

    #[test]
    fn buffers_are_reused() {
        let request = parts(Request::get("https://h/p").body(()).unwrap());
        drop(Head::record(&request));
        let pooled = BUFFERS.with(|b| b.borrow().len());
        assert!(pooled >= 1);
        let head = Head::record(&request);
        assert_eq!(BUFFERS.with(|b| b.borrow().len()), pooled - 1);
        drop(head);
        assert_eq!(BUFFERS.with(|b| b.borrow().len()), pooled);
    }
}
