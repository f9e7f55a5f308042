//! [`BearerAuthMiddleware`]: the reqwest-middleware adapter (feature `reqwest`).
//!
//! The same behaviour as the tower [`BearerAuthLayer`], for a
//! [`reqwest_middleware::ClientWithMiddleware`], from the same [`TokenCache`]: an
//! application that talks to Docplanner through both stacks uses one token, fetched once.
//!
//! * The token is attached only to `https` requests for the configured API host(s); any
//!   other request is refused before the token endpoint or the network is touched, with
//!   [`reqwest_middleware::Error::Middleware`] holding this crate's [`Error`] (get it back
//!   with `downcast_ref::<docplanner_auth::Error>()`).
//! * A fresh token costs one lock-free load; N concurrent callers that need a token make
//!   one token request.
//! * A `401` makes the token that was used suspect (only if it is still the current one), a
//!   new token is obtained (one refresh for a whole burst of 401s), and the request is sent
//!   once more if it could be cloned before sending ([`reqwest::Request::try_clone`]: any
//!   body but a stream). A streamed body, the same token handed out again, a failing token
//!   endpoint or a second `401` all return that `401` to the caller, with an
//!   [`Unauthorized`] in its extensions (`response.extensions().get::<Unauthorized>()`)
//!   saying why: never a loop. The policy is the tower layer's, in one place (see the
//!   [401 policy](crate::cache#the-401-policy)).
//!
//! # Redirects: build the client with [`client_builder`]
//!
//! reqwest follows redirects inside its client, *after* the middleware, and every hop is
//! rebuilt from the original request's headers, the token included. reqwest drops
//! `Authorization` only when a hop changes scheme, host or port compared with the hop just
//! before it, so with its default policy a chain `API → https://other/a → http://other/b`
//! sends the token again to `other/b`, in clear text. The middleware cannot change the
//! policy of a client it is given; build the client from [`client_builder`] (or give
//! [`redirect_policy`] to your own builder; with several API hosts, use the middleware's
//! [`client_builder`](BearerAuthMiddleware::client_builder)): it follows redirects inside
//! the configured API origins and stops at the first hop that would leave them, handing
//! that `3xx` to the caller, so no redirect chain can carry the token elsewhere (nor the
//! Basic credential of token requests sent through the same client).
//!
//! Defence in depth: when a response comes back from a URL outside the configured origins
//! (a client with another redirect policy followed a redirect away), the middleware logs
//! an `error!` event and counts it (metric `docplanner_auth_redirected_outside_total` with
//! feature `metrics`), so an application running an unsafe client finds out.
//!
//! # What reqwest does before the middleware
//!
//! * **User info.** reqwest's `RequestBuilder` moves `user:password@` out of the URL into
//!   an `Authorization: Basic` header before any middleware runs; the middleware checks
//!   the host the request really goes to and replaces that header with the bearer token.
//!   A [`reqwest::Request`] built by hand that still has user info in its URL is refused.
//! * **A `Host` header** naming another host than the URL's is refused
//!   ([`Error::is_host_not_allowed`]): a front end routing by `Host` would see the token
//!   for that other name.
//!
//! # TLS
//!
//! The middleware builds no client, so it brings no TLS of its own: your reqwest dependency
//! chooses. reqwest 0.13's default `rustls` feature uses the aws-lc-rs crypto provider; to
//! use ring instead (as this crate's built-in client does), enable `rustls-no-provider`
//! and install ring before building the client:
//! `rustls::crypto::ring::default_provider().install_default()`.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), docplanner_auth::BoxError> {
//! use docplanner_auth::docplanner::{Credentials, Domain};
//! use docplanner_auth::reqwest::BearerAuthMiddleware;
//! use docplanner_auth::source::ReqwestClient;
//! use docplanner_auth::TokenCache;
//!
//! let api_base = Domain::Spain.api_base();
//! // Redirects never leave the API: the client stops at the first hop that would. The
//! // tokens are fetched through the same client (its TLS, proxies and pool).
//! let http = docplanner_auth::reqwest::client_builder(&api_base)?.build()?;
//! let credentials = Credentials::new(Domain::Spain, "client-id", "client-secret");
//! let source = credentials.client_credentials(ReqwestClient::new(http.clone()))?;
//! // One cache per credential set; hand clones of it to every stack that should share it.
//! let cache = TokenCache::new(source);
//! let client = reqwest_middleware::ClientBuilder::new(http)
//!     .with(BearerAuthMiddleware::new(cache, &api_base)?)
//!     .build();
//!
//! let response = client
//!     .get(format!("{}/facilities", Domain::Spain.api_base()))
//!     .send()
//!     .await?;
//! println!("{}", response.text().await?);
//! # Ok(()) }
//! ```
//!
//! With a tower stack already built, [`BearerAuthMiddleware::from`] a
//! [`&BearerAuthLayer`](BearerAuthLayer) shares its cache and its allowed hosts.

