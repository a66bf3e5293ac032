//! From JSON text to a validated [`Config`], collecting every problem instead of stopping at the first.
//!
//! 1. The text is parsed into a `serde_json::Value`; a syntax error ends here (nothing else can be
//!    trusted), with serde_json's line and column.
//! 2. An array where the whole configuration or a section belongs is rejected up front, because
//!    derived structs would otherwise accept it field by field.
//! 3. The value is deserialized into [`Config`] through `serde_ignored` (which records every unknown
//!    key) and `serde_path_to_error` (which names the key of a type error). A type error removes its
//!    key from the value and deserialization runs again, so every type error is found; the key then
//!    takes its default.
//! 4. Semantic checks run on the result, except on top-level keys or sections that already had a type
//!    error (their values are defaults, not what the operator wrote).
//!
//! Working from a `Value` loses positions, so the position of a type error is found afterwards by
//! walking the text to its key (see [`locate`]).

use std::collections::HashSet;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::nats::Stage;
use super::{
    Config, ConfigError, ConfigErrors, CytubeConfig, DashboardConfig, DatabaseConfig,
    LoggingConfig, MetricsConfig, MetricsRetention, NatsConfig, NodeConfig, validate,
};

/// Unknown keys reported by name. Locating a key reads the text up to it, so thousands of them would
/// take seconds; past this many the text is not a typo away from a configuration, and the rest are
/// counted in one line.
const MAX_UNKNOWN_KEYS: usize = 50;

/// One step of a key path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Step {
    Key(String),
    Index(usize),
}

/// Renders a path the way errors name keys: `dashboard.port`, `admins[1]`.
struct KeyPath<'a>(&'a [Step]);

impl fmt::Display for KeyPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// Parses, checks structure, then validates; see the module documentation for the order.
pub(super) fn parse(text: &str) -> Result<Config, ConfigErrors> {
    // Editors on Windows may save a byte-order mark, which serde_json rejects.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut value: Value =
        serde_json::from_str(text).map_err(|error| ConfigError::new("", error.to_string()))?;
    let given: Vec<String> = match &value {
        Value::Object(map) => {
            map.iter().filter(|(_, value)| !value.is_null()).map(|(key, _)| key.clone()).collect()
        }
        _ => Vec::new(),
    };
    let mut structure = Structure { text, found: Vec::new(), rejected: Vec::new() };

    // serde's derived structs also accept an array, filled field by field; a section never should.
    for path in arrays_in_place_of_objects(&value) {
        structure.reject(&path, "invalid type: sequence, expected a JSON object".to_owned());
        if !remove(&mut value, &path) {
            return Err(ConfigErrors(structure.into_errors(None)));
        }
    }

    let mut unknown: Vec<Vec<Step>> = Vec::new();
    let mut seen: HashSet<Vec<Step>> = HashSet::new();
    let config = loop {
        let mut ignored = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| ignored.push(steps_of_ignored(&path));
        let result: Result<Config, _> =
            serde_path_to_error::deserialize(serde_ignored::Deserializer::new(&value, &mut record));
        for path in ignored {
            if unknown.len() < MAX_UNKNOWN_KEYS && !seen.contains(&path) {
                unknown.push(path.clone());
            }
            seen.insert(path);
        }
        match result {
            Ok(config) => break Some(config),
            Err(error) => {
                let path = steps_of_error(error.path());
                structure.reject(&path, error.inner().to_string());
                // Removing the key guarantees progress: the value shrinks on every round.
                if !remove(&mut value, &path) {
                    break None;
                }
            }
        }
    };
    for path in &unknown {
        structure.found.push((locate(text, path), unknown_key(path)));
    }
    if seen.len() > unknown.len() {
        let more = seen.len() - unknown.len();
        let message = format!("and {more} more unknown keys, not listed");
        structure.found.push((Some(usize::MAX), ConfigError::new("", message)));
    }

    let errors = structure.into_errors(config.as_ref());
    match config {
        Some(mut config) if errors.is_empty() => {
            config.provenance.given = given;
            Ok(config)
        }
        _ => Err(ConfigErrors(errors)),
    }
}

/// The structural errors found so far.
struct Structure<'t> {
    text: &'t str,
    /// Each error with the byte offset of its value, to report them in file order.
    found: Vec<(Option<usize>, ConfigError)>,
    /// Top-level keys whose value was rejected and replaced by its default.
    rejected: Vec<String>,
}

