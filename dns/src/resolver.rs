//! The table the socket loops share, swapped atomically when the cluster changes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::table::{Input, Table, TableOptions};

#[derive(Debug)]
pub struct Resolver {
    table: ArcSwap<Table>,
    rotation: AtomicUsize,
}

impl Resolver {
    pub fn new(table: Table) -> Self {
        Resolver {
            table: ArcSwap::from_pointee(table),
            rotation: AtomicUsize::new(0),
        }
    }

    /// Replaces the table; queries already being answered finish on the old one.
    pub fn swap(&self, table: Table) {
        self.table.store(Arc::new(table));
    }

    /// Builds a table from `input` and swaps it in; returns what was skipped, for logging.
    pub fn update(&self, input: &Input, options: TableOptions) -> Vec<String> {
        let table = Table::build(input, options);
        let skipped = table.skipped().to_vec();
        self.swap(table);
        skipped
    }

    /// Brings the table to `input` when it differs from the input the current table was built
    /// from only in the services named in `changed` (and their tasks): re-makes just their
    /// names, or builds the whole table when that cannot be exact. Returns what was skipped.
    pub fn update_changed(
        &self,
        input: &Input,
        options: TableOptions,
        changed: &BTreeSet<String>,
    ) -> Vec<String> {
        let table = match self.table.load().updated(input, options, changed) {
            Some(t) => t,
            None => Table::build(input, options),
        };
        let skipped = table.skipped().to_vec();
        self.swap(table);
        skipped
    }

    pub fn table(&self) -> Arc<Table> {
        self.table.load_full()
    }

    /// Runs `f` on the current table without taking a reference count.
    pub(crate) fn with_table<R>(&self, f: impl FnOnce(&Table) -> R) -> R {
        f(&self.table.load())
    }

    /// Next start offset for rotating multi-address answers.
    pub(crate) fn next_rotation(&self) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }
}

impl Default for Resolver {
    fn default() -> Self {
        Resolver::new(Table::empty(TableOptions::default()))
    }
}
