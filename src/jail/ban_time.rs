//! How long a jail's ban lasts: the base time grown for an address banned
//! before (fail2ban's `bantime.increment`: a factor, multipliers, or a
//! `bantime.formula` evaluated by [`super::formula`]), capped, plus random
//! extra time.
//!
//! Pure arithmetic: time comes in as seconds, and nothing here reads the
//! ban history or bans (the daemon's jail ban policy, `daemon/jail_bans.rs`,
//! does both). It lives under `jail/` because the config parses
//! [`Increment`], and the config must not depend on the daemon.

use super::formula::{Formula, FormulaInput};

/// How ban times grow for an address banned before (fail2ban's
/// `bantime.increment`).
#[derive(Debug, Clone, PartialEq)]
pub enum Increment {
    /// Every ban lasts the base time.
    Off,
    /// base × factor × 2^(previous bans), the exponent capped at 20.
    Factor(f64),
    /// base × multipliers[previous bans], the last one repeating.
    Multipliers(Vec<u64>),
    /// fail2ban's `bantime.formula`, with `factor` as its `banFactor`.
    Formula { formula: Formula, factor: f64 },
}

/// The length of a ban for an address banned `previous_bans` times before,
/// capped at `max_time` seconds.
pub fn ban_seconds(base: u64, previous_bans: u32, increment: &Increment, max_time: u64) -> u64 {
    let grown = match increment {
        Increment::Off => base,
        Increment::Factor(factor) => {
            let doubling = 1u64 << previous_bans.min(20);
            seconds_from(base as f64 * factor * doubling as f64, base)
        }
        Increment::Formula { formula, factor } => seconds_from(
            formula.evaluate(FormulaInput {
                base_seconds: base as f64,
                previous_bans: f64::from(previous_bans),
                factor: *factor,
            }),
            base,
        ),
        Increment::Multipliers(multipliers) => {
            let index = (previous_bans as usize).min(multipliers.len().saturating_sub(1));
            let multiplier = multipliers.get(index).copied().unwrap_or(1);
            base.saturating_mul(multiplier)
        }
    };
    grown.clamp(1, max_time.max(1))
}

/// Whole seconds from a computed ban time: too large or infinite means
/// "as long as allowed", and a formula that gives no number (NaN) falls
/// back to the base time.
fn seconds_from(computed: f64, base: u64) -> u64 {
    if computed.is_nan() {
        base
    } else if computed >= u64::MAX as f64 {
        u64::MAX
    } else {
        computed.round().max(0.0) as u64
    }
}

/// A number in `0..=limit`, for randomised ban times. Not cryptographic:
/// it only has to keep bots from predicting the exact end of a ban.
pub fn random_below(limit: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    if limit == 0 {
        return 0;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish() % (limit + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_times_grow_like_fail2ban_and_stop_at_max_time() {
        assert_eq!(ban_seconds(600, 3, &Increment::Off, 86_400), 600);
        assert_eq!(ban_seconds(600, 0, &Increment::Factor(1.0), 86_400), 600);
        assert_eq!(ban_seconds(600, 3, &Increment::Factor(1.0), 86_400), 4800);
        assert_eq!(
            ban_seconds(600, 30, &Increment::Factor(2.0), 86_400),
            86_400
        );
        let multipliers = Increment::Multipliers(vec![1, 2, 4, 8]);
        assert_eq!(ban_seconds(600, 1, &multipliers, 86_400), 1200);
        assert_eq!(
            ban_seconds(600, 9, &multipliers, 86_400),
            4800,
            "the last multiplier repeats"
        );
    }

    #[test]
    fn random_extra_time_stays_within_its_limit() {
        assert_eq!(random_below(0), 0);
        assert!((0..200).all(|_| random_below(5) <= 5));
    }
}