impl Structure<'_> {
    /// Records that the value at `path` cannot be used, with its position in the text.
    fn reject(&mut self, path: &[Step], mut message: String) {
        let offset = locate(self.text, path);
        if let Some(offset) = offset {
            let (line, column) = line_column(self.text, offset);
            message.push_str(&format!(" at line {line} column {column}"));
        }
        self.found.push((offset, ConfigError::new(KeyPath(path).to_string(), message)));
        self.rejected.push(match path.first() {
            Some(Step::Key(key)) => key.clone(),
            _ => String::new(),
        });
    }

    /// The structural errors in file order, then the semantic errors of `config` except those on a
    /// top-level key that was rejected (its value is a default, not what the operator wrote).
    fn into_errors(mut self, config: Option<&Config>) -> Vec<ConfigError> {
        // Stable: errors without a position (none expected) keep their order, at the front.
        self.found.sort_by_key(|(offset, _)| *offset);
        let mut errors: Vec<ConfigError> = self.found.into_iter().map(|(_, error)| error).collect();
        if let Some(config) = config {
            errors.extend(validate::check(config, Stage::File).into_iter().filter(|error| {
                let top = error.key.split(['.', '[']).next().unwrap_or_default();
                !self.rejected.iter().any(|key| key == top)
            }));
        }
        errors
    }
}

/// Paths where an array stands in place of the whole configuration or one of its sections.
fn arrays_in_place_of_objects(value: &Value) -> Vec<Vec<Step>> {
    match value {
        Value::Array(_) => vec![Vec::new()],
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| (vec![Step::Key(key.clone())], value))
            .filter(|(path, value)| value.is_array() && !known_keys(path).is_empty())
            .map(|(path, _)| path)
            .collect(),
        _ => Vec::new(),
    }
}