use std::fmt;

use ::reqwest::header::AUTHORIZATION;
use ::reqwest::redirect::{Attempt, Policy};
use ::reqwest::{Request, Response, StatusCode, Url};
use http::{Extensions, HeaderValue};
use reqwest_middleware::{Middleware, Next};

use crate::auth::BearerAuthLayer;
use crate::cache::{TokenCache, Unauthorized};
use crate::error::Error;
use crate::origin::{check_host_header, Origin, Scope};
use crate::router::{follows_redirect, Router, Set, Target};

/// The most redirects [`redirect_policy`] follows inside the API origins: 10, reqwest's
/// own default.
pub const MAX_REDIRECTS: usize = 10;

/// Adds `Authorization: Bearer <token>` to every request of a
/// [`reqwest_middleware::ClientWithMiddleware`], from a shared [`TokenCache`], and replays
/// a request once after a `401`. See the [module docs](self) for the behaviour and an
/// example.
///
/// The token is only ever attached to `https` requests for the configured API host(s);
/// anything else fails with [`Error::is_insecure_scheme`] or [`Error::is_host_not_allowed`]
/// inside [`reqwest_middleware::Error::Middleware`], before the token endpoint or the
/// network is touched.
#[derive(Clone)]
pub struct BearerAuthMiddleware {
    /// Chooses each request's credential set (the only one, for a middleware made by
    /// `new`).
    router: Router,
}

impl BearerAuthMiddleware {
    /// A middleware that authenticates requests to the *origin* of `api_base` with tokens from
    /// `cache`.
    ///
    /// Only the origin of `api_base` counts: its scheme, host and port
    /// (`https://www.doctoralia.es` of `https://www.doctoralia.es/api/v3/integration`). Every
    /// request to that origin, whatever its path, gets the token; a request to any other
    /// origin is refused. Pass the API base URL you call, or just the origin.
    ///
    /// Fails when `api_base` is not an absolute `https` URL (or `http` to a loopback host,
    /// which additionally needs [`allow_http_loopback`](Self::allow_http_loopback)).
    pub fn new(cache: TokenCache, api_base: &str) -> Result<Self, Error> {
        let origin = Origin::parse_config("API base", api_base)?;
        let set = Set::from_parts(cache, Scope::new(origin));
        Ok(Self {
            router: Router::single(set),
        })
    }

    /// A middleware over several credential sets: each request gets the token of the set
    /// the [`Router`] chooses for it (by host, or by a
    /// [`CredentialSet`](crate::router::CredentialSet) given with
    /// `RequestBuilder::with_extension`), and only a request for one of that set's origins
    /// gets it; see [`router`](crate::router). Build the client from this middleware's
    /// [`client_builder`](Self::client_builder): a redirect is followed only while it
    /// stays inside one set's origins.
    pub fn routed(router: Router) -> Self {
        Self { router }
    }

    /// Also authenticate requests to the origin (scheme, host, port) of `api_base` (with the
    /// default set, for a [`routed`](Self::routed) middleware).
    pub fn allow_api_base(mut self, api_base: &str) -> Result<Self, Error> {
        self.router.allow_api_base(api_base)?;
        Ok(self)
    }

    /// Allow plain `http` requests to a configured loopback host (`127.0.0.0/8`, `::1`,
    /// `localhost`), for tests against a local mock. Off by default; the fake Docplanner of
    /// the `test-util` feature speaks HTTPS and does not need it. For a
    /// [`routed`](Self::routed) middleware, this is the default set's.
    pub fn allow_http_loopback(mut self, allow: bool) -> Self {
        self.router
            .default_set_mut()
            .scope_mut()
            .allow_http_loopback(allow);
        self
    }

    /// The cache the tokens come from (the default set's, for a [`routed`](Self::routed)
    /// middleware).
    pub fn cache(&self) -> &TokenCache {
        self.router.default_set().cache()
    }

    /// [`redirect_policy`] for this middleware's API origins (all of them, with
    /// [`allow_api_base`](Self::allow_api_base) or [`From<&BearerAuthLayer>`]). With
    /// several credential sets, a hop is followed only when it stays inside the origins of
    /// the set of the hop before it: a redirect from one market's host to another's stops
    /// there (the `3xx` goes to the caller), so no set's token reaches another set's host.
    /// Tenant sets (built at run time) are not known to the policy: their redirects stop
    /// at the first hop.
    pub fn redirect_policy(&self) -> Policy {
        policy(self.router.scopes())
    }

