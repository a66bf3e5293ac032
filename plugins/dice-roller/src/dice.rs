//! Dice notation, rolling and the reply texts.

/// Shown for `!roll` without arguments and for notation we cannot read.
pub(crate) const USAGE: &str = "Usage: !roll [N]d<S>[+/-M], e.g. !roll 2d6+1";

/// A parsed roll: `count` dice of `sides` sides plus `modifier`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spec {
    pub(crate) count: u32,
    pub(crate) sides: u32,
    pub(crate) modifier: i32,
}

/// Parses `[N]d<S>[+/-M]` (case-insensitive, surrounding spaces ignored); the error is the reply.
pub(crate) fn parse(text: &str) -> Result<Spec, String> {
    let text = text.trim().to_ascii_lowercase();
    let usage = || format!("❌ {USAGE}");
    let (count, rest) = text.split_once('d').ok_or_else(usage)?;
    let (sides, modifier) = match rest.find(['+', '-']) {
        Some(i) => (&rest[..i], Some((&rest[i..i + 1], &rest[i + 1..]))),
        None => (rest, None),
    };
    let number = |digits: &str| -> Result<Option<u64>, String> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(usage());
        }
        // More digits than any limit allows: too big, whatever the value.
        Ok(digits.parse::<u64>().ok())
    };
    let count = if count.is_empty() { Some(1) } else { number(count)? };
    let sides = number(sides)?;
    let modifier = match modifier {
        None => Some(0i64),
        Some((sign, digits)) => number(digits)?
            .map(|m| if sign == "-" { -(m.min(1_000) as i64) } else { m.min(1_000) as i64 }),
    };
    let count = match count {
        Some(0) => return Err("❌ Roll at least 1 die".to_owned()),
        Some(n @ 1..=20) => n as u32,
        _ => return Err("❌ At most 20 dice".to_owned()),
    };
    let sides = match sides {
        Some(s @ 2..=1000) => s as u32,
        _ => return Err("❌ Sides must be between 2 and 1000".to_owned()),
    };
    let modifier = match modifier {
        Some(m @ -100..=100) => m as i32,
        _ => return Err("❌ Modifier must be between -100 and +100".to_owned()),
    };
    Ok(Spec { count, sides, modifier })
}

/// Formats a roll: `🎲 [4, 3] = 7`, `🎲 [17] + 5 = 22`, `🎲 [2, 6] - 1 = 7`.
pub(crate) fn format(rolls: &[u32], modifier: i32) -> String {
    let list = rolls.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    let total = rolls.iter().map(|&r| i64::from(r)).sum::<i64>() + i64::from(modifier);
    match modifier {
        0 => format!("🎲 [{list}] = {total}"),
        m if m > 0 => format!("🎲 [{list}] + {m} = {total}"),
        m => format!("🎲 [{list}] - {} = {total}", -m),
    }
}

/// The reply to `!roll <args>`.
pub(crate) fn roll(args: &str, rng: &mut Rng) -> String {
    if args.trim().is_empty() {
        return format!("🎲 {USAGE}");
    }
    match parse(args) {
        Ok(spec) => {
            let rolls: Vec<u32> = (0..spec.count).map(|_| rng.below(spec.sides) + 1).collect();
            format(&rolls, spec.modifier)
        }
        Err(reply) => reply,
    }
}

/// The reply to `!flip`.
pub(crate) fn flip(rng: &mut Rng) -> String {
    if rng.below(2) == 0 { "🪙 Heads!".to_owned() } else { "🪙 Tails!".to_owned() }
}

/// A small splitmix64 generator: plenty for dice, and no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the clock and the process id.
    pub(crate) fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(nanos ^ (u64::from(std::process::id()) << 32))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n ≥ 1), without modulo bias.
    pub(crate) fn below(&mut self, n: u32) -> u32 {
        let n = u64::from(n.max(1));
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next();
            if x < zone {
                return (x % n) as u32;
            }
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notation_is_read_as_documented() {
        assert_eq!(parse("2d6"), Ok(Spec { count: 2, sides: 6, modifier: 0 }));
        assert_eq!(parse(" D20+5 "), Ok(Spec { count: 1, sides: 20, modifier: 5 }));
        assert_eq!(parse("3d8-2"), Ok(Spec { count: 3, sides: 8, modifier: -2 }));
        assert_eq!(parse("20d1000+100").map(|s| s.count), Ok(20));
    }

    #[test]
    fn limits_are_explained() {
        assert_eq!(parse("21d6").unwrap_err(), "❌ At most 20 dice");
        assert_eq!(parse("99999999999999999999999d6").unwrap_err(), "❌ At most 20 dice");
        assert_eq!(parse("0d6").unwrap_err(), "❌ Roll at least 1 die");
        assert_eq!(parse("2d1").unwrap_err(), "❌ Sides must be between 2 and 1000");
        assert_eq!(parse("2d1001").unwrap_err(), "❌ Sides must be between 2 and 1000");
        assert_eq!(parse("2d6+101").unwrap_err(), "❌ Modifier must be between -100 and +100");
        assert_eq!(parse("2d6-101").unwrap_err(), "❌ Modifier must be between -100 and +100");
        for bad in ["", "d", "2x6", "2d", "d6+", "2d6+-1", "abc", "2d6 extra", "½d6", "-1d6"] {
            assert_eq!(parse(bad).unwrap_err(), format!("❌ {USAGE}"), "{bad:?}");
        }
    }

    #[test]
    fn replies_look_like_the_spec() {
        assert_eq!(format(&[4, 3], 0), "🎲 [4, 3] = 7");
        assert_eq!(format(&[17], 5), "🎲 [17] + 5 = 22");
        assert_eq!(format(&[2, 6], -1), "🎲 [2, 6] - 1 = 7");
        let mut rng = Rng(7);
        assert_eq!(roll("", &mut rng), format!("🎲 {USAGE}"));
        assert_eq!(roll("  ", &mut rng), format!("🎲 {USAGE}"));
        assert!(["🪙 Heads!", "🪙 Tails!"].contains(&flip(&mut rng).as_str()));
    }

    #[test]
    fn rolls_stay_within_their_sides_and_cover_them() {
        let mut rng = Rng(42);
        let mut seen = [false; 6];
        for _ in 0..1000 {
            let r = rng.below(6);
            assert!(r < 6);
            seen[r as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
