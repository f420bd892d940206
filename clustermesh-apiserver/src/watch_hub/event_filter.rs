use etcd_client::{EventType, WatchFilterType, proto::PbEvent};

/// etcd's `WatchCreateRequest.FilterType` values a watcher may ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct EventFilter {
    no_put: bool,
    no_delete: bool,
}

impl EventFilter {
    /// From `WatchCreateRequest.filters`; values etcd does not define are
    /// ignored, as etcd ignores them.
    pub(super) fn from_request(filters: &[i32]) -> Self {
        let has = |filter: WatchFilterType| filters.contains(&(filter as i32));
        Self {
            no_put: has(WatchFilterType::NoPut),
            no_delete: has(WatchFilterType::NoDelete),
        }
    }

    pub(super) fn is_empty(self) -> bool {
        !self.no_put && !self.no_delete
    }

    pub(super) fn passes(self, event: &PbEvent) -> bool {
        match EventType::try_from(event.r#type) {
            Ok(EventType::Put) => !self.no_put,
            Ok(EventType::Delete) => !self.no_delete,
            Err(_) => true,
        }
    }
}
