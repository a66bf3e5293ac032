//! Checks against this machine: the folders and files the configuration names.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// Every problem with the paths of `config`, each naming its key and the absolute path.
pub(super) fn check(config: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let plugin_dir = absolute(&config.plugin_dir);
    match std::fs::metadata(&plugin_dir) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => errors.push(ConfigError::new(
            "plugin_dir",
            format!("{} is not a directory", plugin_dir.display()),
        )),
        Err(error) if error.kind() == io::ErrorKind::NotFound => errors.push(ConfigError::new(
            "plugin_dir",
            format!("{} does not exist", plugin_dir.display()),
        )),
        Err(error) => errors.push(ConfigError::new(
            "plugin_dir",
            format!("cannot read {}: {error}", plugin_dir.display()),
        )),
    }
    errors.extend(super::nats::check_files(config, absolute));
    if let Some(file) = &config.logging.file {
        let file = absolute(file);
        if let Err(error) = check_appendable(&file) {
            errors.push(ConfigError::new(
                "logging.file",
                format!("cannot open {} for append: {error}", file.display()),
            ));
        }
    }
    errors
}

/// The path made absolute against the working directory, for messages that say exactly which
/// folder was meant; the path as given when the working directory is unknown.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// Opens `file` for append the way the log writer will, creating its folder if missing. A file
/// this check had to create is removed again, so checking leaves no empty log behind.
fn check_appendable(file: &Path) -> io::Result<()> {
    if let Some(dir) = file.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match OpenOptions::new().append(true).create_new(true).open(file) {
        Ok(created) => {
            drop(created);
            std::fs::remove_file(file)
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(file).map(drop)
        }
        Err(error) => Err(error),
    }
}
