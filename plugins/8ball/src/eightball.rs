//! The Magic 8-Ball: answers, the reply text, the per-user cooldown.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Time a user must wait between two questions.
pub(crate) const COOLDOWN: Duration = Duration::from_secs(3);
/// Longest question shown back, in characters.
pub(crate) const MAX_SHOWN: usize = 100;
/// The host's health probe asks as this user; it is never made to wait.
pub(crate) const PROBE_USER: &str = "rosey-health";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mood {
    Yes,
    Maybe,
    No,
}

/// The 20 classic answers.
const ANSWERS: [(&str, Mood); 20] = [
    ("It is certain", Mood::Yes),
    ("It is decidedly so", Mood::Yes),
    ("Without a doubt", Mood::Yes),
    ("Yes definitely", Mood::Yes),
    ("You may rely on it", Mood::Yes),
    ("As I see it, yes", Mood::Yes),
    ("Most likely", Mood::Yes),
    ("Outlook good", Mood::Yes),
    ("Yes", Mood::Yes),
    ("Signs point to yes", Mood::Yes),
    ("Reply hazy, try again", Mood::Maybe),
    ("Ask again later", Mood::Maybe),
    ("Better not tell you now", Mood::Maybe),
    ("Cannot predict now", Mood::Maybe),
    ("Concentrate and ask again", Mood::Maybe),
    ("Don't count on it", Mood::No),
    ("My reply is no", Mood::No),
    ("My sources say no", Mood::No),
    ("Outlook not so good", Mood::No),
    ("Very doubtful", Mood::No),
];

fn flavor(mood: Mood) -> &'static str {
    match mood {
        Mood::Yes => "The spirits are smiling.",
        Mood::Maybe => "The mists are cloudy.",
        Mood::No => "The spirits frown.",
    }
}

/// The question as shown: trimmed, cut to [`MAX_SHOWN`] characters with `…` when longer.
pub(crate) fn shown(question: &str) -> String {
    let question = question.trim();
    if question.chars().count() <= MAX_SHOWN {
        question.to_owned()
    } else {
        let cut: String = question.chars().take(MAX_SHOWN).collect();
        format!("{}…", cut.trim_end())
    }
}

/// The ball: picks answers and remembers when each user last asked.
pub(crate) struct Ball {
    last_asked: HashMap<String, Instant>,
    state: u64,
}

impl Ball {
    pub(crate) fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Self { last_asked: HashMap::new(), state: seed | 1 }
    }

    fn pick(&mut self) -> (&'static str, Mood) {
        // xorshift64*: plenty for an 8-ball.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let x = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ANSWERS[(x % ANSWERS.len() as u64) as usize]
    }

    /// The reply to `!8ball <question>` from `user` at `now`.
    pub(crate) fn ask(&mut self, user: &str, question: &str, now: Instant) -> String {
        if question.trim().is_empty() {
            return "❌ Ask a question: !8ball <question>".to_owned();
        }
        if user != PROBE_USER {
            if let Some(&last) = self.last_asked.get(user)
                && now.saturating_duration_since(last) < COOLDOWN
            {
                return format!(
                    "⏳ {user}, the spirits need {}s between questions",
                    COOLDOWN.as_secs()
                );
            }
            // Forget old askers so the map stays small in a busy channel.
            if self.last_asked.len() > 10_000 {
                self.last_asked.retain(|_, t| now.saturating_duration_since(*t) < COOLDOWN);
            }
            self.last_asked.insert(user.to_owned(), now);
        }
        let (answer, mood) = self.pick();
        format!("🎱 \"{}\" — {answer}. {}", shown(question), flavor(mood))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_quotes_the_question_and_is_a_classic() {
        let mut ball = Ball::new();
        let reply = ball.ask("alice", "will it work?", Instant::now());
        assert!(reply.starts_with("🎱 \"will it work?\" — "), "{reply}");
        assert!(
            ANSWERS.iter().any(|(a, m)| reply.contains(&format!("— {a}. {}", flavor(*m)))),
            "{reply}"
        );
    }

    #[test]
    fn a_question_is_required() {
        assert_eq!(
            Ball::new().ask("alice", "   ", Instant::now()),
            "❌ Ask a question: !8ball <question>"
        );
    }

    #[test]
    fn long_questions_are_cut_to_100_characters() {
        let question = "é".repeat(150);
        let shown = shown(&question);
        assert_eq!(shown.chars().count(), 101);
        assert!(shown.ends_with('…'));
        assert_eq!(super::shown("short"), "short");
    }

    #[test]
    fn each_user_waits_three_seconds_between_questions() {
        let mut ball = Ball::new();
        let t0 = Instant::now();
        assert!(ball.ask("alice", "one?", t0).starts_with("🎱"));
        assert_eq!(
            ball.ask("alice", "two?", t0 + Duration::from_secs(1)),
            "⏳ alice, the spirits need 3s between questions"
        );
        assert!(ball.ask("bob", "mine?", t0 + Duration::from_secs(1)).starts_with("🎱"));
        assert!(ball.ask("alice", "three?", t0 + Duration::from_secs(3)).starts_with("🎱"));
        assert!(ball.ask(PROBE_USER, "up?", t0).starts_with("🎱"));
        assert!(ball.ask(PROBE_USER, "up?", t0).starts_with("🎱"), "the health probe never waits");
    }

    #[test]
    fn every_answer_can_come_up() {
        let mut ball = Ball::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2000 {
            seen.insert(ball.pick().0);
        }
        assert_eq!(seen.len(), 20);
    }
}
