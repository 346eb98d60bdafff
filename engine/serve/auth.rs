//! HTTP Basic authentication of the server's API and of REST triggers.
//!
//! API users come from the environment: `FERRY_OPERATOR_USER` with `FERRY_OPERATOR_PASSWORD`
//! (or `FERRY_OPERATOR_PASSWORD_FILE`) may read and act (run now, resubmit);
//! `FERRY_VIEWER_USER` with `FERRY_VIEWER_PASSWORD` (or `…_FILE`) may only read. A REST
//! trigger takes the credentials its flow names (`trigger.rest.basic_auth`), or the
//! operator's. Passwords are compared in constant time and never logged.

use axum::http::HeaderMap;
use base64::Engine as _;

use crate::connectors::Secret;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read runs, flows and metrics.
    Viewer,
    /// Also run now and resubmit.
    Operator,
}

/// One API user.
#[derive(Debug, Clone)]
pub struct User {
    /// User name.
    pub name: String,
    password: Secret,
    /// Role.
    pub role: Role,
}

impl User {
    /// A user.
    pub fn new(name: impl Into<String>, password: Secret, role: Role) -> User {
        User {
            name: name.into(),
            password,
            role,
        }
    }
}

/// Why the API users could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A user without a password, or the reverse.
    #[error("{0}")]
    Incomplete(String),
    /// A password file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The API users.
#[derive(Debug, Clone, Default)]
pub struct Users {
    users: Vec<User>,
}

impl Users {
    /// These users.
    pub fn new(users: Vec<User>) -> Users {
        Users { users }
    }

    /// Reads the users from the environment (see the module documentation).
    pub fn from_env() -> Result<Users, AuthConfigError> {
        let mut users = Vec::new();
        for (prefix, role) in [
            ("FERRY_OPERATOR", Role::Operator),
            ("FERRY_VIEWER", Role::Viewer),
        ] {
            let name = std::env::var(format!("{prefix}_USER")).ok();
            let password = match std::env::var(format!("{prefix}_PASSWORD")) {
                Ok(p) => Some(p),
                Err(_) => match std::env::var(format!("{prefix}_PASSWORD_FILE")) {
                    Ok(path) => Some(
                        std::fs::read_to_string(&path)
                            .map_err(|source| AuthConfigError::File {
                                path: path.clone(),
                                source,
                            })?
                            .trim_end_matches(['\r', '\n'])
                            .to_string(),
                    ),
                    Err(_) => None,
                },
            };
            match (name, password) {
                (Some(name), Some(password)) if !name.is_empty() && !password.is_empty() => {
                    users.push(User::new(name, Secret::new(password), role));
                }
                (None, None) => {}
                _ => {
                    return Err(AuthConfigError::Incomplete(format!(
                        "{prefix}_USER and {prefix}_PASSWORD (or {prefix}_PASSWORD_FILE) go together, both non-empty"
                    )));
                }
            }
        }
        Ok(Users { users })
    }

    /// Whether no user is configured (the API is open).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The role of the caller whose `Authorization` header is in `headers`: `Ok(None)`
    /// when no user is configured, `Err` when the credentials are missing or wrong.
    pub fn check(&self, headers: &HeaderMap) -> Result<Option<Role>, Denied> {
        if self.users.is_empty() {
            return Ok(None);
        }
        let (name, password) = basic_credentials(headers).ok_or(Denied::Missing)?;
        self.users
            .iter()
            .find(|u| u.name == name && same(u.password.expose(), &password))
            .map(|u| Some(u.role))
            .ok_or(Denied::Wrong)
    }

    /// Who the caller is, for the record (a pause's `paused_by`): the Basic user name,
    /// or `anonymous` when no user is configured (call after [`Users::check`]).
    pub fn caller(&self, headers: &HeaderMap) -> String {
        if self.users.is_empty() {
            return "anonymous".into();
        }
        basic_credentials(headers).map_or_else(|| "anonymous".into(), |(name, _)| name)
    }

    /// The operator, if any (a REST trigger's default credentials).
    pub fn operator(&self) -> Option<&User> {
        self.users.iter().find(|u| u.role == Role::Operator)
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No Basic credentials.
    Missing,
    /// Wrong user name or password.
    Wrong,
    /// Right credentials, role too low.
    Forbidden,
}

/// Checks a request against one user name and password.
pub fn check_one(headers: &HeaderMap, name: &str, password: &str) -> Result<(), Denied> {
    let (n, p) = basic_credentials(headers).ok_or(Denied::Missing)?;
    if n == name && same(password, &p) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The user name and password of an `Authorization: Basic …` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(axum::http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    fn users() -> Users {
        Users::new(vec![
            User::new("op", Secret::new("s3cret".into()), Role::Operator),
            User::new("view", Secret::new("look".into()), Role::Viewer),
        ])
    }

    #[test]
    fn roles_by_credentials() {
        // op:s3cret, view:look, op:wrong
        assert_eq!(
            users().check(&header("Basic b3A6czNjcmV0")),
            Ok(Some(Role::Operator))
        );
        assert_eq!(
            users().check(&header("basic dmlldzpsb29r")),
            Ok(Some(Role::Viewer))
        );
        assert_eq!(
            users().check(&header("Basic b3A6d3Jvbmc=")),
            Err(Denied::Wrong)
        );
        assert_eq!(users().check(&HeaderMap::new()), Err(Denied::Missing));
        assert_eq!(
            users().check(&header("Bearer b3A6czNjcmV0")),
            Err(Denied::Missing)
        );
        assert_eq!(Users::default().check(&HeaderMap::new()), Ok(None));
    }
}
