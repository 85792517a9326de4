//! Derive macros for covet-replication (the `Model` derive lands with the ORM issue).
