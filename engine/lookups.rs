//! Lookup tables: configuration properties, email lists and domain value maps.
//!
//! A lookup is rows of columns keyed by the first column ([`crate::model::RawLookup`]). A
//! flow names the lookups it uses and the template function that reaches each
//! (`lookups: {config: MyConfig}` → `config('key')`). A two-column table answers with its
//! second column; a domain value map with more columns answers with the column named by the
//! second argument (`status_map(code, 'DACS')`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::yaml::{Pos, SourceDoc};

/// One loaded lookup table.
#[derive(Debug)]
pub struct Lookup {
    /// The table's name.
    pub name: String,
    /// Column names; the first is the key.
    pub columns: Vec<String>,
    rows: Vec<Vec<String>>,
    index: HashMap<String, usize>,
    /// Where each key stands in its file, for diagnostics.
    pub key_pos: HashMap<String, Pos>,
    /// The file it came from.
    pub source: Option<Arc<SourceDoc>>,
}

/// What a lookup call can get wrong.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The key is not in the table.
    #[error("lookup {table} has no key '{key}'")]
    NoKey {
        /// Table name.
        table: String,
        /// The missing key.
        key: String,
    },
    /// The column is not in the table.
    #[error("lookup {table} has no column '{column}' (columns: {columns})")]
    NoColumn {
        /// Table name.
        table: String,
        /// The missing column.
        column: String,
        /// The columns it has.
        columns: String,
    },
}

impl Lookup {
    /// Builds a table from its rows (rows shorter than the header are padded with "").
    pub fn new(name: String, columns: Vec<String>, rows: Vec<Vec<String>>) -> Lookup {
        let index = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.first().map(|k| (k.clone(), i)))
            .collect();
        Lookup {
            name,
            columns,
            rows,
            index,
            key_pos: HashMap::new(),
            source: None,
        }
    }

    /// The value of `key` in `column` (the second column when `None`).
    pub fn get(&self, key: &str, column: Option<&str>) -> Result<&str, LookupError> {
        let col =
            match column {
                None => 1,
                Some(c) => self.columns.iter().position(|x| x == c).ok_or_else(|| {
                    LookupError::NoColumn {
                        table: self.name.clone(),
                        column: c.to_string(),
                        columns: self.columns.join(", "),
                    }
                })?,
            };
        let row = self.index.get(key).ok_or_else(|| LookupError::NoKey {
            table: self.name.clone(),
            key: key.to_string(),
        })?;
        Ok(self.rows[*row].get(col).map(String::as_str).unwrap_or(""))
    }

    /// Whether the table holds `key`.
    pub fn has_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// All keys, in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.rows
            .iter()
            .filter_map(|r| r.first().map(String::as_str))
    }
}

/// All lookup tables of a project, by name.
#[derive(Debug, Default)]
pub struct Lookups {
    /// Tables by name.
    pub tables: BTreeMap<String, Arc<Lookup>>,
}

impl Lookups {
    /// The table called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Lookup>> {
        self.tables.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_column_and_dvm_lookups() {
        let t = Lookup::new(
            "status".into(),
            vec!["A".into(), "B".into(), "C".into()],
            vec![vec!["x".into(), "bx".into(), "cx".into()]],
        );
        assert_eq!(t.get("x", None).unwrap(), "bx");
        assert_eq!(t.get("x", Some("C")).unwrap(), "cx");
        assert!(matches!(t.get("y", None), Err(LookupError::NoKey { .. })));
        assert!(matches!(
            t.get("x", Some("D")),
            Err(LookupError::NoColumn { .. })
        ));
    }
}
