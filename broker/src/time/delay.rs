//! The delay engine (filled in next).