    /// [`client_builder`] for this middleware's API origins.
    pub fn client_builder(&self) -> ::reqwest::ClientBuilder {
        ::reqwest::Client::builder().redirect(self.redirect_policy())
    }

    /// Defence in depth: a response from outside the set's origins means the client
    /// followed a redirect away (it was not built with
    /// [`redirect_policy`](Self::redirect_policy)), and the token may have gone with it. Say
    /// so loudly, and return whether the response came from inside the set's origins (one
    /// from outside is handed back as it is: a 401 from there says nothing about the token).
    fn check_final_url(set: &Set, response: &Response) -> bool {
        if check_url(set.scope(), response.url()).is_ok() {
            return true;
        }
        let url = response.url();
        tracing::error!(
            cache = %set.name(),
            scheme = url.scheme(),
            host = url.host_str().unwrap_or_default(),
            port = url.port_or_known_default().unwrap_or_default(),
            "a redirect took an authenticated request outside the API origins, and the token \
             may have gone with it: build the reqwest client with \
             docplanner_auth::reqwest::client_builder() or redirect_policy()"
        );
        #[cfg(feature = "metrics")]
        metrics::counter!(
            "docplanner_auth_redirected_outside_total",
            "cache" => set.name().to_owned()
        )
        .increment(1);
        false
    }
}

/// A token's header and id from `cache`: one lock-free load when a usable token is cached,
/// else the single refresh in flight.
async fn header(cache: &TokenCache) -> Result<(HeaderValue, u64), Error> {
    if let Some(cached) = cache.header() {
        return Ok(cached);
    }
    let token = cache.token().await?;
    Ok((token.header_value().clone(), token.id()))
}

/// A reqwest request as the router sees it.
struct UrlTarget<'a> {
    url: &'a Url,
    headers: &'a ::reqwest::header::HeaderMap,
}

impl Target for UrlTarget<'_> {
    fn admitted_by(&self, scope: &Scope) -> bool {
        admits(scope, self.url)
    }

    fn check(&self, scope: &Scope) -> Result<(), Error> {
        check_url(scope, self.url).and_then(|()| self.check_host_header())
    }

    fn check_host_header(&self) -> Result<(), Error> {
        check_host_header(self.headers, self.is_https(), self.url.authority())
    }

    fn host(&self) -> &str {
        self.url.host_str().unwrap_or_default()
    }

    fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    fn https_authority(&self) -> Option<&str> {
        self.is_https().then(|| self.url.authority())
    }
}

