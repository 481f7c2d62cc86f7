//! The apps' routes, each declared with who may call it, so that every route of the server
//! passes through one edge ([`crate::app_with`]): the same request id, body limit and API-key
//! check as the API. A route needs an API key unless its table says otherwise — a new route
//! cannot skip the check by being forgotten.

use std::collections::BTreeMap;

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;

/// Who may call a route when API keys are configured (with none, everything is open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: public by nature (sign-up, log-in, a health check, a published article).
    Public,
    /// The handler checks a credential of its own (a user's token, a service key); API keys
    /// are not asked for.
    OwnCredential,
    /// An API key: `read` for GET and HEAD, `operate` for anything else, as on `/api/v1`.
    ApiKey,
}

impl Access {
    /// Its name, as the README's table gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Public => "public",
            Access::OwnCredential => "own credential",
            Access::ApiKey => "API key",
        }
    }
}

/// One route of an app's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRule {
    /// The method.
    pub method: Method,
    /// The path, with `{name}` for a segment (axum's syntax).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
}

impl RouteRule {
    /// Whether a request for `method` and `path` is this route.
    pub(crate) fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method != *method && !(self.method == Method::GET && *method == Method::HEAD) {
            return false;
        }
        let mut pattern = self.path.split('/');
        let mut actual = path.split('/');
        loop {
            match (pattern.next(), actual.next()) {
                (None, None) => return true,
                (Some(p), Some(a)) if p.starts_with('{') && p.ends_with('}') => {
                    if a.is_empty() {
                        return false;
                    }
                }
                (Some(p), Some(a)) if p == a => {}
                _ => return false,
            }
        }
    }
}

/// An app's routes while it declares them: each with its method, path and [`Access`].
pub struct Routes<S> {
    paths: BTreeMap<&'static str, MethodRouter<S>>,
    table: Vec<RouteRule>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Routes {
            paths: BTreeMap::new(),
            table: Vec::new(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        route: impl FnOnce(MethodRouter<S>) -> MethodRouter<S>,
    ) -> Self {
        let existing = self.paths.remove(path).unwrap_or_default();
        self.paths.insert(path, route(existing));
        self.table.push(RouteRule {
            method,
            path,
            access,
        });
        self
    }

    /// `GET path`.
    pub fn get<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self {
        self.add(Method::GET, path, access, |r| r.get(handler))
    }

    /// `POST path`.
    pub fn post<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self {
        self.add(Method::POST, path, access, |r| r.post(handler))
    }

    /// `PUT path`.
    pub fn put<H: Handler<T, S>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        handler: H,
    ) -> Self {
        self.add(Method::PUT, path, access, |r| r.put(handler))
    }

    /// Every route, as declared.
    pub fn table(&self) -> &[RouteRule] {
        &self.table
    }

    /// The routes, given their state, ready for [`crate::app_with`].
    pub fn with_state(self, state: S) -> AppRoutes {
        let router = self
            .paths
            .into_iter()
            .fold(Router::new(), |router, (path, route)| {
                router.route(path, route)
            })
            .with_state(state);
        AppRoutes {
            router,
            table: self.table,
        }
    }
}

/// An app's router and its table of who may call what.
pub struct AppRoutes {
    pub(crate) router: Router,
    table: Vec<RouteRule>,
}

impl AppRoutes {
    /// Every route, as declared.
    pub fn table(&self) -> &[RouteRule] {
        &self.table
    }

    /// The routes of both.
    pub fn merge(mut self, other: AppRoutes) -> AppRoutes {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// No routes.
    pub fn none() -> AppRoutes {
        AppRoutes {
            router: Router::new(),
            table: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_matches_its_method_and_its_segments() {
        let rule = RouteRule {
            method: Method::GET,
            path: "/order/{id}",
            access: Access::OwnCredential,
        };
        assert!(rule.matches(&Method::GET, "/order/7"));
        assert!(rule.matches(&Method::HEAD, "/order/7"));
        assert!(!rule.matches(&Method::POST, "/order/7"));
        assert!(!rule.matches(&Method::GET, "/order/"));
        assert!(!rule.matches(&Method::GET, "/order"));
        assert!(!rule.matches(&Method::GET, "/order/7/cancel"));
        assert!(!rule.matches(&Method::GET, "/orders/7"));
    }
}
