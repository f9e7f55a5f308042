//! Docplanner's markets: the 13 local domains (plus custom ones), their token URL and API
//! base, and [`Credentials`]: the one way to a token cache, a layer or an authenticated
//! client for a market (`Credentials::new(domain, id, secret).client()`).
//!
//! ```
//! use docplanner_auth::docplanner::Domain;
//!
//! let spain: Domain = "es".parse()?; // a country code, or a domain name
//! assert_eq!(spain, Domain::Spain);
//! assert_eq!(spain.token_url(), "https://www.doctoralia.es/oauth/v2/token");
//! assert_eq!(spain.api_base(), "https://www.doctoralia.es/api/v3/integration");
//! assert_eq!("jameda.de".parse::<Domain>()?, Domain::Germany);
//! let new_market = Domain::custom("doctoralia.xx")?;
//! assert_eq!(new_market.host(), "www.doctoralia.xx");
//! # Ok::<(), docplanner_auth::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::error::Error;

mod markets;
pub use self::markets::{Markets, ENV_MARKETS};

/// A Docplanner market: its local domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Domain {
    /// Argentina, doctoraliar.com
    Argentina,
    /// Brazil, doctoralia.com.br
    Brazil,
    /// Chile, doctoralia.cl
    Chile,
    /// Colombia, doctoralia.co
    Colombia,
    /// Czechia, znamylekar.cz
    Czechia,
    /// Spain, doctoralia.es
    Spain,
    /// Italy, miodottore.it
    Italy,
    /// Mexico, doctoralia.mx
    Mexico,
    /// Peru, doctoralia.pe
    Peru,
    /// Portugal, doctoralia.com.pt
    Portugal,
    /// Turkey, doktortakvimi.com
    Turkey,
    /// Poland, znanylekarz.pl
    Poland,
    /// Germany, jameda.de
    Germany,
    /// Another domain (new markets appear): the bare domain name, without `www.`.
    /// Build it with [`Domain::custom`] to have it checked.
    Custom(String),
}

/// The 13 markets known to this version, with country code and name.
const MARKETS: [(Domain, &str, &str, &str); 13] = [
    (Domain::Argentina, "doctoraliar.com", "ar", "Argentina"),
    (Domain::Brazil, "doctoralia.com.br", "br", "Brazil"),
    (Domain::Chile, "doctoralia.cl", "cl", "Chile"),
    (Domain::Colombia, "doctoralia.co", "co", "Colombia"),
    (Domain::Czechia, "znamylekar.cz", "cz", "Czechia"),
    (Domain::Spain, "doctoralia.es", "es", "Spain"),
    (Domain::Italy, "miodottore.it", "it", "Italy"),
    (Domain::Mexico, "doctoralia.mx", "mx", "Mexico"),
    (Domain::Peru, "doctoralia.pe", "pe", "Peru"),
    (Domain::Portugal, "doctoralia.com.pt", "pt", "Portugal"),
    (Domain::Turkey, "doktortakvimi.com", "tr", "Turkey"),
    (Domain::Poland, "znanylekarz.pl", "pl", "Poland"),
    (Domain::Germany, "jameda.de", "de", "Germany"),
];

impl Domain {
    /// The 13 local domains known to this version.
    pub fn all() -> impl Iterator<Item = Domain> {
        MARKETS.into_iter().map(|(domain, ..)| domain)
    }

    /// A custom domain, checked: a DNS name such as `doctoralia.xx` (no scheme, no `www.`,
    /// no port, no path).
    pub fn custom(name: &str) -> Result<Self, Error> {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        let name = name.strip_prefix("www.").unwrap_or(&name).to_owned();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.len() > 253 || !name.contains('.') || !name.split('.').all(label_ok) {
            return Err(Error::config(format!(
                "`{name}` is not a Docplanner domain: give a domain name such as doctoralia.es, \
                 or a country code (ar br cl co cz es it mx pe pt tr pl de)"
            )));
        }
        Ok(match MARKETS.iter().find(|(_, known, ..)| *known == name) {
            Some((known, ..)) => known.clone(),
            None => Domain::Custom(name),
        })
    }

