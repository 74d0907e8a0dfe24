//! Test fixtures (placeholder during bootstrap).
