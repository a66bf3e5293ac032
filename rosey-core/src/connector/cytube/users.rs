//! The channel's user table, kept from CyTube's user events, so other parts can ask who is here and
//! with which rank (the admin plugin checks ranks).

use std::collections::BTreeMap;

use serde_json::Value;

/// One user in the channel.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// The name as CyTube shows it.
    pub name: String,
    /// Channel rank (0 guest, 1 registered, 1.5 leader, 2 moderator, 3 admin, 4 owner…).
    pub rank: f64,
    /// Whether the user is marked AFK.
    pub afk: bool,
}

/// Users by name (names are unique per channel, compared case-insensitively).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserTable {
    users: BTreeMap<String, User>,
}

fn key(name: &str) -> String {
    name.to_lowercase()
}

fn user_from(value: &Value) -> Option<User> {
    Some(User {
        name: value.get("name")?.as_str()?.to_owned(),
        rank: value.get("rank").and_then(Value::as_f64).unwrap_or(0.0),
        afk: value.pointer("/meta/afk").and_then(Value::as_bool).unwrap_or(false),
    })
}

impl UserTable {
    /// Applies one CyTube event; events that do not concern users, or are malformed, change nothing.
    /// Returns whether the table changed.
    pub fn apply(&mut self, event: &str, arg: Option<&Value>) -> bool {
        let Some(arg) = arg else { return false };
        let name = || arg.get("name").and_then(Value::as_str).map(key);
        match event {
            "userlist" => {
                let Some(list) = arg.as_array() else { return false };
                self.users = list.iter().filter_map(user_from).map(|u| (key(&u.name), u)).collect();
                true
            }
            "addUser" => match user_from(arg) {
                Some(user) => {
                    self.users.insert(key(&user.name), user);
                    true
                }
                None => false,
            },
            "userLeave" => name().is_some_and(|name| self.users.remove(&name).is_some()),
            "setUserRank" => {
                let rank = arg.get("rank").and_then(Value::as_f64);
                match (name().and_then(|n| self.users.get_mut(&n)), rank) {
                    (Some(user), Some(rank)) => {
                        user.rank = rank;
                        true
                    }
                    _ => false,
                }
            }
            "setAFK" => {
                let afk = arg.get("afk").and_then(Value::as_bool);
                match (name().and_then(|n| self.users.get_mut(&n)), afk) {
                    (Some(user), Some(afk)) => {
                        user.afk = afk;
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    /// A user's channel rank, if they are here.
    pub fn rank(&self, name: &str) -> Option<f64> {
        self.users.get(&key(name)).map(|u| u.rank)
    }

    /// A user, if they are here.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(&key(name))
    }

    /// Everyone here, by name.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// How many users are here (anonymous viewers are not users).
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether nobody is here.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_module_example_holds() {
        use super::UserTable;
        use serde_json::json;

        let mut users = UserTable::default();
        users.apply(
            "userlist",
            Some(&json!([{"name": "alice", "rank": 2, "meta": {"afk": false}}])),
        );
        users.apply("setUserRank", Some(&json!({"name": "alice", "rank": 3})));
        assert_eq!(users.rank("Alice"), Some(3.0));
    }

    #[test]
    fn the_table_follows_joins_leaves_ranks_and_afk() {
        let mut t = UserTable::default();
        t.apply(
            "userlist",
            Some(&json!([{"name": "rosey_admin", "rank": 5, "meta": {"afk": false}}])),
        );
        assert!(
            t.apply("addUser", Some(&json!({"name": "alice", "rank": 0, "meta": {"afk": false}})))
        );
        assert!(t.apply("setAFK", Some(&json!({"name": "alice", "afk": true}))));
        assert!(t.apply("setUserRank", Some(&json!({"name": "alice", "rank": 1.5}))));
        assert_eq!(t.get("ALICE"), Some(&User { name: "alice".into(), rank: 1.5, afk: true }));
        assert!(t.apply("userLeave", Some(&json!({"name": "alice"}))));
        assert_eq!(t.rank("alice"), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn malformed_events_change_nothing() {
        let mut t = UserTable::default();
        for (event, arg) in [
            ("userlist", json!("nope")),
            ("addUser", json!({"rank": 1})),
            ("setUserRank", json!({"name": "ghost", "rank": 2})),
            ("setAFK", json!({"name": "ghost"})),
            ("userLeave", json!(42)),
        ] {
            assert!(!t.apply(event, Some(&arg)), "{event}");
        }
        assert!(!t.apply("userLeave", None));
        assert!(t.is_empty());
    }
}
