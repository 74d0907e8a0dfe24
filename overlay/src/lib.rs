//! Overlay domain (placeholder during bootstrap).
