//! A transaction: the commands one `nft -f` run applies atomically (all of them, or none).

use std::fmt::{self, Display, Write as _};

use crate::model::{BaseChain, Collection, CollectionKind, Declare, Element, Rule, Table, Value};
use crate::render::{concat, Decl, Joined};
use crate::tables::FAMILY;

/// Elements per `add element` / `delete element` command.
pub const ELEMENTS_PER_COMMAND: usize = 500;

/// One command of a transaction. Every command names its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Replaces the whole table: declares it (so the delete is valid when it does not exist
    /// yet), deletes it and writes it anew, without a moment where it is missing.
    Replace(Table),
    /// Deletes a table; succeeds when it does not exist.
    DeleteTable {
        table: String,
    },
    /// Declares a table; nothing happens when it exists.
    AddTable {
        table: String,
    },
    FlushChain {
        table: String,
        chain: String,
    },
    /// Declares a base chain (type, hook, priority, policy); nothing happens when it exists
    /// with that declaration.
    AddBaseChain {
        table: String,
        chain: String,
        base: BaseChain,
    },
    /// Adds a regular chain.
    AddChain {
        table: String,
        chain: String,
    },
    DeleteChain {
        table: String,
        chain: String,
    },
    AddRule {
        table: String,
        chain: String,
        rule: Rule,
    },
    /// Declares a set or map (its elements are added by [`Op::AddElements`]).
    AddCollection {
        table: String,
        collection: Collection,
    },
    DeleteCollection {
        table: String,
        kind: CollectionKind,
        name: String,
    },
    AddElements {
        table: String,
        collection: String,
        elements: Vec<Element>,
    },
    /// Deletes elements by key.
    DeleteElements {
        table: String,
        collection: String,
        keys: Vec<Vec<Value>>,
    },
    /// Deletes every element of a set or map (`flush set` / `flush map`); followed by
    /// [`Op::AddElements`] in the same transaction, nothing outside ever sees it empty.
    FlushCollection {
        table: String,
        kind: CollectionKind,
        name: String,
    },
}

impl Op {
    pub fn table(&self) -> &str {
        match self {
            Op::Replace(t) => &t.name,
            Op::DeleteTable { table }
            | Op::AddTable { table }
            | Op::FlushChain { table, .. }
            | Op::AddBaseChain { table, .. }
            | Op::AddChain { table, .. }
            | Op::DeleteChain { table, .. }
            | Op::AddRule { table, .. }
            | Op::AddCollection { table, .. }
            | Op::DeleteCollection { table, .. }
            | Op::AddElements { table, .. }
            | Op::DeleteElements { table, .. }
            | Op::FlushCollection { table, .. } => table,
        }
    }
}

/// The commands one `nft -f` run applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    pub ops: Vec<Op>,
}

impl Transaction {
    pub fn new() -> Transaction {
        Transaction::default()
    }

    /// A transaction replacing `table` as a whole.
    pub fn replace(table: Table) -> Transaction {
        Transaction {
            ops: vec![Op::Replace(table)],
        }
    }

    /// A transaction deleting `table` if it exists.
    pub fn delete_table(table: &str) -> Transaction {
        Transaction {
            ops: vec![Op::DeleteTable {
                table: table.to_string(),
            }],
        }
    }

    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The tables this transaction touches, in first-mention order.
    pub fn tables(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for op in &self.ops {
            if !out.iter().any(|t| t == op.table()) {
                out.push(op.table().to_string());
            }
        }
        out
    }

    /// Elements this transaction adds (whole tables included).
    pub fn elements_added(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Replace(t) => t.element_count(),
                Op::AddElements { elements, .. } => elements.len(),
                _ => 0,
            })
            .sum()
    }

    pub fn elements_removed(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::DeleteElements { keys, .. } => keys.len(),
                _ => 0,
            })
            .sum()
    }

    /// The script `nft -f` reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for op in &self.ops {
            // Writing to a String cannot fail.
            let _ = write_op(&mut out, op);
        }
        out
    }
}

impl Display for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

fn kind_word(kind: CollectionKind) -> &'static str {
    match kind {
        CollectionKind::Set => "set",
        CollectionKind::Map => "map",
    }
}

fn write_op(out: &mut String, op: &Op) -> fmt::Result {
    match op {
        Op::Replace(table) => write_op_replace(out, table),
        Op::DeleteTable { table } => {
            writeln!(out, "add table {FAMILY} {table}")?;
            writeln!(out, "delete table {FAMILY} {table}")
        }
        Op::AddTable { table } => writeln!(out, "add table {FAMILY} {table}"),
        Op::FlushChain { table, chain } => writeln!(out, "flush chain {FAMILY} {table} {chain}"),
        Op::AddBaseChain { table, chain, base } => {
            writeln!(out, "add chain {FAMILY} {table} {chain} {{ {base} }}")
        }
        Op::AddChain { table, chain } => writeln!(out, "add chain {FAMILY} {table} {chain}"),
        Op::DeleteChain { table, chain } => writeln!(out, "delete chain {FAMILY} {table} {chain}"),
        Op::AddRule { table, chain, rule } => {
            writeln!(out, "add rule {FAMILY} {table} {chain} {rule}")
        }
        Op::AddCollection { table, collection } => writeln!(
            out,
            "add {} {FAMILY} {table} {} {{ {}; }}",
            kind_word(collection.kind()),
            collection.name,
            Decl(collection)
        ),
        Op::DeleteCollection { table, kind, name } => {
            writeln!(out, "delete {} {FAMILY} {table} {name}", kind_word(*kind))
        }
        Op::AddElements {
            table,
            collection,
            elements,
        } => {
            for chunk in elements.chunks(ELEMENTS_PER_COMMAND) {
                writeln!(
                    out,
                    "add element {FAMILY} {table} {collection} {{ {} }}",
                    Joined(chunk, ", ")
                )?;
            }
            Ok(())
        }
        Op::DeleteElements {
            table,
            collection,
            keys,
        } => {
            for chunk in keys.chunks(ELEMENTS_PER_COMMAND) {
                let keys: Vec<String> = chunk.iter().map(|k| concat(k).to_string()).collect();
                writeln!(
                    out,
                    "delete element {FAMILY} {table} {collection} {{ {} }}",
                    keys.join(", ")
                )?;
            }
            Ok(())
        }
        Op::FlushCollection { table, kind, name } => {
            writeln!(out, "flush {} {FAMILY} {table} {name}", kind_word(*kind))
        }
    }
}

impl Table {
    /// The script replacing this table in one transaction (what [`Op::Replace`] sends).
    pub fn full_sync_script(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = write_op_replace(&mut out, self);
        out
    }
}

fn write_op_replace(out: &mut String, table: &Table) -> fmt::Result {
    match table.style.declare {
        Declare::AddTable => writeln!(out, "add table {FAMILY} {}", table.name)?,
        Declare::EmptyBlock => writeln!(out, "table {FAMILY} {} {{}}", table.name)?,
    }
    writeln!(out, "delete table {FAMILY} {}", table.name)?;
    out.push_str(&table.render());
    Ok(())
}
