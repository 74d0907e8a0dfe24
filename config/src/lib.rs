//! Config (placeholder during bootstrap).
