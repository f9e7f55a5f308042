//! [`RedirectPolicy`]: tower-http's `FollowRedirect` policy for a client that sends tokens
//! (feature `tower-http`), the tower twin of the reqwest adapter's redirect policy, with the
//! same rule ([`follows_redirect`]).

use tower_http::follow_redirect::policy::{Action, Attempt, Policy};

use crate::origin::Scope;
use crate::router::follows_redirect;

/// The most redirects a [`RedirectPolicy`] follows for one request: 10, reqwest's default.
pub const MAX_REDIRECTS: usize = 10;

/// A redirect policy for tower-http's `FollowRedirectLayer`, put outside a
/// [`BearerAuthLayer`](crate::BearerAuthLayer) (from
/// [`BearerAuthLayer::redirect_policy`](crate::BearerAuthLayer::redirect_policy)). It
/// follows a redirect only while the hop stays inside the origins of the credential set
/// of the hop before it, or when neither hop is in any set; it stops (the caller gets the
/// `3xx`) at a hop from one set to another, out of a set, or from a host outside every
/// set into one. So a market's host cannot send the next hop to another market's API
/// (which would carry that market's token, and a tenant's request would change account),
/// and, with [`pass_through`](crate::router::RouterBuilder::pass_through), a foreign host
/// cannot choose an authenticated API call (method, path, body) by redirecting to it.
/// At most [`MAX_REDIRECTS`] hops are followed.
///
/// Tower-http's `Standard` policy follows any redirect (it only drops credential headers
/// and extensions across origins); the layer under it then attaches the token of the
/// hop's own set. Use this policy instead whenever the layer is
/// [routed](crate::BearerAuthLayer::routed).
///
/// ```
/// use docplanner_auth::router::{Router, Set};
/// use docplanner_auth::{AccessToken, BearerAuthLayer, BoxError, TokenCache};
/// use std::time::Duration;
/// use tower::ServiceBuilder;
/// use tower_http::follow_redirect::FollowRedirectLayer;
///
/// # fn main() -> Result<(), docplanner_auth::Error> {
/// let cache = |name: &str| {
///     TokenCache::builder(|| async {
///         Ok::<_, BoxError>(AccessToken::new("t0k3n", Duration::from_secs(3600))?)
///     })
///     .name(name)
///     .build()
/// };
/// let router = Router::builder(Set::new(cache("es"), "https://www.doctoralia.es")?)
///     .set(Set::new(cache("pl"), "https://www.znanylekarz.pl")?)
///     .pass_through(true)
///     .build()?;
/// let auth = BearerAuthLayer::routed(router);
/// let stack = ServiceBuilder::new()
///     .layer(FollowRedirectLayer::with_policy(auth.redirect_policy()))
///     .layer(auth);
/// # let _ = stack;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RedirectPolicy {
    scopes: Vec<Scope>,
    followed: usize,
}

impl RedirectPolicy {
    pub(crate) fn new(scopes: Vec<Scope>) -> Self {
        Self {
            scopes,
            followed: 0,
        }
    }
}

impl<B, E> Policy<B, E> for RedirectPolicy {
    fn redirect(&mut self, attempt: &Attempt<'_>) -> Result<Action, E> {
        let (previous, location) = (attempt.previous(), attempt.location());
        let follows = self.followed < MAX_REDIRECTS
            && follows_redirect(
                &self.scopes,
                |scope| scope.admits(previous),
                |scope| scope.admits(location),
            );
        if !follows {
            tracing::debug!(
                status = attempt.status().as_u16(),
                "redirect into, out of or between credential sets (or past the limit) not \
                 followed; the 3xx goes to the caller"
            );
            return Ok(Action::Stop);
        }
        self.followed += 1;
        Ok(Action::Follow)
    }
}
