//! Placeholder: the console connector is being written.
