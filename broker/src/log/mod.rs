//! Segmented log storage (filled in by the storage work).
