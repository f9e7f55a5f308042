//! [`Markets`]: the credentials of several markets, from the environment
//! (`DOCPLANNER_MARKETS=es,pl,it` and a client id and secret per market), turned into a
//! [`Router`] with one credential set per market.

use zeroize::Zeroizing;

use super::{Credentials, Domain};
use crate::error::Error;
#[cfg(feature = "client")]
use crate::router::{Router, Set};

/// The environment variable listing the markets of a multi-market application: country
/// codes or domains, separated by commas (`es,pl,it`).
pub const ENV_MARKETS: &str = "DOCPLANNER_MARKETS";

/// The credentials of several markets, each its own [`Credentials`].
///
/// [`from_env`](Self::from_env) reads [`ENV_MARKETS`] (`es,pl,it`), then for each market
/// `DOCPLANNER_<M>_CLIENT_ID` and `DOCPLANNER_<M>_CLIENT_SECRET`, where `<M>` is the
/// market as listed, in upper case, with every character other than a letter or a digit
/// made `_` (`es` → `DOCPLANNER_ES_CLIENT_ID`; `doctoralia.com.br` →
/// `DOCPLANNER_DOCTORALIA_COM_BR_CLIENT_ID`). Errors name the variable that is missing or
/// wrong; `Debug` never shows a secret.
///
/// ```
/// use docplanner_auth::docplanner::{Domain, Markets};
///
/// let vars = [
///     ("DOCPLANNER_MARKETS", "es, pl"),
///     ("DOCPLANNER_ES_CLIENT_ID", "1_es"), ("DOCPLANNER_ES_CLIENT_SECRET", "es-s3cret"),
///     ("DOCPLANNER_PL_CLIENT_ID", "1_pl"),
/// ];
/// let lookup = |name: &str| vars.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string());
/// let error = Markets::from_lookup(lookup).unwrap_err();
/// assert!(error.to_string().contains("DOCPLANNER_PL_CLIENT_SECRET"));
/// ```
#[derive(Clone)]
pub struct Markets {
    markets: Vec<Credentials>,
}

impl Markets {
    /// Read [`ENV_MARKETS`] and each market's client id and secret from the environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`from_env`](Self::from_env), with the variables looked up by `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str, what: &str| super::required(&lookup, name, what);
        let list = get(
            ENV_MARKETS,
            "the markets to serve, as country codes or domains separated by commas (es,pl,it)",
        )?;
        // The whole list first: a wrong or repeated market is said before any credential.
        let mut listed_domains: Vec<(&str, Domain)> = Vec::new();
        for listed in list.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            let domain = listed.parse::<Domain>().map_err(|_| {
                Error::config(format!(
                    "{ENV_MARKETS} lists `{listed}`, which is not a Docplanner domain: use \
                     country codes (es pl it…) or domain names (doctoralia.es)"
                ))
            })?;
            if listed_domains.iter().any(|(_, d)| *d == domain) {
                return Err(Error::config(format!(
                    "{ENV_MARKETS} lists {} twice: list each market once",
                    domain.name()
                )));
            }
            listed_domains.push((listed, domain));
        }
        let mut markets: Vec<Credentials> = Vec::new();
        for (listed, domain) in listed_domains {
            let prefix = format!("DOCPLANNER_{}", variable_part(listed));
            let id_name = format!("{prefix}_CLIENT_ID");
            let client_id = get(
                &id_name,
                &format!("the client id Docplanner gave you for {}", domain.name()),
            )?;
            if client_id.contains(':') || client_id.chars().any(char::is_control) {
                return Err(Error::config(format!(
                    "{id_name} contains `:` or a control character: check the client id"
                )));
            }
            let client_secret = Zeroizing::new(get(
                &format!("{prefix}_CLIENT_SECRET"),
                &format!(
                    "the client secret Docplanner gave you for {}",
                    domain.name()
                ),
            )?);
            markets.push(Credentials::new(domain, &client_id, &client_secret));
        }
        if markets.is_empty() {
            return Err(Error::config(format!(
                "{ENV_MARKETS} lists no market: set it to country codes or domains separated \
                 by commas (es,pl,it)"
            )));
        }
        Ok(Self { markets })
    }

    /// Each market's credentials, in the order listed.
    pub fn credentials(&self) -> &[Credentials] {
        &self.markets
    }

    /// A router with one credential set per market (in the order listed, the first being
    /// the default): tokens from each market's token endpoint over the built-in HTTPS
    /// client, attached only to requests for that market's host, each cache named after
    /// its domain (the `cache` label of metrics and spans). Give it to
    /// [`BearerAuthLayer::routed`](crate::BearerAuthLayer::routed).
    #[cfg(feature = "client")]
    #[cfg_attr(docsrs, doc(cfg(feature = "client")))]
    pub fn router(&self) -> Result<Router, Error> {
        let set = |c: &Credentials| Set::new(c.cache()?, &c.domain.api_base());
        let mut markets = self.markets.iter();
        // `from_lookup` refuses an empty list.
        let first = markets
            .next()
            .ok_or_else(|| Error::config(format!("{ENV_MARKETS} lists no market")))?;
        let mut builder = Router::builder(set(first)?);
        for market in markets {
            builder = builder.set(set(market)?);
        }
        builder.build()
    }
}