    fn market(&self) -> Option<&'static (Domain, &'static str, &'static str, &'static str)> {
        MARKETS.iter().find(|(d, ..)| d == self)
    }

    /// The domain name, e.g. `doctoralia.es`.
    pub fn name(&self) -> &str {
        match self {
            Domain::Custom(name) => name,
            known => known.market().map_or("", |m| m.1),
        }
    }

    /// The ISO 3166 country code (`es`), for the 13 known markets.
    pub fn country_code(&self) -> Option<&'static str> {
        self.market().map(|m| m.2)
    }

    /// The country's English name, for the 13 known markets.
    pub fn country(&self) -> Option<&'static str> {
        self.market().map(|m| m.3)
    }

    /// The host of both the token endpoint and the API: `www.{domain}`.
    pub fn host(&self) -> String {
        format!("www.{}", self.name())
    }

    /// `https://www.{domain}/oauth/v2/token`
    pub fn token_url(&self) -> String {
        format!("https://www.{}/oauth/v2/token", self.name())
    }

    /// `https://www.{domain}/api/v3/integration`
    pub fn api_base(&self) -> String {
        format!("https://www.{}/api/v3/integration", self.name())
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Domain {
    type Err = Error;

    /// A country code (`es`, case-insensitive) or a domain name (`doctoralia.es`,
    /// `www.doctoralia.es`, or a new one).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        if let Some((domain, ..)) = MARKETS
            .iter()
            .find(|(_, _, code, _)| code.eq_ignore_ascii_case(trimmed))
        {
            return Ok(domain.clone());
        }
        Domain::custom(trimmed)
    }
}

/// The environment variable holding the client id.
pub const ENV_CLIENT_ID: &str = "DOCPLANNER_CLIENT_ID";
/// The environment variable holding the client secret.
pub const ENV_CLIENT_SECRET: &str = "DOCPLANNER_CLIENT_SECRET";
/// The environment variable holding the market: a domain (`doctoralia.es`) or a country
/// code (`es`).
pub const ENV_DOMAIN: &str = "DOCPLANNER_DOMAIN";

/// Everything needed to authenticate to one market: domain, client id and secret.
///
/// `Debug` never shows the secret, and it is zeroized on drop.
///
/// ```
/// use docplanner_auth::docplanner::{Credentials, Domain};
///
/// // In production: `Credentials::from_env()?`, reading DOCPLANNER_DOMAIN,
/// // DOCPLANNER_CLIENT_ID and DOCPLANNER_CLIENT_SECRET.
/// let vars = [("DOCPLANNER_DOMAIN", "pl"), ("DOCPLANNER_CLIENT_ID", "42_abc"), ("DOCPLANNER_CLIENT_SECRET", "s3cret")];
/// let credentials = Credentials::from_lookup(|name| {
///     vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
/// })?;
/// assert_eq!(credentials.domain(), &Domain::Poland);
/// assert!(!format!("{credentials:?}").contains("s3cret"));
///
/// let missing = Credentials::from_lookup(|_| None).unwrap_err();
/// assert!(missing.to_string().contains("DOCPLANNER_DOMAIN"));
/// # Ok::<(), docplanner_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct Credentials {
    domain: Domain,
    client_id: String,
    client_secret: Zeroizing<String>,
    /// `https://www.{domain}` unless overridden (a staging host, the embedded fake).
    origin: Option<String>,
    /// The roots the built-in client trusts, if not the webpki roots.
    #[cfg(feature = "client")]
    roots: Option<rustls::RootCertStore>,
}

impl Credentials {
    /// Credentials for `domain`.
    pub fn new(domain: Domain, client_id: &str, client_secret: &str) -> Self {
        Self {
            domain,
            client_id: client_id.to_owned(),
            client_secret: Zeroizing::new(client_secret.to_owned()),
            origin: None,
            #[cfg(feature = "client")]
            roots: None,
        }
    }

