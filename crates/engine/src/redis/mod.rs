//! Redis engine (in progress).
