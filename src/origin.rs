//! Where a secret may travel: the origin (scheme, host, port) checks shared by the token
//! URL of [`ClientCredentials`](crate::ClientCredentials) and the API hosts of
//! [`BearerAuthLayer`](crate::BearerAuthLayer) and the reqwest middleware, including the
//! check that a caller's `Host` header names the host the request really goes to.

use std::fmt;
use std::net::IpAddr;

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, Uri};

use crate::error::{Error, Kind};

/// The host and port a token may be sent to.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Origin {
    https: bool,
    host: String,
    port: u16,
    /// `host:port`, compared as a string with request authorities on the hot path.
    host_port: String,
}

impl Origin {
    /// The origin of an absolute `http(s)` URL given in configuration.
    pub(crate) fn parse_config(what: &str, url: &str) -> Result<Self, Error> {
        let uri: Uri = url.parse().map_err(|_| {
            Error::config(format!(
                "the {what} `{url}` is not a valid URL: give an absolute URL such as \
                 https://www.doctoralia.es/api/v3/integration"
            ))
        })?;
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            // Never echo it: the part before `@` is a user name and password.
            return Err(Error::config(format!(
                "the {what} must not contain user:password@ credentials"
            )));
        }
        let https = match uri.scheme() {
            Some(s) if *s == Scheme::HTTPS => true,
            Some(s) if *s == Scheme::HTTP => false,
            _ => {
                return Err(Error::config(format!(
                    "the {what} `{url}` must be an absolute https:// URL"
                )))
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::config(format!("the {what} `{url}` has no host")))?;
        let host = canonical_host(host).ok_or_else(|| {
            Error::config(format!(
                "the {what} `{url}` ends its host with a dot: write the host without it (a \
                 trailing dot names the same server under another spelling)"
            ))
        })?;
        let default_port = if https { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let origin = Self {
            https,
            host_port: format!("{host}:{port}"),
            host,
            port,
        };
        if !https && !origin.is_loopback() {
            return Err(Error::new(
                Kind::InsecureScheme,
                format!(
                    "the {what} `{url}` is plain http: secrets only travel over https \
                     (plain http is accepted for loopback test servers only, with \
                     allow_http_loopback)"
                ),
            ));
        }
        Ok(origin)
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn is_https(&self) -> bool {
        self.https
    }

    pub(crate) fn is_loopback(&self) -> bool {
        is_loopback_host(&self.host)
    }

    /// Whether a URI authority (`host` or `host:port`) names this origin, for a request
    /// whose scheme is `https` (or not). An authority with user info never matches. No
    /// parsing, no allocation.
    #[inline]
    pub(crate) fn matches(&self, authority: &str, https: bool) -> bool {
        let default_port = if https { 443 } else { 80 };
        // Exact comparisons first (hosts are usually written in lower case, as stored).
        let same = |a: &str, b: &str| a == b || a.eq_ignore_ascii_case(b);
        (self.port == default_port && same(authority, &self.host))
            || same(authority, &self.host_port)
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}:{}", self.host, self.port)
    }
}

/// A configured host in the one spelling requests are compared with: lower case, an IP
/// literal as `Ipv4Addr`/`Ipv6Addr` print it (an IPv4-mapped IPv6 address as its IPv4
/// address), so that two spellings of one server are one origin. `None` for a trailing
/// dot (`example.com.` is `example.com` to DNS): refused rather than guessed.
fn canonical_host(host: &str) -> Option<String> {
    if host.ends_with('.') {
        return None;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    })
}

/// `localhost`, `127.0.0.0/8` or `::1`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Check that `origin` may receive a secret now: https, or http to loopback with the
/// explicit opt-in.
pub(crate) fn require_secure(
    origin: &Origin,
    allow_http_loopback: bool,
    what: &str,
) -> Result<(), Error> {
    if origin.is_https() || (allow_http_loopback && origin.is_loopback()) {
        Ok(())
    } else {
        Err(Error::new(
            Kind::InsecureScheme,
            format!(
                "the {what} {origin:?} is plain http: secrets only travel over https (for a \
                 loopback test server, opt in with allow_http_loopback(true))"
            ),
        ))
    }
}