    /// Read [`ENV_DOMAIN`], [`ENV_CLIENT_ID`] and [`ENV_CLIENT_SECRET`]; the error names
    /// the variable that is missing or invalid.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), with the variables looked up by `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str, what: &str| required(&lookup, name, what);
        let domain_name = get(
            ENV_DOMAIN,
            "a Docplanner domain (doctoralia.es) or a country code (es)",
        )?;
        let domain = domain_name.parse::<Domain>().map_err(|_| {
            Error::config(format!(
                "{ENV_DOMAIN}=`{domain_name}` is not a Docplanner domain: use a domain name such \
                 as doctoralia.es, or a country code (ar br cl co cz es it mx pe pt tr pl de)"
            ))
        })?;
        let client_id = get(ENV_CLIENT_ID, "the client id Docplanner gave you")?;
        if client_id.contains(':') || client_id.chars().any(char::is_control) {
            return Err(Error::config(format!(
                "{ENV_CLIENT_ID} contains `:` or a control character: check the client id"
            )));
        }
        let client_secret = get(ENV_CLIENT_SECRET, "the client secret Docplanner gave you")?;
        Ok(Self::new(domain, &client_id, &client_secret))
    }

    /// Send the token requests and the API requests to `origin` (`https://host[:port]`)
    /// instead of `https://www.{domain}`: a staging host, or the embedded fake
    /// (`FakeDocplanner`, feature `test-util`) so that tests run the production
    /// construction path. The paths stay Docplanner's (`/oauth/v2/token`,
    /// `/api/v3/integration`).
    ///
    /// ```
    /// use docplanner_auth::docplanner::{Credentials, Domain};
    ///
    /// let staging = Credentials::new(Domain::Spain, "id", "secret")
    ///     .with_origin("https://staging.example.test:8443")?;
    /// assert_eq!(staging.api_base(), "https://staging.example.test:8443/api/v3/integration");
    /// assert!(Credentials::new(Domain::Spain, "id", "secret").with_origin("http://x.test").is_err());
    /// # Ok::<(), docplanner_auth::Error>(())
    /// ```
    pub fn with_origin(mut self, origin: &str) -> Result<Self, Error> {
        let invalid = || {
            Error::config(
                "the origin override is not an HTTPS origin: give https://host[:port], with no \
                 path, query or credentials",
            )
        };
        let origin = origin.trim().trim_end_matches('/');
        let uri: http::Uri = origin.parse().map_err(|_| invalid())?;
        let authority = uri.authority().ok_or_else(invalid)?;
        if uri.scheme_str() != Some("https")
            || authority.as_str().contains('@')
            || !matches!(uri.path(), "" | "/")
            || uri.query().is_some()
        {
            return Err(invalid());
        }
        self.origin = Some(format!("https://{authority}"));
        Ok(self)
    }

    /// Trust `roots` instead of the webpki roots in the built-in client (the embedded
    /// fake's certificate, a corporate CA).
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub fn with_roots(mut self, roots: rustls::RootCertStore) -> Self {
        self.roots = Some(roots);
        self
    }

    /// The market.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// The client id (not a secret).
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The token URL: the domain's ([`Domain::token_url`]), or under the
    /// [origin override](Self::with_origin).
    pub fn token_url(&self) -> String {
        match &self.origin {
            Some(origin) => format!("{origin}/oauth/v2/token"),
            None => self.domain.token_url(),
        }
    }

    /// The API base: the domain's ([`Domain::api_base`]), or under the
    /// [origin override](Self::with_origin).
    pub fn api_base(&self) -> String {
        match &self.origin {
            Some(origin) => format!("{origin}/api/v3/integration"),
            None => self.domain.api_base(),
        }
    }

    /// The OAuth2 client-credentials source for these credentials over your own HTTP
    /// service (any tower service; see [`ClientCredentials`](crate::ClientCredentials)).
    pub fn client_credentials<C>(&self, client: C) -> Result<crate::ClientCredentials<C>, Error> {
        crate::ClientCredentials::builder(&self.token_url(), &self.client_id, &self.client_secret)
            .docplanner()
            .build(client)
    }
}

