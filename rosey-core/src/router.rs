//! Placeholder: the router is being written.
