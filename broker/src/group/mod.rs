//! Group coordinator (filled in by the group work).