/// The variable `name`, trimmed, from `lookup`; missing or empty is a config error that
/// names it and says what to set it to (`what`).
fn required(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    what: &str,
) -> Result<String, Error> {
    lookup(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Error::config(format!("{name} is not set: set it to {what}")))
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("domain", &self.domain)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// The built-in client's ways in: every one of them goes through [`Credentials`], so
/// there is one way to build each thing, with one signature.
#[cfg(feature = "client")]
mod one_line {
    use http_body::Body;

    use super::Credentials;
    use crate::client::{https_client, https_client_with_roots, HttpsClient};
    use crate::error::{BoxError, Error};
    use crate::{BearerAuth, BearerAuthLayer, ReplayBody, TokenCache};

    impl Credentials {
        /// The built-in HTTPS client, trusting the [roots](Self::with_roots) given.
        fn https<B>(&self) -> Result<HttpsClient<B>, Error>
        where
            B: Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<BoxError>,
        {
            match &self.roots {
                Some(roots) => https_client_with_roots(roots.clone()),
                None => https_client(),
            }
        }

        /// A token cache for these credentials, fetching over the built-in HTTPS client.
        /// Share it between stacks (a tower layer, the reqwest middleware) so they use one
        /// token.
        #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
        pub fn cache(&self) -> Result<TokenCache, Error> {
            let source = self.client_credentials(self.https()?)?;
            Ok(TokenCache::builder(source).name(self.domain.name()).build())
        }

        /// A token cache for these credentials that shares its token through `store`
        /// with every other cache (or replica) using the same store and credentials.
        #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
        pub fn shared_cache(
            &self,
            store: impl crate::store::TokenStore,
        ) -> Result<TokenCache, Error> {
            let source = self.client_credentials(self.https()?)?;
            let key = source.store_key();
            Ok(TokenCache::builder(source)
                .name(self.domain.name())
                .store(store, key)
                .build())
        }

        /// A ready layer: tokens from a new [`cache`](Self::cache), attached to requests
        /// for the [API base](Self::api_base)'s origin only.
        #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
        pub fn layer(&self) -> Result<BearerAuthLayer, Error> {
            BearerAuthLayer::new(self.cache()?, &self.api_base())
        }

        /// A ready HTTPS client whose every request is authenticated: the one-liner. `B` is
        /// your request body type (`Full<Bytes>` is the usual one).
        #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
        pub fn client<B>(&self) -> Result<BearerAuth<HttpsClient<ReplayBody<B>>>, Error>
        where
            B: Body + Send + 'static,
            B::Error: Into<BoxError>,
        {
            Ok(BearerAuth::new(self.https()?, &self.layer()?))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn thirteen_markets_round_trip() {
        assert_eq!(Domain::all().count(), 13);
        for d in Domain::all() {
            assert_eq!(d.name().parse::<Domain>().unwrap(), d);
            assert_eq!(d.country_code().unwrap().parse::<Domain>().unwrap(), d);
            assert_eq!(d.host().parse::<Domain>().unwrap(), d);
            assert!(d.token_url().starts_with("https://www."));
        }
    }

    #[test]
    fn credentials_from_the_environment_name_the_bad_variable() {
        let vars = |domain: &'static str, id: &'static str, secret: &'static str| {
            move |name: &str| {
                let value = match name {
                    ENV_DOMAIN => domain,
                    ENV_CLIENT_ID => id,
                    ENV_CLIENT_SECRET => secret,
                    _ => "",
                };
                Some(value.to_owned())
            }
        };
        let ok = Credentials::from_lookup(vars("doctoralia.com.br", "1_x", "sec")).unwrap();
        assert_eq!(ok.domain(), &Domain::Brazil);
        assert_eq!(ok.client_id(), "1_x");
        for (lookup, named) in [
            (Credentials::from_lookup(vars("", "1_x", "sec")), ENV_DOMAIN),
            (
                Credentials::from_lookup(vars("nowhere", "1_x", "sec")),
                ENV_DOMAIN,
            ),
            (
                Credentials::from_lookup(vars("es", "", "sec")),
                ENV_CLIENT_ID,
            ),
            (
                Credentials::from_lookup(vars("es", "a:b", "sec")),
                ENV_CLIENT_ID,
            ),
            (
                Credentials::from_lookup(vars("es", "1_x", " ")),
                ENV_CLIENT_SECRET,
            ),
        ] {
            let error = lookup.unwrap_err();
            assert!(
                error.is_config() && error.to_string().contains(named),
                "{error}"
            );
        }
    }

    #[test]
    fn custom_domains_are_checked() {
        assert_eq!(
            Domain::custom("Doctoralia.XX").unwrap(),
            Domain::Custom("doctoralia.xx".into())
        );
        for bad in [
            "",
            "nodot",
            "https://x.com",
            "x.com/path",
            "x.com:443",
            "-a.com",
            "a..com",
            "a b.com",
        ] {
            assert!(Domain::custom(bad).unwrap_err().is_config(), "{bad}");
        }
    }
}
