//! The conformance suite (`baton_store::testing`) run against the stores of this crate.
//! The SQL backends run the same suite from `tests/sqlite.rs` and `tests/postgres.rs`.

#![allow(clippy::unwrap_used)]

use baton_store::testing;
use baton_store::{MemoryStore, NullStore};

mod memory {
    use super::*;

    #[tokio::test]
    async fn full_suite() {
        testing::conformance(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn full_suite_twice_on_one_store() {
        // The suite only looks at its own runs, so a store that is not empty passes too.
        let store = MemoryStore::new();
        testing::conformance(&store).await;
        testing::conformance(&store).await;
    }

    #[tokio::test]
    async fn create_and_read() {
        testing::create_and_read(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn already_exists() {
        testing::create_twice(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn not_found() {
        testing::not_found(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn append_ordering() {
        testing::append_ordering(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn events_from_offset() {
        testing::events_from_offset(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn status_change() {
        testing::status_change(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn runs_newest_first_and_filtered() {
        testing::runs_newest_first_and_filtered(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn every_event_kind() {
        testing::every_event_kind(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn prune_retention() {
        testing::prune_retention(&MemoryStore::new()).await;
    }
}

mod null {
    use super::*;

    #[tokio::test]
    async fn suite_without_events() {
        testing::conformance_without_events(&NullStore::new()).await;
    }

    #[tokio::test]
    async fn suite_without_events_twice_on_one_store() {
        let store = NullStore::new();
        testing::conformance_without_events(&store).await;
        testing::conformance_without_events(&store).await;
    }

    #[tokio::test]
    async fn append_ordering() {
        testing::append_ordering(&NullStore::new()).await;
    }

    #[tokio::test]
    async fn not_found() {
        testing::not_found(&NullStore::new()).await;
    }

    #[tokio::test]
    async fn already_exists() {
        testing::create_twice(&NullStore::new()).await;
    }

    #[tokio::test]
    async fn status_change() {
        testing::status_change(&NullStore::new()).await;
    }

    #[tokio::test]
    async fn runs_newest_first_and_filtered() {
        testing::runs_newest_first_and_filtered(&NullStore::new()).await;
    }
}
