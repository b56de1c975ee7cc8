//! Hand-made NATS decentralized auth ("operator mode") for the test
//! harness: an operator, a system account and the [`ACCOUNT`] account with
//! JetStream, as nkeys and signed JWTs, and `.creds` files for users whose
//! permissions are exactly those of the password mode (the same
//! [`host_publish_allow`], [`host_publish_deny`] and [`host_subscribe_allow`]
//! lists).
//!
//! The JWTs follow nats-io/jwt v2 (header `{"typ":"JWT","alg":"ed25519-nkey"}`,
//! base64url without padding, ed25519 signature over `header.claims`). Only
//! text is produced here: this module must not start servers, write files or
//! use `nsc`; [`super::nats::NatsServer`] writes what it returns.

use std::time::{SystemTime, UNIX_EPOCH};

use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD};
use nkeys::KeyPair;
use serde_json::{Value, json};
use sha2::{Digest, Sha512_256};

use super::nats::{ACCOUNT, host_publish_allow, host_publish_deny, host_subscribe_allow};

/// The JOSE header of every NATS JWT.
const JWT_HEADER: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;
/// "No limit" in NATS JWT limits.
const UNLIMITED: i64 = -1;
/// Name of the system account in its JWT.
const SYSTEM_ACCOUNT: &str = "SYS";

/// The keys a server in operator mode trusts: the operator, which signs
/// the system account and [`ACCOUNT`], whose key signs the users.
pub struct OperatorTrust {
    operator: KeyPair,
    system_account: KeyPair,
    orch_account: KeyPair,
}

impl OperatorTrust {
    /// Fresh random keys.
    pub fn new() -> OperatorTrust {
        OperatorTrust {
            operator: KeyPair::new_operator(),
            system_account: KeyPair::new_account(),
            orch_account: KeyPair::new_account(),
        }
    }

    /// The operator JWT (self-signed, naming the system account), the file
    /// the server config's `operator:` points at.
    pub fn operator_jwt(&self) -> String {
        let operator = self.operator.public_key();
        signed_jwt(
            &self.operator,
            &operator,
            "orch-test-operator",
            json!({
                "type": "operator",
                "version": 2,
                "system_account": self.system_account.public_key(),
            }),
        )
    }

    /// Server config lines for operator mode: the operator JWT at
    /// `operator_jwt_path`, the system account, and both account JWTs
    /// preloaded into the memory resolver.
    pub fn server_config(&self, operator_jwt_path: &std::path::Path) -> String {
        let system_account = self.system_account.public_key();
        let orch_account = self.orch_account.public_key();
        let system_jwt = self.account_jwt(&self.system_account, SYSTEM_ACCOUNT, false);
        let orch_jwt = self.account_jwt(&self.orch_account, ACCOUNT, true);
        format!(
            "operator: \"{}\"\nsystem_account: \"{system_account}\"\nresolver: MEMORY\n\
             resolver_preload: {{\n  {system_account}: \"{system_jwt}\"\n  {orch_account}: \"{orch_jwt}\"\n}}\n",
            operator_jwt_path.display()
        )
    }

    /// `.creds` text for host user `host` of [`ACCOUNT`].
    pub fn host_creds(&self, bucket: &str, host: &str) -> String {
        host_creds(&self.orch_account, bucket, host)
    }

    /// `.creds` text for a user of [`ACCOUNT`] allowed everything in it
    /// (like the password mode's admin, which has no permissions block).
    pub fn unrestricted_creds(&self, user: &str) -> String {
        user_creds(&self.orch_account, user, json!({}))
    }

    /// An account JWT signed by the operator, with JetStream (unlimited)
    /// if `jetstream`.
    fn account_jwt(&self, account: &KeyPair, name: &str, jetstream: bool) -> String {
        let mut limits = json!({
            "subs": UNLIMITED,
            "data": UNLIMITED,
            "payload": UNLIMITED,
            "imports": UNLIMITED,
            "exports": UNLIMITED,
            "wildcards": true,
            "conn": UNLIMITED,
            "leaf": UNLIMITED,
        });
        if jetstream {
            // Non-zero storage limits are what enable JetStream for an account.
            for limit in ["mem_storage", "disk_storage", "streams", "consumer"] {
                limits[limit] = json!(UNLIMITED);
            }
        }
        signed_jwt(
            &self.operator,
            &account.public_key(),
            name,
            json!({ "type": "account", "version": 2, "limits": limits }),
        )
    }
}

impl Default for OperatorTrust {
    fn default() -> Self {
        OperatorTrust::new()
    }
}

/// `.creds` text for host user `host` signed by `account`, with the host
/// permissions of the password mode. `account` need not be one the server
/// trusts (a stranger's key makes credentials the server must refuse).
pub fn host_creds(account: &KeyPair, bucket: &str, host: &str) -> String {
    let permissions = json!({
        "pub": { "allow": host_publish_allow(bucket, host), "deny": host_publish_deny() },
        "sub": { "allow": host_subscribe_allow() },
    });
    user_creds(account, host, permissions)
}

/// A fresh user key and its JWT (signed by `account`, with `permissions`:
/// the `pub`/`sub` object of a user claim) as a `.creds` file.
fn user_creds(account: &KeyPair, name: &str, permissions: Value) -> String {
    let user = KeyPair::new_user();
    let mut claims = json!({
        "type": "user",
        "version": 2,
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
    });
    if let (Some(claims), Value::Object(permissions)) = (claims.as_object_mut(), permissions) {
        claims.extend(permissions);
    }
    let jwt = signed_jwt(account, &user.public_key(), name, claims);
    let seed = user.seed().expect("a generated user key has a seed");
    creds_file(&jwt, &seed)
}

/// The `.creds` layout `nsc` writes and NATS clients parse: the JWT and the
/// seed, each between dashed marker lines.
fn creds_file(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

/// A JWT with subject `subject`, name `name` and `nats` claims, issued and
/// signed by `issuer`. `jti` is the unpadded base32 SHA-512/256 of the
/// claims without it (what nats-io/jwt v2 does; servers only need it unique).
fn signed_jwt(issuer: &KeyPair, subject: &str, name: &str, nats: Value) -> String {
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let mut claims = json!({
        "iat": issued_at,
        "iss": issuer.public_key(),
        "sub": subject,
        "name": name,
        "nats": nats,
    });
    let unhashed = serde_json::to_vec(&claims).expect("serialize claims");
    claims["jti"] = json!(BASE32_NOPAD.encode(&Sha512_256::digest(&unhashed)));
    let claims = serde_json::to_vec(&claims).expect("serialize claims");
    let signed_part = format!(
        "{}.{}",
        BASE64URL_NOPAD.encode(JWT_HEADER.as_bytes()),
        BASE64URL_NOPAD.encode(&claims)
    );
    let signature = issuer
        .sign(signed_part.as_bytes())
        .expect("a generated key can sign");
    format!("{signed_part}.{}", BASE64URL_NOPAD.encode(&signature))
}