/// Where a token may be attached: a list of API origins, https only (plain http to a
/// loopback origin with the opt-in). Shared by every adapter (tower layer, reqwest).
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    origins: Vec<Origin>,
    allow_http_loopback: bool,
}

impl Scope {
    pub(crate) fn new(origin: Origin) -> Self {
        Self {
            origins: vec![origin],
            allow_http_loopback: false,
        }
    }

    pub(crate) fn add(&mut self, origin: Origin) {
        self.origins.push(origin);
    }

    pub(crate) fn allow_http_loopback(&mut self, allow: bool) {
        self.allow_http_loopback = allow;
    }

    /// Whether a request for `uri` falls in this scope (a configured origin, over https or,
    /// with the opt-in, plain http to loopback). A yes or no, never an error: the router
    /// asks it of every set to find the one a request belongs to.
    #[inline]
    pub(crate) fn admits(&self, uri: &Uri) -> bool {
        match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => {
                self.admits_parts(scheme.as_str(), authority.as_str(), authority.host())
            }
            _ => false,
        }
    }

    /// [`admits`](Self::admits) for a request given by scheme, authority (`host[:port]`, as
    /// written in the URL) and host.
    #[inline]
    pub(crate) fn admits_parts(&self, scheme: &str, authority: &str, host: &str) -> bool {
        let https = scheme.eq_ignore_ascii_case(Scheme::HTTPS.as_str());
        let http_ok = !https
            && self.allow_http_loopback
            && scheme.eq_ignore_ascii_case(Scheme::HTTP.as_str())
            && is_loopback_host(host);
        (https || http_ok) && self.origins.iter().any(|o| o.matches(authority, https))
    }

    /// The authorities (`host:port`, and `host` alone when the port is 443) under which
    /// an `https` request names one of this scope's https origins: the router's exact
    /// lookup table.
    pub(crate) fn https_authorities(&self) -> impl Iterator<Item = &str> {
        self.origins.iter().filter(|o| o.https).flat_map(|o| {
            let bare = (o.port == 443).then_some(o.host.as_str());
            std::iter::once(o.host_port.as_str()).chain(bare)
        })
    }

    /// Whether one of this scope's origins is on `host` (whatever the scheme and port, and
    /// with or without a trailing dot).
    pub(crate) fn has_host(&self, host: &str) -> bool {
        let host = host.strip_suffix('.').unwrap_or(host);
        self.origins
            .iter()
            .any(|o| o.host().eq_ignore_ascii_case(host))
    }

    /// Whether this scope and `other` share an origin.
    pub(crate) fn overlaps(&self, other: &Scope) -> bool {
        self.origins.iter().any(|o| other.has(o))
    }

    /// Whether `origin` is one of this scope's.
    pub(crate) fn has(&self, origin: &Origin) -> bool {
        self.origins.contains(origin)
    }

    /// May a token be attached to a request for `uri`? No allocation on success, and no
    /// parsing: an `https` URI whose authority is a configured origin is accepted with two
    /// string comparisons; anything else takes the full [`check`](Self::check).
    #[inline]
    pub(crate) fn check_uri(&self, uri: &Uri) -> Result<(), Error> {
        match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => {
                // `Scheme` equality is case-insensitive (`HTTPS://` parses as `https`).
                if *scheme == Scheme::HTTPS
                    && self
                        .origins
                        .iter()
                        .any(|o| o.matches(authority.as_str(), true))
                {
                    return Ok(());
                }
                self.check(scheme.as_str(), authority.as_str(), authority.host())
            }
            _ => Err(Error::new(
                Kind::HostNotAllowed,
                "refused to attach the token to a request without an absolute URI: give the \
                 full https://… URL (a base-URL layer must run before this one)",
            )),
        }
    }

    /// [`check_uri`](Self::check_uri), and a caller's `Host` header, if any, must name
    /// the same host and port as the URI (see [`check_host_header`]).
    #[inline]
    pub(crate) fn check_request(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), Error> {
        self.check_uri(uri)?;
        match uri.authority() {
            Some(authority) => check_host_header(
                headers,
                uri.scheme() == Some(&Scheme::HTTPS),
                authority.as_str(),
            ),
            None => Ok(()), // refused by `check_uri` already
        }
    }

    /// May a token be attached to a request with this scheme, authority (`host[:port]`,
    /// as written in the URL) and host?
    #[inline]
    pub(crate) fn check(&self, scheme: &str, authority: &str, host: &str) -> Result<(), Error> {
        let https = scheme.eq_ignore_ascii_case(Scheme::HTTPS.as_str());
        let loopback_ok = self.allow_http_loopback
            && scheme.eq_ignore_ascii_case(Scheme::HTTP.as_str())
            && is_loopback_host(host);
        if !https && !loopback_ok {
            return Err(Error::new(
                Kind::InsecureScheme,
                format!(
                    "refused to attach the token to a {scheme}:// request for {host}: tokens \
                     only travel over https (for a loopback test server, opt in with \
                     allow_http_loopback(true))"
                ),
            ));
        }
        if !self.origins.iter().any(|o| o.matches(authority, https)) {
            return Err(Error::new(
                Kind::HostNotAllowed,
                format!(
                    "refused to attach the token to a request for {host}: not a configured API \
                     host ({:?}); add it with allow_api_base if it should receive the token",
                    self.origins
                ),
            ));
        }
        Ok(())
    }
}

