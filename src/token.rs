//! [`AccessToken`]: a bearer token, ready to be sent, with its lifetime.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;
use zeroize::Zeroize;

use crate::error::{Error, Kind};
use crate::secret::sensitive_header;

/// The longest lifetime we ever believe: 24 hours.
///
/// Docplanner's guide says tokens "are valid for 24 hours" and tells clients never to
/// assume more; a larger `expires_in` is capped to this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// Every token gets a process-wide unique id, so "is the token I used still the current
/// one?" is an integer comparison.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// An OAuth2 bearer access token and the moments it was obtained and expires.
///
/// The token is held as the ready `Authorization` header value `Bearer <token>`, marked
/// sensitive (so HTTP/2 never indexes it and `Debug` of a `HeaderMap` hides it); cloning an
/// `AccessToken` or attaching it to a request copies no bytes, and the bytes are zeroized
/// when the last copy is dropped. `Debug` prints `[redacted]`, never the token.
///
/// ```
/// use std::time::Duration;
/// use docplanner_auth::AccessToken;
///
/// let token = AccessToken::new("abc.def", Duration::from_secs(3600))?;
/// assert_eq!(token.header_value(), "Bearer abc.def");
/// assert!(token.header_value().is_sensitive());
/// assert!(!format!("{token:?}").contains("abc.def"));
/// # Ok::<(), docplanner_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct AccessToken {
    header: HeaderValue,
    id: u64,
    obtained_at: Instant,
    expires_at: Instant,
}

const BEARER: &[u8] = b"Bearer ";

impl AccessToken {
    /// A token obtained now that lives for `lifetime` (capped at [`MAX_LIFETIME`]).
    ///
    /// Fails with [`Error::is_invalid_response`] when the token is empty or has
    /// characters that cannot be sent in an HTTP header (anything but visible ASCII).
    pub fn new(token: impl Into<String>, lifetime: Duration) -> Result<Self, Error> {
        Self::obtained_at(token, Instant::now(), lifetime)
    }

    /// A token obtained at `obtained_at` (measure it when the token request was sent, so
    /// that the expiry errs on the early side) that lives for `lifetime` (capped at
    /// [`MAX_LIFETIME`]).
    pub fn obtained_at(
        token: impl Into<String>,
        obtained_at: Instant,
        lifetime: Duration,
    ) -> Result<Self, Error> {
        let mut token: String = token.into();
        let built = Self::from_bytes(token.as_bytes(), obtained_at, lifetime);
        token.zeroize();
        built
    }

    /// A token from bytes the caller owns (and wipes): the only copy made is the header's,
    /// which is wiped when the last clone of this token drops.
    pub(crate) fn from_bytes(
        token: &[u8],
        obtained_at: Instant,
        lifetime: Duration,
    ) -> Result<Self, Error> {
        let header = bearer_header(token)?;
        let lifetime = lifetime.min(MAX_LIFETIME);
        Ok(Self {
            header,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            obtained_at,
            expires_at: obtained_at + lifetime,
        })
    }

    /// The `Authorization` header value, `Bearer <token>`, marked sensitive.
    pub fn header_value(&self) -> &HeaderValue {
        &self.header
    }

    /// The raw token. Handle with care: it grants access to patient data.
    pub fn secret(&self) -> &str {
        // The header was built from visible ASCII after the `Bearer ` prefix.
        std::str::from_utf8(&self.header.as_bytes()[BEARER.len()..]).unwrap_or_default()
    }

    /// When the token request that produced this token was sent.
    pub fn obtained(&self) -> Instant {
        self.obtained_at
    }

    /// When the token expires, by the lifetime the server gave (capped at 24 h).
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// The lifetime the token was issued with (capped at 24 h).
    pub fn lifetime(&self) -> Duration {
        self.expires_at - self.obtained_at
    }

    /// Whether `self` and `other` carry the same token string (tokens obtained twice
    /// compare equal when the server handed out the same string).
    pub fn same_secret(&self, other: &AccessToken) -> bool {
        self.header == other.header
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Give this token the identity of an earlier token with the same string.
    pub(crate) fn set_id(&mut self, id: u64) {
        self.id = id;
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"[redacted]")
            .field("lifetime", &self.lifetime())
            .field(
                "expires_in",
                &self.expires_at.saturating_duration_since(Instant::now()),
            )
            .finish()
    }
}

fn bearer_header(token: &[u8]) -> Result<HeaderValue, Error> {
    if token.is_empty() {
        return Err(Error::new(
            Kind::InvalidResponse,
            "the token endpoint returned an empty access_token: check that the client is \
             allowed to use the client-credentials grant",
        ));
    }
    if let Some(pos) = token.iter().position(|b| !b.is_ascii_graphic()) {
        return Err(Error::new(
            Kind::InvalidResponse,
            format!(
                "the token endpoint returned an access_token with a character that cannot \
                 be sent in an HTTP header (byte {pos} of {}): the token was not used",
                token.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(BEARER.len() + token.len());
    bytes.extend_from_slice(BEARER);
    bytes.extend_from_slice(token);
    sensitive_header(bytes)
        .map_err(|_| Error::new(Kind::InvalidResponse, "invalid access_token bytes"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn header_is_bearer_and_sensitive() {
        let t = AccessToken::new("tok-123", Duration::from_secs(60)).unwrap();
        assert_eq!(t.header_value(), "Bearer tok-123");
        assert!(t.header_value().is_sensitive());
        assert_eq!(t.secret(), "tok-123");
        assert_eq!(t.lifetime(), Duration::from_secs(60));
    }

    #[test]
    fn lifetime_is_capped_at_24h() {
        let t = AccessToken::new("t", Duration::from_secs(10 * 24 * 3600)).unwrap();
        assert_eq!(t.lifetime(), MAX_LIFETIME);
    }

    #[test]
    fn bad_bytes_are_an_error_not_a_panic() {
        for bad in ["", "a b", "a\nb", "tök", "a\u{7f}"] {
            let err = AccessToken::new(bad, Duration::from_secs(1)).unwrap_err();
            assert!(err.is_invalid_response(), "{bad:?}");
        }
    }

    #[test]
    fn debug_is_redacted_and_ids_are_unique() {
        let a = AccessToken::new("very-secret", Duration::from_secs(1)).unwrap();
        let b = AccessToken::new("very-secret", Duration::from_secs(1)).unwrap();
        assert!(!format!("{a:?}").contains("very-secret"));
        assert_ne!(a.id(), b.id());
        assert!(a.same_secret(&b));
    }
}
