//! OVSDB client (placeholder during bootstrap).
