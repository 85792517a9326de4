//! Deriving a session's state at another level, for one read.

use std::time::Duration;

use super::SessionState;
use crate::config::Consistency;
use crate::core::Lsn;
use crate::core::NodeId;

/// A monotonic read-after-write session that wrote at 0/200 and read 0/300 on a replica.
fn wrote_and_read() -> std::sync::Arc<SessionState> {
    let s = SessionState::new(Consistency::ReadAfterWrite, true);
    s.wrote(Lsn(0x200));
    s.read_from(&NodeId::from("replica1"), Lsn(0x300));
    std::sync::Arc::new(s)
}

#[test]
fn the_same_level_is_the_session_itself() {
    let s = wrote_and_read();
    assert!(std::sync::Arc::ptr_eq(
        &SessionState::at_level(&s, Consistency::ReadAfterWrite),
        &s
    ));
}

#[test]
fn eventual_keeps_nothing() {
    let s = wrote_and_read();
    s.pin();
    let e = SessionState::at_level(&s, Consistency::Eventual);
    assert_eq!(
        (e.level, e.monotonic, e.min_lsn(), e.pinned()),
        (Consistency::Eventual, false, None, false)
    );
    assert!(e.sticky().is_none());
}

#[test]
fn stronger_levels_copy_what_the_session_recorded() {
    let s = wrote_and_read();
    let strong = SessionState::at_level(&s, Consistency::Strong);
    assert_eq!(strong.level, Consistency::Strong);
    let window = SessionState::at_level(&s, Consistency::WriteWindow(Duration::from_secs(60)));
    assert_eq!(window.watermark(), Some(Lsn(0x200)));
    assert!(window.since_last_write().is_some_and(|t| t < Duration::from_secs(60)));
    let raw = SessionState::at_level(
        &SessionState::at_level(&s, Consistency::Strong),
        Consistency::ReadAfterWrite,
    );
    assert_eq!(raw.min_lsn(), Some(Lsn(0x300)), "the floor of what it read");
    // The copy is for one read: reading through it leaves the source alone.
    raw.read_from(&NodeId::from("replica2"), Lsn(0x900));
    assert_eq!(s.causal_lsn(), Lsn(0x300));
}

#[test]
fn weaker_levels_never_go_behind_what_the_session_saw() {
    let s = wrote_and_read();
    let bounded = SessionState::at_level(&s, Consistency::BoundedStaleness(Duration::from_secs(5)));
    assert_eq!(bounded.min_lsn(), Some(Lsn(0x300)));
    // A window that has passed: the write no longer sends the read to the primary.
    let passed = SessionState::at_level(&s, Consistency::WriteWindow(Duration::ZERO));
    assert_eq!((passed.watermark(), passed.since_last_write()), (None, None));
    // The handle's own state is not monotonic: a copy of it has no floor either.
    let handle = std::sync::Arc::new(SessionState::new(Consistency::ReadAfterWrite, false));
    handle.wrote(Lsn(0x200));
    let bounded = SessionState::at_level(&handle, Consistency::BoundedStaleness(Duration::from_secs(5)));
    assert_eq!(bounded.min_lsn(), None);
}

#[test]
fn an_unknown_position_stays_on_the_primary() {
    let s = wrote_and_read();
    s.wrote_unknown();
    assert!(SessionState::at_level(&s, Consistency::BoundedStaleness(Duration::from_secs(5))).pinned());
    assert!(
        SessionState::at_level(&s, Consistency::ReadAfterWrite).pinned(),
        "same level: the session"
    );
}
