//! Integration tests against a real LocalCluster live in this package`s `[[test]]` targets.
