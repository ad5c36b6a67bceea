//! HTTP basic authentication with a constant-time comparison.

use base64::Engine;
use http::HeaderMap;
use subtle::ConstantTimeEq;

/// The one user name and password the server accepts.
#[derive(Clone)]
pub struct BasicAuth {
    user: Vec<u8>,
    password: Vec<u8>,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &String::from_utf8_lossy(&self.user))
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    pub fn new(user: &str, password: &str) -> BasicAuth {
        BasicAuth {
            user: user.as_bytes().to_vec(),
            password: password.as_bytes().to_vec(),
        }
    }

    /// True when the request carries these credentials. Both halves are always compared (no
    /// early exit that would tell which one was wrong); only lengths can leak through timing.
    pub fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return false;
        };
        let v = value.as_bytes();
        let Some(b64) = v
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case(b"basic "))
            .and_then(|_| v.get(6..))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let ok = user.ct_eq(&self.user) & password.ct_eq(&self.password);
        ok.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn accepts_only_the_exact_pair() {
        let a = BasicAuth::new("ann", "pa:ss");
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(a.accepts(&header(&format!("Basic {}", enc("ann:pa:ss")))));
        assert!(a.accepts(&header(&format!("basic {}", enc("ann:pa:ss")))));
        assert!(!a.accepts(&header(&format!("Basic {}", enc("ann:pa:s")))));
        assert!(!a.accepts(&header(&format!("Basic {}", enc("bob:pa:ss")))));
        assert!(!a.accepts(&header(&format!("Basic {}", enc("annpa:ss")))));
        assert!(!a.accepts(&header("Bearer x")));
        assert!(!a.accepts(&header("Basic !!!")));
        assert!(!a.accepts(&HeaderMap::new()));
    }
}
