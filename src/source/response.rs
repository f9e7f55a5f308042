//! Reading the token endpoint's answer: a token and its lifetime, or a typed error that
//! says what to do. Never panics, whatever the bytes.

use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};

use super::DEFAULT_TOKEN_LIFETIME;
use crate::error::{is_transient_status, scrub, Error, Kind};

/// Who answered, for messages: the token endpoint's host (and port, if not the default),
/// whether it is Docplanner's, and the secrets that must never appear in a message even if
/// the server echoes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) host: &'a str,
    pub(crate) docplanner: bool,
    pub(crate) scope: &'a str,
    pub(crate) secrets: [&'a str; 1],
}

impl Context<'_> {
    /// The market's domain for Docplanner ("check the client id and secret for
    /// doctoralia.es"), the host (and port) for anyone else.
    fn domain(&self) -> &str {
        if self.docplanner {
            self.host.strip_prefix("www.").unwrap_or(self.host)
        } else {
            self.host
        }
    }

    /// Who can fix the server's side: "Docplanner", or the provider's administrator.
    fn who(&self) -> &'static str {
        if self.docplanner {
            "Docplanner"
        } else {
            "the provider's administrator"
        }
    }
}

/// Parse a token endpoint answer into the token string and its lifetime.
///
/// Public (hidden) for the fuzz target and property tests only.
#[doc(hidden)]
pub fn parse_token_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(String, Duration), Error> {
    parse(
        status,
        headers,
        body,
        &Context {
            host: "token.example",
            docplanner: false,
            scope: "integration",
            secrets: [""],
        },
    )
}

pub(crate) fn parse(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    cx: &Context<'_>,
) -> Result<(String, Duration), Error> {
    let json = serde_json::from_slice::<Value>(body).ok();
    let object = json.as_ref().and_then(Value::as_object);
    if let Some(code) = object.and_then(|o| o.get("error")).and_then(Value::as_str) {
        return Err(oauth_error(status, code, object, headers, cx));
    }
    if !status.is_success() {
        return Err(status_error(status, headers, cx));
    }
    let Some(object) = object else {
        return Err(invalid(format!(
            "the token endpoint {} answered {status} with {}, not a JSON token: check the \
             token URL (a proxy or captive portal may be answering instead)",
            cx.host,
            describe_body(headers, body)
        )));
    };
    let token = match object.get("access_token") {
        Some(Value::String(token)) if !token.is_empty() => token.clone(),
        Some(Value::String(_)) => {
            return Err(invalid(format!(
                "the token endpoint {} returned an empty access_token: check that this client \
                 may use the client-credentials grant",
                cx.host
            )))
        }
        Some(_) => {
            return Err(invalid(format!(
                "the token endpoint {} returned an access_token that is not a string: check \
                 the token URL",
                cx.host
            )))
        }
        None => {
            return Err(invalid(format!(
                "the token endpoint {} answered {status} without an access_token: check the \
                 token URL",
                cx.host
            )))
        }
    };
    match object.get("token_type") {
        None | Some(Value::Null) => {} // Docplanner always sends it; tolerate its absence.
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(other) => {
            return Err(invalid(format!(
                "the token endpoint {} returned a token of type {}, not a bearer token: \
                 this client only sends bearer tokens",
                cx.host,
                scrub(&other.to_string(), 40, &[&token])
            )))
        }
    }
    let lifetime = lifetime(object, cx)?;
    Ok((token, lifetime))
}

fn invalid(message: String) -> Error {
    Error::new(Kind::InvalidResponse, message)
}