/// Shares the layer's cache and its allowed hosts (API bases and the loopback opt-in), so
/// that a tower stack and a reqwest client use one token.
impl From<&BearerAuthLayer> for BearerAuthMiddleware {
    fn from(layer: &BearerAuthLayer) -> Self {
        Self {
            router: layer.config.router.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Middleware for BearerAuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let target = UrlTarget {
            url: request.url(),
            headers: request.headers(),
        };
        let route = self
            .router
            .choose(&target, extensions)
            .map_err(reqwest_middleware::Error::middleware)?;
        let Some(set) = route.set() else {
            // No credential set covers the request, and pass-through is on: untouched.
            return next.run(request, extensions).await;
        };
        let cache = set.cache();
        let (header, used) = header(cache)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        // Cloned before the token goes in, and before sending: a streamed body cannot be
        // cloned (`None`), and a 401 to such a request is returned as it is.
        let again = request.try_clone();
        request.headers_mut().insert(AUTHORIZATION, header);

        // The 401 policy is the tower layer's, asked the same way (see `cache/reauth.rs`).
        let mut reauth = cache.reauth(used);
        let response = next.clone().run(request, extensions).await?;
        if !Self::check_final_url(set, &response) {
            // The answer came from outside the set's origins (a redirect the client
            // followed): it says nothing about the token, and is handed back untouched.
            return Ok(response);
        }
        if response.status() != StatusCode::UNAUTHORIZED {
            reauth.accepted();
            return Ok(response);
        }
        let token = match reauth.rejected(again.is_some()) {
            Ok(replacement) => replacement.await,
            Err(why) => Err(why),
        };
        let (token, mut again) = match (token, again) {
            (Ok(token), Some(again)) => (token, again),
            (Err(why), _) => return Ok(unauthorized(response, why)),
            (Ok(_), None) => return Ok(unauthorized(response, Unauthorized::NotReplayable)),
        };
        // The 401 is not needed any more: drop it (and its body) before the replay.
        drop(response);
        again
            .headers_mut()
            .insert(AUTHORIZATION, token.header_value().clone());
        reauth.replaying(&token);
        let response = next.run(again, extensions).await?;
        if !Self::check_final_url(set, &response) {
            return Ok(response);
        }
        if response.status() != StatusCode::UNAUTHORIZED {
            reauth.accepted();
            return Ok(response);
        }
        let why = reauth.rejected_again();
        Ok(unauthorized(response, why))
    }
}

/// `response` (a 401) with the reason it is handed back in its extensions.
fn unauthorized(mut response: Response, why: Unauthorized) -> Response {
    response.extensions_mut().insert(why);
    response
}

/// A redirect policy for a reqwest client that sends requests with a token for the host of
/// `api_base`: it follows redirects (at most [`MAX_REDIRECTS`]) only while they stay inside
/// that origin (scheme, host and port), and stops at the first hop that would leave it. The
/// caller gets that `3xx`, and the token never goes with a redirect elsewhere, however many
/// hops the chain has. [`client_builder`] sets it; give it to
/// [`reqwest::ClientBuilder::redirect`] when you build the client yourself.
///
/// ```no_run
/// # fn run() -> Result<(), docplanner_auth::BoxError> {
/// let policy = docplanner_auth::reqwest::redirect_policy(
///     "https://www.doctoralia.es/api/v3/integration",
/// )?;
/// let http = reqwest::Client::builder().redirect(policy).build()?;
/// # let _ = http; Ok(()) }
/// ```
pub fn redirect_policy(api_base: &str) -> Result<Policy, Error> {
    let origin = Origin::parse_config("API base", api_base)?;
    Ok(policy(vec![Scope::new(origin)]))
}

/// A [`reqwest::ClientBuilder`] whose redirects never leave the origin of `api_base` (see
/// [`redirect_policy`]): build the client for [`BearerAuthMiddleware`] from it, and for the
/// token requests if they go through reqwest too. Add your own settings (certificates,
/// timeouts, proxies) before `build()`.
///
/// ```no_run
/// # fn run(cache: docplanner_auth::TokenCache) -> Result<(), docplanner_auth::BoxError> {
/// use docplanner_auth::reqwest::{client_builder, BearerAuthMiddleware};
///
/// let api_base = "https://www.doctoralia.es/api/v3/integration";
/// let http = client_builder(api_base)?
///     .timeout(std::time::Duration::from_secs(30))
///     .build()?;
/// let client = reqwest_middleware::ClientBuilder::new(http)
///     .with(BearerAuthMiddleware::new(cache, api_base)?)
///     .build();
/// # let _ = client; Ok(()) }
/// ```
pub fn client_builder(api_base: &str) -> Result<::reqwest::ClientBuilder, Error> {
    Ok(::reqwest::Client::builder().redirect(redirect_policy(api_base)?))
}

/// The one redirect rule: follow while a hop stays inside the scope of the hop before it
/// (one of `scopes`, one per credential set), stop at the first hop out of it.
fn policy(scopes: Vec<Scope>) -> Policy {
    Policy::custom(move |attempt: Attempt<'_>| {
        let previous = attempt.previous().last();
        let follows = follows_redirect(
            &scopes,
            |scope| previous.is_none_or(|p| admits(scope, p)),
            |scope| admits(scope, attempt.url()),
        );
        if !follows {
            tracing::debug!(
                status = attempt.status().as_u16(),
                "redirect into, out of or between credential sets not followed; the 3xx goes \
                 to the caller"
            );
            attempt.stop()
        } else if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else {
            attempt.follow()
        }
    })
}

/// Whether `url` falls in `scope` (a yes or no, no error built).
fn admits(scope: &Scope, url: &Url) -> bool {
    scope.admits_parts(
        url.scheme(),
        url.authority(),
        url.host_str().unwrap_or_default(),
    )
}

/// May the token go to `url`? `authority()` is the URL's `user:password@host:port` as
/// written (the port only when it is not the scheme's default): user info never matches a
/// configured host.
fn check_url(scope: &Scope, url: &Url) -> Result<(), Error> {
    scope.check(
        url.scheme(),
        url.authority(),
        url.host_str().unwrap_or_default(),
    )
}

impl fmt::Debug for BearerAuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The cache prints its state and counters, never a token.
        f.debug_struct("BearerAuthMiddleware")
            .field("router", &self.router)
            .finish()
    }
}
