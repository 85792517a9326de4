//! Causal tokens: a session's guarantee carried to another process in a header or cookie.

use std::fmt;

use crate::core::Lsn;

/// A decoded causal token: "whoever holds this has written up to `lsn` on the cluster
/// `system_id`, timeline `timeline`".
///
/// Text form: `c1.<system id>.<timeline>.<lsn>`, each hexadecimal: short, and safe in URLs,
/// headers and cookies. Not a secret and not signed: a forged token can only make its own
/// reads slower (wait for a position, or go to the primary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CausalToken {
    /// `pg_control_system().system_identifier` of the cluster (0 if it was not known yet).
    pub system_id: u64,
    /// The primary's timeline when the token was made (0 if not known yet).
    pub timeline: u32,
    /// The position reads must have replayed.
    pub lsn: Lsn,
}

const PREFIX: &str = "c1";

impl fmt::Display for CausalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}.{:x}.{:x}.{:x}", self.system_id, self.timeline, self.lsn.0)
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a token this library made.
    #[error("malformed causal token: {reason}")]
    Malformed {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A token from another cluster (another system identifier).
    #[error("causal token from another cluster (system id {found:x}, this cluster is {expected:x})")]
    ForeignCluster {
        /// This cluster's system identifier.
        expected: u64,
        /// The token's.
        found: u64,
    },
}

impl std::str::FromStr for CausalToken {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        let malformed = |reason| TokenError::Malformed { reason };
        if s.len() > 64 {
            return Err(malformed("too long"));
        }
        let mut parts = s.trim().split('.');
        if parts.next() != Some(PREFIX) {
            return Err(malformed("unknown version prefix"));
        }
        let mut field = |name| {
            let p = parts.next().ok_or(malformed(name))?;
            if p.is_empty() || p.len() > 16 {
                return Err(malformed(name));
            }
            u64::from_str_radix(p, 16).map_err(|_| malformed(name))
        };
        let system_id = field("bad system id")?;
        let timeline = u32::try_from(field("bad timeline")?).map_err(|_| malformed("bad timeline"))?;
        let lsn = Lsn(field("bad position")?);
        if parts.next().is_some() {
            return Err(malformed("trailing fields"));
        }
        Ok(CausalToken {
            system_id,
            timeline,
            lsn,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage_without_panicking() {
        let t = CausalToken {
            system_id: 7_300_000_000_000_000_001,
            timeline: 3,
            lsn: Lsn(0x16_B374_D848),
        };
        let s = t.to_string();
        assert_eq!(s, "c1.654ecf52ac5a0001.3.16b374d848");
        assert_eq!(s.parse::<CausalToken>(), Ok(t));
        for bad in [
            "",
            "c1",
            "c2.1.1.1",
            "c1.1.1",
            "c1.1.1.1.1",
            "c1.x.1.1",
            "c1.1.100000000.1",
            "c1..1.1",
            "c1.1.1.-1",
            "c1.11111111111111111.1.1",
            "🦀",
            "c1.1.1.1 ; DROP",
        ] {
            assert!(
                matches!(bad.parse::<CausalToken>(), Err(TokenError::Malformed { .. })),
                "{bad:?}"
            );
        }
        let long = "c1.".to_string() + &"1".repeat(100);
        assert!(long.parse::<CausalToken>().is_err());
        // Every prefix and every byte flip of a valid token is an error or a token, never a panic.
        for i in 0..s.len() {
            let _ = s[..i].parse::<CausalToken>();
            let mut b = s.clone().into_bytes();
            b[i] ^= 0x20;
            if let Ok(flipped) = String::from_utf8(b) {
                let _ = flipped.parse::<CausalToken>();
            }
        }
    }
}