fn steps_of_error(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn steps_of_ignored(path: &serde_ignored::Path<'_>) -> Vec<Step> {
    use serde_ignored::Path;
    let mut steps = Vec::new();
    let mut current = path;
    loop {
        current = match current {
            Path::Root => break,
            Path::Map { parent, key } => {
                steps.push(Step::Key(key.clone()));
                parent
            }
            Path::Seq { parent, index } => {
                steps.push(Step::Index(*index));
                parent
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => parent,
        };
    }
    steps.reverse();
    steps
}

/// Removes the innermost object key on `path` (a bad array element takes its whole array with it);
/// false when nothing could be removed.
fn remove(value: &mut Value, path: &[Step]) -> bool {
    let Some(last_key) = path.iter().rposition(|step| matches!(step, Step::Key(_))) else {
        return false;
    };
    let mut current = value;
    for step in &path[..last_key] {
        let next = match (step, current) {
            (Step::Key(key), Value::Object(map)) => map.get_mut(key),
            (Step::Index(index), Value::Array(items)) => items.get_mut(*index),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    match (&path[last_key], current) {
        (Step::Key(key), Value::Object(map)) => map.remove(key).is_some(),
        _ => false,
    }
}

fn unknown_key(path: &[Step]) -> ConfigError {
    let key = KeyPath(path).to_string();
    let Some((Step::Key(name), parent)) = path.split_last() else {
        return ConfigError::new(key, "unknown key");
    };
    let known = known_keys(parent);
    // `"dashboard.port": 80` at the top: the docs write nested keys with dots.
    if let Some((section, inner)) = name.split_once('.')
        && parent.is_empty()
        && known_keys(&[Step::Key(section.to_owned())]).contains(&inner)
    {
        return ConfigError::new(
            key,
            format!("unknown key; write it nested: \"{section}\": {{ \"{inner}\": ... }}"),
        );
    }
    match closest(name, known) {
        Some(suggestion) => {
            ConfigError::new(key, format!("unknown key; did you mean \"{suggestion}\"?"))
        }
        None => ConfigError::new(key, "unknown key"),
    }
}

/// The known key closest to `name`, if any is close enough to be a likely typo.
fn closest(name: &str, known: &[&'static str]) -> Option<&'static str> {
    known
        .iter()
        .map(|candidate| (strsim::jaro_winkler(name, candidate), *candidate))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, candidate)| candidate)
}

/// The keys [`Config`] knows at the object found at `parent`, read from the derived `Deserialize`
/// impls so that this never drifts from the structs.
fn known_keys(parent: &[Step]) -> &'static [&'static str] {
    match parent {
        [] => field_names::<Config>(),
        [Step::Key(section)] => match section.as_str() {
            "nats" => field_names::<NatsConfig>(),
            "database" => field_names::<DatabaseConfig>(),
            "cytube" => field_names::<CytubeConfig>(),
            "metrics" => field_names::<MetricsConfig>(),
            "dashboard" => field_names::<DashboardConfig>(),
            "logging" => field_names::<LoggingConfig>(),
            "node" => field_names::<NodeConfig>(),
            _ => &[],
        },
        [Step::Key(section), Step::Key(sub)] if section == "metrics" && sub == "retention" => {
            field_names::<MetricsRetention>()
        }
        _ => &[],
    }
}

/// The field names a derived `Deserialize` passes to `deserialize_struct`; empty for non-structs.
fn field_names<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // The probe always fails on purpose: it only wants to see the field list.
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields
}

struct FieldProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

/// The text of the error [`Seek`] raises when it reaches its target.
const FOUND: &str = "rosey-config: located";

/// Byte offset in `text` where the value at `path` starts, if `text` has it.
fn locate(text: &str, path: &[Step]) -> Option<usize> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let error = Seek(path).deserialize(&mut deserializer).err()?;
    if !error.to_string().starts_with(FOUND) {
        return None;
    }
    // serde_json stamps the error with the position of the last byte it read, which is at or just
    // before the value (after its key's colon); skip to the value itself.
    let consumed = match error.line() {
        0 => 0,
        line => line_start(text, line)? + error.column(),
    };
    let rest = text.get(consumed..)?;
    let skipped =
        rest.len() - rest.trim_start_matches(|c: char| c == ':' || c.is_whitespace()).len();
    Some(consumed + skipped)
}

fn line_start(text: &str, line: usize) -> Option<usize> {
    if line == 1 {
        return Some(0);
    }
    text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_text = before.rsplit('\n').next().unwrap_or(before);
    (line, line_text.chars().count() + 1)
}

/// Walks JSON text along a path and fails with [`FOUND`] just before reading the target value, so
/// that serde_json stamps the error with the position reached.
struct Seek<'p>(&'p [Step]);

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.0.is_empty() {
            return Err(de::Error::custom(FOUND));
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seek<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value at {}", KeyPath(self.0))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Step::Key(wanted), rest)) = self.0.split_first() else {
            return Err(de::Error::custom("path expects an array here"));
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == *wanted {
                return map.next_value_seed(Seek(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Step::Index(wanted), rest)) = self.0.split_first() else {
            return Err(de::Error::custom("path expects an object here"));
        };
        for _ in 0..*wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Seek(rest)).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Step {
        Step::Key(name.to_owned())
    }

    #[test]
    fn locate_finds_the_start_of_nested_values_and_array_elements() {
        let text = "{\n  \"a\": { \"b\" :\n\t [1, \"x\"] },\n  \"c\": 2\n}";
        let at = |path: &[Step]| locate(text, path).map(|offset| line_column(text, offset));
        assert_eq!(at(&[]), Some((1, 1)));
        assert_eq!(at(&[key("a")]), Some((2, 8)));
        assert_eq!(at(&[key("a"), key("b")]), Some((3, 3)));
        assert_eq!(at(&[key("a"), key("b"), Step::Index(1)]), Some((3, 7)));
        assert_eq!(at(&[key("c")]), Some((4, 8)));
        assert_eq!(at(&[key("missing")]), None);
        assert_eq!(at(&[key("c"), key("deeper")]), None);
    }

    #[test]
    fn every_section_of_the_config_has_its_keys_listed() {
        for field in field_names::<Config>() {
            let errors = parse(&format!(r#"{{"{field}": {{"zzz": 1}}}}"#)).unwrap_err();
            let is_section = errors.iter().any(|error| error.key == format!("{field}.zzz"));
            let listed = !known_keys(&[key(field)]).is_empty();
            assert_eq!(is_section, listed, "section {field}: {errors}");
        }
        assert_eq!(
            field_names::<DashboardConfig>(),
            ["enabled", "host", "port", "token", "public_url"]
        );
    }

    #[test]
    fn suggestions_only_for_likely_typos() {
        let known = field_names::<MetricsConfig>();
        assert_eq!(closest("poll_intervall", known), Some("poll_interval"));
        assert_eq!(closest("enable", known), Some("enabled"));
        assert_eq!(closest("colour", known), None);
    }
}
