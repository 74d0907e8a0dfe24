//! Multi-host tests live in `tests/`; this library holds helpers shared between them.
