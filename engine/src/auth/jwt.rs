//! JWTs from a site's identity provider, beside the tokens file: a bearer (or Postgres
//! password) that is a JWT signed by a key of the JWKS file `--jwks` names is accepted while it
//! is valid, with its `sub` as the actor and its `vibelux_role` claim as the role.
//!
//! The JWKS is a file, not a URL the engine fetches: an engine that writes to PLCs should not
//! depend on reaching an identity provider to start or to keep serving, and a site's tooling
//! can refresh the file (the engine reads it again when it changes, like the tokens file).
//! Only asymmetric keys are accepted (RSA, EC, Ed25519): a shared HMAC secret in a key file
//! would let anyone who can read it mint tokens for any role.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

use super::{Identity, Role};

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the JWKS file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the JWKS file {path} is not a JSON Web Key Set: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// What a JWT must say, besides a valid signature and an `exp` in the future.
#[derive(Debug, Clone, Default)]
pub struct JwtRules {
    /// `iss` must be this.
    pub issuer: Option<String>,
    /// `aud` must include this.
    pub audience: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    vibelux_role: Option<String>,
}

/// The keys of a JWKS file, read again when it changes.
pub struct JwtVerifier {
    path: PathBuf,
    rules: JwtRules,
    keys: Mutex<(Option<(SystemTime, u64)>, JwkSet)>,
}

fn stamp_of(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn read_set(path: &Path) -> Result<JwkSet, JwksError> {
    let text = std::fs::read_to_string(path).map_err(|source| JwksError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|error| JwksError::Invalid {
        path: path.to_path_buf(),
        message: error.to_string(),
    })
}

/// Whether `secret` has the shape of a JWT (three base64url parts), not of a `vlx_` token.
pub fn looks_like_jwt(secret: &str) -> bool {
    secret.starts_with("eyJ") && secret.matches('.').count() == 2
}

impl JwtVerifier {
    /// Reads the JWKS file; a missing or invalid one is an error at start.
    pub fn open(path: &Path, rules: JwtRules) -> Result<JwtVerifier, JwksError> {
        let set = read_set(path)?;
        Ok(JwtVerifier {
            path: path.to_path_buf(),
            rules,
            keys: Mutex::new((stamp_of(path), set)),
        })
    }

    /// The identity a valid JWT names, or why it is not accepted.
    pub fn identify(&self, jwt: &str) -> Result<Identity, String> {
        let header = decode_header(jwt).map_err(|error| format!("not a JWT: {error}"))?;
        let kid = header.kid.ok_or("the JWT names no key (`kid`)")?;
        let (key, algorithm) = {
            let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
            let stamp = stamp_of(&self.path);
            if stamp != keys.0 {
                match read_set(&self.path) {
                    Ok(set) => *keys = (stamp, set),
                    Err(error) => {
                        keys.0 = stamp;
                        tracing::warn!("{error}; keeping the keys read before");
                    }
                }
            }
            let jwk = keys
                .1
                .find(&kid)
                .ok_or_else(|| format!("key `{kid}` is not in the JWKS file"))?;
            if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                return Err(format!(
                    "key `{kid}` is a shared secret; only public keys are accepted"
                ));
            }
            let key =
                DecodingKey::from_jwk(jwk).map_err(|error| format!("key `{kid}`: {error}"))?;
            (key, header.alg)
        };
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 30;
        if let Some(issuer) = &self.rules.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &self.rules.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let claims = decode::<Claims>(jwt, &key, &validation)
            .map_err(|error| format!("the JWT is not accepted: {error}"))?
            .claims;
        let role = claims
            .vibelux_role
            .ok_or("the JWT has no `vibelux_role` claim")?;
        let role: Role =
            serde_json::from_value(serde_json::Value::String(role.clone())).map_err(|_| {
                format!("`vibelux_role` is `{role}`: expected viewer, operator, engineer or admin")
            })?;
        Ok(Identity {
            name: claims.sub,
            role,
        })
    }
}