/// `<M>` of a market's variables: upper case, anything but a letter or digit made `_`.
fn variable_part(listed: &str) -> String {
    listed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl std::fmt::Debug for Markets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Each `Credentials` prints its domain and client id, never the secret.
        f.debug_list().entries(&self.markets).finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn several_markets_from_the_environment() {
        let markets = Markets::from_lookup(lookup(&[
            ("DOCPLANNER_MARKETS", " es, pl ,doctoralia.com.br"),
            ("DOCPLANNER_ES_CLIENT_ID", "1_es"),
            ("DOCPLANNER_ES_CLIENT_SECRET", "es-s3cret"),
            ("DOCPLANNER_PL_CLIENT_ID", "1_pl"),
            ("DOCPLANNER_PL_CLIENT_SECRET", "pl-s3cret"),
            ("DOCPLANNER_DOCTORALIA_COM_BR_CLIENT_ID", "1_br"),
            ("DOCPLANNER_DOCTORALIA_COM_BR_CLIENT_SECRET", "br-s3cret"),
        ]))
        .unwrap();
        let domains: Vec<_> = markets
            .credentials()
            .iter()
            .map(|c| c.domain().clone())
            .collect();
        assert_eq!(domains, [Domain::Spain, Domain::Poland, Domain::Brazil]);
        assert_eq!(markets.credentials()[1].client_id(), "1_pl");
        let debug = format!("{markets:?}");
        assert!(
            debug.contains("1_es") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[test]
    fn errors_name_the_variable() {
        let cases: [(&'static [(&str, &str)], &str); 6] = [
            (&[], "DOCPLANNER_MARKETS is not set"),
            (&[("DOCPLANNER_MARKETS", " , ")], "lists no market"),
            (&[("DOCPLANNER_MARKETS", "es,nowhere")], "lists `nowhere`"),
            (
                &[("DOCPLANNER_MARKETS", "es")],
                "DOCPLANNER_ES_CLIENT_ID is not set",
            ),
            (
                &[
                    ("DOCPLANNER_MARKETS", "es,pl"),
                    ("DOCPLANNER_ES_CLIENT_ID", "1"),
                    ("DOCPLANNER_ES_CLIENT_SECRET", "s"),
                    ("DOCPLANNER_PL_CLIENT_ID", "1"),
                ],
                "DOCPLANNER_PL_CLIENT_SECRET is not set",
            ),
            (&[("DOCPLANNER_MARKETS", "es,doctoralia.es")], "twice"),
        ];
        for (vars, expected) in cases {
            let error = Markets::from_lookup(lookup(vars)).unwrap_err();
            assert!(error.is_config(), "{error}");
            assert!(error.to_string().contains(expected), "{error} / {expected}");
        }
        let error = Markets::from_lookup(lookup(&[
            ("DOCPLANNER_MARKETS", "es"),
            ("DOCPLANNER_ES_CLIENT_ID", "a:b"),
        ]))
        .unwrap_err();
        assert!(
            error.to_string().contains("DOCPLANNER_ES_CLIENT_ID"),
            "{error}"
        );
    }
}
