//! Who may use `!admin`: a name in `owner` or `admins`, and on CyTube a registered user.

/// Where the admin plugin learns a chat user's rank: on CyTube, the connector's user table of the
/// channel. Implementations answer from memory, without blocking.
pub trait RankLookup: Send + Sync {
    /// The rank of `user` (matched as CyTube matches names, case-insensitively) among the users in
    /// the channel now; `None` when no such user is there.
    fn rank(&self, user: &str) -> Option<f64>;
}

/// The lowest CyTube rank of a registered user (guests are 0).
pub(crate) const REGISTERED: f64 = 1.0;

/// The names that may use admin commands, as configured and as compared.
#[derive(Debug, Clone, Default)]
pub(crate) struct Admins {
    /// `(lowercased, as configured)`, the owner first.
    names: Vec<(String, String)>,
}

/// What [`Admins::check`] decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// The user may: `admin` is the name as configured, `rank` what the user table said (or the
    /// event, on the console).
    Allowed { admin: String, rank: Option<f64> },
    /// The user may not; `reason` is for the audit log, not for the chat.
    Denied { rank: Option<f64>, reason: &'static str },
}

impl Admins {
    /// The owner (if any) and the admins; blank names are ignored.
    pub(crate) fn new(owner: Option<&str>, admins: &[String]) -> Self {
        let names = owner
            .into_iter()
            .chain(admins.iter().map(String::as_str))
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| (fold(name), name.to_owned()))
            .collect();
        Self { names }
    }

    /// The configured name `user` matches, compared as CyTube compares names.
    pub(crate) fn find(&self, user: &str) -> Option<&str> {
        let folded = fold(user.trim());
        self.names.iter().find(|(key, _)| *key == folded).map(|(_, name)| name.as_str())
    }

    /// Whether `user` may use admin commands now. With `ranks` (CyTube) the user must also be in the
    /// channel's user table with a rank of at least 1, so a guest who takes an admin's name is
    /// refused; without (the console, where every line is local) the name is enough and the rank is
    /// the event's.
    pub(crate) fn check(
        &self,
        ranks: Option<&dyn RankLookup>,
        user: &str,
        event_rank: Option<f64>,
    ) -> Verdict {
        let rank = match ranks {
            Some(ranks) => ranks.rank(user),
            None => event_rank,
        };
        let Some(admin) = self.find(user) else {
            return Verdict::Denied { rank, reason: "not in owner or admins" };
        };
        if ranks.is_some() {
            match rank {
                None => {
                    return Verdict::Denied { rank, reason: "not in the channel's user list" };
                }
                Some(r) if r.is_nan() || r < REGISTERED => {
                    return Verdict::Denied {
                        rank,
                        reason: "not a registered user (rank below 1)",
                    };
                }
                Some(_) => {}
            }
        }
        Verdict::Allowed { admin: admin.to_owned(), rank }
    }
}

/// A name as CyTube compares it.
pub(crate) fn fold(name: &str) -> String {
    name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Table(HashMap<String, f64>);

    impl RankLookup for Table {
        fn rank(&self, user: &str) -> Option<f64> {
            self.0.get(&fold(user)).copied()
        }
    }

    fn admins() -> Admins {
        Admins::new(Some("Alice"), &["bob".to_owned(), "  ".to_owned()])
    }

    #[test]
    fn names_match_case_insensitively_and_report_the_configured_spelling() {
        let admins = admins();
        assert_eq!(admins.find("ALICE"), Some("Alice"));
        assert_eq!(admins.find("Bob"), Some("bob"));
        assert_eq!(admins.find("carol"), None);
        assert_eq!(admins.find(""), None, "a blank admin entry matches nobody");
    }

    #[test]
    fn on_the_console_the_name_is_enough() {
        assert_eq!(
            admins().check(None, "alice", None),
            Verdict::Allowed { admin: "Alice".to_owned(), rank: None }
        );
        assert!(matches!(admins().check(None, "mallory", Some(5.0)), Verdict::Denied { .. }));
    }

    #[test]
    fn on_cytube_an_admin_must_be_a_registered_user_in_the_channel() {
        let table = Table(HashMap::from([
            ("alice".to_owned(), 3.0),
            ("bob".to_owned(), 0.0),
            ("mallory".to_owned(), 5.0),
        ]));
        let ranks: Option<&dyn RankLookup> = Some(&table);
        assert_eq!(
            admins().check(ranks, "Alice", Some(0.0)),
            Verdict::Allowed { admin: "Alice".to_owned(), rank: Some(3.0) },
            "the user table decides, not the event"
        );
        assert_eq!(
            admins().check(ranks, "bob", Some(2.0)),
            Verdict::Denied { rank: Some(0.0), reason: "not a registered user (rank below 1)" }
        );
        let table = Table(HashMap::new());
        assert_eq!(
            admins().check(Some(&table), "alice", Some(3.0)),
            Verdict::Denied { rank: None, reason: "not in the channel's user list" }
        );
        assert!(matches!(admins().check(ranks, "mallory", None), Verdict::Denied { .. }));
    }
}