/// A caller's `Host` header must name the host and port the request really goes to
/// (`authority`, from its URI): a front end that routes by `Host` would otherwise see the
/// token for another name. No `Host` header is fine (the client writes it from the URI);
/// two are refused.
#[inline]
pub(crate) fn check_host_header(
    headers: &HeaderMap,
    https: bool,
    authority: &str,
) -> Result<(), Error> {
    let mut values = headers.get_all(HOST).iter();
    let Some(value) = values.next() else {
        return Ok(());
    };
    let same = values.next().is_none()
        && value
            .to_str()
            .is_ok_and(|host| same_authority(host, authority, https));
    if same {
        return Ok(());
    }
    // The header's value is the caller's, not a secret, but it may be anything: never
    // echo it.
    Err(Error::new(
        Kind::HostNotAllowed,
        format!(
            "refused to attach the token to a request for {authority} whose Host header names \
            another host: remove the Host header (the client writes it from the URL) or \
            send the request to that host's URL"
        ),
    ))
}

/// Whether two authorities (`host[:port]`) name the same host and port, the port defaulting
/// to the scheme's. User info never matches.
fn same_authority(a: &str, b: &str, https: bool) -> bool {
    if a.eq_ignore_ascii_case(b) {
        return !a.contains('@');
    }
    let default_port = if https { 443 } else { 80 };
    let parse = |s: &str| {
        s.parse::<Authority>()
            .ok()
            .filter(|a| !a.as_str().contains('@'))
            .map(|a| (a.host().to_owned(), a.port_u16().unwrap_or(default_port)))
    };
    match (parse(a), parse(b)) {
        (Some((host_a, port_a)), Some((host_b, port_b))) => {
            port_a == port_b && host_a.eq_ignore_ascii_case(&host_b)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "127.9.9.9", "[::1]", "LOCALHOST"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1", "localhost.evil.com", "[::2]"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn config_origins() {
        let o = Origin::parse_config("API base", "https://WWW.Doctoralia.es/api").unwrap();
        assert!(o.matches("www.doctoralia.es", true));
        assert!(o.matches("WWW.doctoralia.es:443", true));
        assert!(!o.matches("www.doctoralia.es:8443", true));
        assert!(!o.matches("www.doctoralia.es", false), "http means port 80");
        assert!(!o.matches("user@www.doctoralia.es", true));
        assert!(!o.matches("www.doctoralia.es.evil.com", true));
        let o = Origin::parse_config("x", "https://127.0.0.1:8443").unwrap();
        assert!(o.matches("127.0.0.1:8443", true) && !o.matches("127.0.0.1", true));
        assert!(Origin::parse_config("x", "http://127.0.0.1:8080").is_ok());
        let e = Origin::parse_config("x", "http://www.doctoralia.es").unwrap_err();
        assert!(e.is_insecure_scheme());
        assert!(Origin::parse_config("x", "/relative")
            .unwrap_err()
            .is_config());
        assert!(Origin::parse_config("x", "ftp://h")
            .unwrap_err()
            .is_config());
        assert!(Origin::parse_config("x", "not a url")
            .unwrap_err()
            .is_config());
    }

    /// Two spellings of one server are one origin (so "each origin belongs to one set"
    /// holds); a trailing dot is refused, not guessed.
    #[test]
    fn config_origins_have_one_spelling() {
        let origin = |url: &str| Origin::parse_config("x", url).unwrap();
        assert_eq!(
            origin("https://[::1]"),
            origin("https://[0:0:0:0:0:0:0:1]:443")
        );
        assert_eq!(
            origin("https://127.0.0.1:8443"),
            origin("https://[::ffff:127.0.0.1]:8443")
        );
        assert_eq!(origin("https://[::FFFF:7f00:1]").host(), "127.0.0.1");
        assert_eq!(origin("https://[2001:DB8::0:1]").host(), "[2001:db8::1]");
        assert!(origin("https://[2001:db8::1]:8443").matches("[2001:db8::1]:8443", true));
        for url in [
            "https://www.znanylekarz.pl.",
            "https://www.znanylekarz.pl.:443/api",
        ] {
            let error = Origin::parse_config("API base", url).unwrap_err();
            assert!(
                error.is_config() && error.to_string().contains("dot"),
                "{error}"
            );
        }
        let mut scope = Scope::new(origin("https://www.znanylekarz.pl"));
        assert!(scope.has_host("WWW.znanylekarz.pl.") && !scope.has_host("znanylekarz.pl"));
        scope.add(origin("https://[::1]:8443"));
        assert!(scope.has(&origin("https://[0::1]:8443")));
    }

    #[test]
    fn host_header_must_name_the_uri_authority() {
        let check = |host: &[&str], https: bool, authority: &str| {
            let mut headers = HeaderMap::new();
            for h in host {
                headers.append(HOST, h.parse().unwrap());
            }
            check_host_header(&headers, https, authority)
        };
        let ok = [
            (&[][..], true, "www.doctoralia.es"),
            (&["www.doctoralia.es"], true, "www.doctoralia.es"),
            (&["WWW.Doctoralia.es"], true, "www.doctoralia.es"),
            (&["www.doctoralia.es:443"], true, "www.doctoralia.es"),
            (&["www.doctoralia.es"], true, "www.doctoralia.es:443"),
            (&["127.0.0.1:8443"], true, "127.0.0.1:8443"),
            (&["127.0.0.1"], false, "127.0.0.1:80"),
            (&["[::1]:8443"], true, "[::1]:8443"),
        ];
        for (host, https, authority) in ok {
            assert!(
                check(host, https, authority).is_ok(),
                "{host:?} {authority}"
            );
        }
        let refused = [
            (&["evil.example"][..], true, "www.doctoralia.es"),
            (&["www.doctoralia.es:8443"], true, "www.doctoralia.es"),
            (&["www.doctoralia.es:80"], true, "www.doctoralia.es"),
            (&["localhost:8443"], true, "127.0.0.1:8443"),
            (&["user@www.doctoralia.es"], true, "www.doctoralia.es"),
            (
                &["www.doctoralia.es", "evil.example"],
                true,
                "www.doctoralia.es",
            ),
            (
                &["www.doctoralia.es", "www.doctoralia.es"],
                true,
                "www.doctoralia.es",
            ),
            (&[""], true, "www.doctoralia.es"),
        ];
        for (host, https, authority) in refused {
            let error = check(host, https, authority).unwrap_err();
            assert!(error.is_host_not_allowed(), "{host:?} {authority}");
            assert!(!error.to_string().contains("evil"), "{error}");
        }
    }
}
