//! Property tests of dice notation: whatever a user types after `!roll`, the reply is a roll within
//! the notation's range or an explanation, and it stays short.

use proptest::prelude::*;

use super::*;

/// The longest reply: 20 dice of up to 4 digits, a modifier and the frame around them.
const MAX_REPLY_BYTES: usize = 200;

/// A decimal number as typed, including ones far past `u64`; `None` past `u128`, which no limit
/// comes near.
fn value(digits: &str) -> Option<u128> {
    digits.parse().ok()
}

/// What `parse` must answer for `[count]d<sides>[<sign><modifier>]` whose parts are digit strings:
/// the rules of the usage text, written out independently.
fn expected(count: &str, sides: &str, modifier: Option<(char, &str)>) -> Result<Spec, String> {
    let usage = format!("❌ {USAGE}");
    if sides.is_empty() || modifier.is_some_and(|(_, digits)| digits.is_empty()) {
        return Err(usage);
    }
    let count = if count.is_empty() { Some(1) } else { value(count) };
    let (sides, modifier_value) = (value(sides), modifier.map(|(_, digits)| value(digits)));
    let count = match count {
        Some(0) => return Err("❌ Roll at least 1 die".to_owned()),
        Some(n @ 1..=20) => n as u32,
        _ => return Err("❌ At most 20 dice".to_owned()),
    };
    let sides = match sides {
        Some(s @ 2..=1000) => s as u32,
        _ => return Err("❌ Sides must be between 2 and 1000".to_owned()),
    };
    let modifier = match (modifier, modifier_value) {
        (None, _) => 0,
        (Some((sign, _)), Some(Some(m @ 0..=100))) => {
            if sign == '-' {
                -(m as i32)
            } else {
                m as i32
            }
        }
        _ => return Err("❌ Modifier must be between -100 and +100".to_owned()),
    };
    Ok(Spec { count, sides, modifier })
}

/// Reads a roll reply back: the dice and the total it shows.
fn read_reply(reply: &str) -> (Vec<i64>, i64, i64) {
    let body = reply.strip_prefix("🎲 [").expect("a roll reply");
    let (dice, rest) = body.split_once(']').expect("closing bracket");
    let dice: Vec<i64> = dice.split(", ").map(|d| d.parse().expect("a die")).collect();
    let (modifier, total) = match rest.trim().split_once("= ").expect("a total") {
        ("", total) => (0, total),
        (m, total) => {
            let m = m.trim();
            let value: i64 = m[1..].trim().parse().expect("a modifier");
            (if m.starts_with('-') { -value } else { value }, total)
        }
    };
    (dice, modifier, total.parse().expect("a number"))
}

/// Numbers at and around the limits, and past `u32` and `u64`.
const EDGES: &[&str] = &[
    "19",
    "20",
    "21",
    "1",
    "2",
    "1000",
    "1001",
    "100",
    "101",
    "4294967297",
    "18446744073709551617",
];

/// Digits as a user might type them: short, at the limits, or absurdly long.
fn digits() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[0-9]{0,4}",
        1 => "0{0,30}[0-9]{0,3}",
        1 => prop::sample::select(EDGES).prop_map(str::to_owned),
        1 => "[1-9][0-9]{15,60}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_gets_a_short_answer_and_rolls_stay_in_range(text in "\\PC{0,64}", seed in any::<u64>()) {
        let reply = roll(&text, &mut Rng(seed));
        prop_assert!(reply.len() <= MAX_REPLY_BYTES, "{reply:?}");
        if let Ok(spec) = parse(&text) {
            prop_assert!((1..=20).contains(&spec.count));
            prop_assert!((2..=1000).contains(&spec.sides));
            prop_assert!((-100..=100).contains(&spec.modifier));
        }
    }

    #[test]
    fn notation_with_huge_or_odd_numbers_is_read_as_documented(
        count in digits(),
        d in prop::sample::select(&["d", "D"][..]),
        sides in digits(),
        modifier in prop::option::of((prop::sample::select(&['+', '-'][..]), digits())),
        before in "[ \t]{0,2}",
        after in "[ \t]{0,2}",
        seed in any::<u64>(),
    ) {
        let sign = modifier.as_ref().map(|(sign, digits)| format!("{sign}{digits}")).unwrap_or_default();
        let text = format!("{before}{count}{d}{sides}{sign}{after}");
        let modifier = modifier.as_ref().map(|(sign, digits)| (*sign, digits.as_str()));
        let want = expected(&count, &sides, modifier);
        prop_assert_eq!(parse(&text), want.clone(), "{:?}", text);

        let reply = roll(&text, &mut Rng(seed));
        prop_assert!(reply.len() <= MAX_REPLY_BYTES, "{reply:?}");
        match want {
            Ok(spec) => {
                let (dice, modifier, total) = read_reply(&reply);
                prop_assert_eq!(dice.len(), spec.count as usize);
                prop_assert!(dice.iter().all(|&d| (1..=i64::from(spec.sides)).contains(&d)), "{reply}");
                prop_assert_eq!(modifier, i64::from(spec.modifier));
                prop_assert_eq!(total, dice.iter().sum::<i64>() + modifier);
            }
            Err(explanation) => prop_assert_eq!(reply, explanation),
        }
    }

    #[test]
    fn rolls_never_leave_their_sides(sides in 1u32..=u32::MAX, seed in any::<u64>()) {
        prop_assert!(Rng(seed).below(sides) < sides);
    }
}