/// `expires_in`: a positive whole number of seconds (a numeric string is accepted too);
/// absent or null means [`DEFAULT_TOKEN_LIFETIME`]. Values above 24 h are capped later.
fn lifetime(object: &Map<String, Value>, cx: &Context<'_>) -> Result<Duration, Error> {
    let bad = |what: &str| {
        invalid(format!(
            "the token endpoint {} returned expires_in {what}: expected a positive number \
             of seconds",
            cx.host
        ))
    };
    let seconds = match object.get("expires_in") {
        None | Some(Value::Null) => return Ok(DEFAULT_TOKEN_LIFETIME),
        Some(Value::Number(n)) => {
            if let Some(s) = n.as_u64() {
                s
            } else if n.as_i64().is_some() {
                return Err(bad(&format!("= {n} (negative)")));
            } else {
                match n.as_f64() {
                    Some(f) if (1.0..1.0e15).contains(&f) => f as u64,
                    Some(f) if f.is_finite() && f <= 0.0 => return Err(bad(&format!("= {n}"))),
                    _ => return Err(bad(&format!("= {n} (out of range)"))),
                }
            }
        }
        Some(Value::String(s)) => match s.trim().parse::<u64>() {
            Ok(n) => n,
            Err(_) => return Err(bad(&format!("= {:?} (not a number)", scrub(s, 20, &[])))),
        },
        Some(other) => return Err(bad(&format!("of type {}", json_type(other)))),
    };
    if seconds == 0 {
        return Err(bad("= 0 (the token would already be expired)"));
    }
    Ok(Duration::from_secs(seconds))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn oauth_error(
    status: StatusCode,
    code: &str,
    object: Option<&Map<String, Value>>,
    headers: &HeaderMap,
    cx: &Context<'_>,
) -> Error {
    let code = scrub(code, 40, &cx.secrets);
    let description = object
        .and_then(|o| o.get("error_description"))
        .and_then(Value::as_str)
        .map(|d| format!(": {}", scrub(d, 120, &cx.secrets)))
        .unwrap_or_default();
    let host = cx.host;
    let domain = cx.domain();
    let advice = match code.as_str() {
        "invalid_client" => format!("check the client id and secret for {domain}"),
        "unauthorized_client" => format!(
            "this client may not use the client-credentials grant on {domain}: ask {} to \
             enable it",
            cx.who()
        ),
        "invalid_scope" if cx.docplanner && cx.scope == super::DEFAULT_SCOPE => format!(
            "the scope `integration` was refused: ask Docplanner to enable integrations for \
             this client on {domain}"
        ),
        "invalid_scope" if cx.docplanner => format!(
            "the scope `{}` was refused: Docplanner integrations use the scope `integration`",
            cx.scope
        ),
        "invalid_scope" if cx.scope.is_empty() => format!(
            "no scope was sent and {domain} wants one: set it with \
             ClientCredentialsBuilder::scope"
        ),
        "invalid_scope" => format!(
            "the scope `{}` was refused by {domain}: set the scopes this client may ask for \
             with ClientCredentialsBuilder::scope (or none with no_scope)",
            cx.scope
        ),
        "invalid_request" | "unsupported_grant_type" | "invalid_grant" => {
            "the token request itself was refused: a proxy may be altering it; if not, please \
             report it as a docplanner-auth bug"
                .to_owned()
        }
        _ if is_transient_status(status) => "retrying with backoff".to_owned(),
        _ => format!("check the client's configuration for {domain}"),
    };
    // An OAuth error on a 200 is still an error; report it as a 400.
    let status = if status.is_success() {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    Error::new(
        Kind::OAuth {
            status,
            code: code.clone(),
        },
        format!("the token endpoint {host} answered {status} {code}{description}: {advice}"),
    )
    .retrying_after(retry_after(headers))
}

fn status_error(status: StatusCode, headers: &HeaderMap, cx: &Context<'_>) -> Error {
    let host = cx.host;
    let domain = cx.domain();
    let delay = retry_after(headers);
    let advice = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            format!("check the client id and secret for {domain}")
        }
        StatusCode::TOO_MANY_REQUESTS => match delay {
            Some(d) => format!(
                "token requests are rate limited; retrying in {}s",
                d.as_secs()
            ),
            None => "token requests are rate limited; retrying with backoff".to_owned(),
        },
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED if cx.docplanner => {
            "check the token URL (it should end in /oauth/v2/token)".to_owned()
        }
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
            "check the token URL (the provider's token endpoint, as its discovery document \
             names it)"
                .to_owned()
        }
        s if s.is_redirection() && cx.docplanner => {
            "the token URL redirects: use the https://www.<domain>/oauth/v2/token URL".to_owned()
        }
        s if s.is_redirection() => {
            "the token URL redirects: use the URL it redirects to".to_owned()
        }
        s if is_transient_status(s) => {
            let side = if cx.docplanner {
                "Docplanner's side"
            } else {
                "the token endpoint's side"
            };
            match delay {
                Some(d) => format!("a problem on {side}; retrying in {}s", d.as_secs()),
                None => format!("a problem on {side}; retrying with backoff"),
            }
        }
        _ => "the token request was refused".to_owned(),
    };
    Error::new(
        Kind::Status(status),
        format!("the token endpoint {host} answered {status}: {advice}"),
    )
    .retrying_after(delay)
}

/// What a non-token body looks like, in a few words (never its content).
fn describe_body(headers: &HeaderMap, body: &[u8]) -> String {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if body.is_empty() {
        "an empty body".to_owned()
    } else if serde_json::from_slice::<Value>(body).is_ok() {
        "JSON that is not an object".to_owned()
    } else if content_type.contains("html") || body.trim_ascii_start().starts_with(b"<") {
        "an HTML page".to_owned()
    } else {
        format!("{} bytes of something else", body.len())
    }
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn ok(body: &str) -> Result<(String, Duration), Error> {
        parse_token_response(StatusCode::OK, &HeaderMap::new(), body.as_bytes())
    }

    #[test]
    fn docplanner_answer() {
        let (t, l) =
            ok(r#"{"access_token":"abc","expires_in":3600,"token_type":"bearer","scope":null}"#)
                .unwrap();
        assert_eq!((t.as_str(), l), ("abc", Duration::from_secs(3600)));
    }

    #[test]
    fn lenient_where_harmless() {
        assert_eq!(
            ok(r#"{"access_token":"a","token_type":"Bearer","expires_in":"60"}"#)
                .unwrap()
                .1,
            Duration::from_secs(60)
        );
        assert_eq!(
            ok(r#"{"access_token":"a"}"#).unwrap().1,
            DEFAULT_TOKEN_LIFETIME
        );
        assert_eq!(
            ok(r#"{"access_token":"a","expires_in":90.7}"#).unwrap().1,
            Duration::from_secs(90)
        );
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "12".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(12)));
        let later = SystemTime::now() + Duration::from_secs(120);
        h.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120));
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            ".{0,20}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::hash_map(
                    prop_oneof![
                        Just("access_token".to_owned()),
                        Just("expires_in".to_owned()),
                        Just("token_type".to_owned()),
                        Just("error".to_owned()),
                        ".{0,8}"
                    ],
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..256)) {
            let status = StatusCode::from_u16(status).unwrap();
            let _ = parse_token_response(status, &HeaderMap::new(), &body);
        }

        #[test]
        fn arbitrary_json_never_panics(status in prop_oneof![Just(200u16), Just(400), Just(401), Just(503)], value in arb_json()) {
            let status = StatusCode::from_u16(status).unwrap();
            let body = serde_json::to_vec(&value).unwrap();
            match parse_token_response(status, &HeaderMap::new(), &body) {
                Ok((token, lifetime)) => {
                    prop_assert!(status.is_success());
                    prop_assert!(!token.is_empty());
                    prop_assert!(lifetime > Duration::ZERO);
                }
                Err(e) => prop_assert!(e.is_token_endpoint()),
            }
        }
    }
}
