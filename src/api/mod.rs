//! The local control API.
