//! What a table holds, and what each record read does to it.
//!
//! Rows are kept by primary key. An upsert replaces its key's row; a deletion (a Kafka
//! tombstone, a Debezium delete) removes its key's row whatever it holds; a retraction (a row a
//! change log marks `_op = 'delete'`, as Vibelux's own sinks write a view's changes) removes the
//! row only if it is the one held. A change log may write a key's new row before it retracts the
//! old one; a deletion by key would then remove the new row, which the comparison leaves alone.
//!
//! While the table's first load, or a replaced file, is read, records go to a second map,
//! applied as one difference once the input is read to its end.

use std::collections::HashMap;

use vibelux_operators::row::{Datum, Row, Update};

/// Where a table's input rows keep their key, and the change-log column its reader fills.
#[derive(Debug, Clone)]
pub struct TableColumns {
    pub key: Vec<usize>,
    /// The key columns' names, for dead letters.
    pub key_names: Vec<String>,
    /// The `_op` field of change logs, read after the table's own columns (not one of them).
    pub op: Option<usize>,
}

/// What an input row asks of the table.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    Upsert(Row),
    Retract(Row),
}

impl TableColumns {
    /// The key of a row the reader checked has one.
    pub fn key_of(&self, row: &Row) -> Row {
        self.key.iter().map(|&column| row[column].clone()).collect()
    }

    /// The key of a deletion, which may lack one: then it says which column.
    pub fn deletion_key(&self, row: &Row) -> Result<Row, String> {
        self.key
            .iter()
            .zip(&self.key_names)
            .map(|(&column, name)| match row.get(column) {
                Some(value) if !value.is_null() => Ok(value.clone()),
                _ => Err(format!(
                    "the deletion has no value for the key column `{name}`: a table deletes \
                     by its primary key"
                )),
            })
            .collect()
    }

    /// What `row` asks, by its `_op` (absent: an upsert), with the `_op` taken off; else why
    /// not, and the row as text for its dead letter.
    pub fn edit(&self, mut row: Row) -> Result<Edit, (String, String)> {
        let Some(op) = self.op else {
            return Ok(Edit::Upsert(row));
        };
        let marked = row.get(op).cloned().unwrap_or(Datum::Null);
        row.truncate(op);
        match &marked {
            // An empty CSV cell says nothing either.
            Datum::Null => Ok(Edit::Upsert(row)),
            Datum::Utf8(text) if text.is_empty() => Ok(Edit::Upsert(row)),
            Datum::Utf8(text) if text.eq_ignore_ascii_case("insert") => Ok(Edit::Upsert(row)),
            Datum::Utf8(text) if text.eq_ignore_ascii_case("delete") => Ok(Edit::Retract(row)),
            other => {
                let raw = row
                    .iter()
                    .chain([other])
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                Err((
                    format!(
                        "field `_op`: expected 'insert' or 'delete', found {:?}",
                        other.to_string()
                    ),
                    raw,
                ))
            }
        }
    }
}

/// A table's rows by key, and the load being read.
#[derive(Debug, Default)]
pub struct TableContents {
    pub current: HashMap<Row, Row>,
    /// The first load, or a replaced file's content, until read to its end.
    pub loading: Option<HashMap<Row, Row>>,
}

impl TableContents {
    /// A table about to read its first load.
    pub fn first_load() -> Self {
        TableContents {
            current: HashMap::new(),
            loading: Some(HashMap::new()),
        }
    }

    /// The input was replaced: what follows, to its end, is its whole content.
    pub fn reload(&mut self) {
        self.loading = Some(HashMap::new());
    }

    pub fn upsert(&mut self, key: Row, row: Row, time: u64, updates: &mut Vec<Update>) {
        if let Some(loading) = self.loading.as_mut() {
            loading.insert(key, row);
            return;
        }
        if self.current.get(&key) == Some(&row) {
            return;
        }
        if let Some(old) = self.current.insert(key, row.clone()) {
            updates.push((old, time, -1));
        }
        updates.push((row, time, 1));
    }

    pub fn delete(&mut self, key: &Row, time: u64, updates: &mut Vec<Update>) {
        match self.loading.as_mut() {
            Some(loading) => {
                loading.remove(key);
            }
            None => {
                if let Some(old) = self.current.remove(key) {
                    updates.push((old, time, -1));
                }
            }
        }
    }

    /// Removes `row` if it is the row its key holds.
    pub fn retract(&mut self, key: &Row, row: &Row, time: u64, updates: &mut Vec<Update>) {
        let held = self.loading.as_mut().unwrap_or(&mut self.current);
        if held.get(key) != Some(row) {
            return;
        }
        held.remove(key);
        if self.loading.is_none() {
            updates.push((row.clone(), time, -1));
        }
    }

    /// The load has been read to its end: turns the table into it, appending the updates that
    /// do it — deletes for rows whose key is gone, a delete and an insert for changed rows,
    /// inserts for new keys.
    /// Returns the rows the table holds when a load was applied.
    pub fn finish_loading(&mut self, time: u64, updates: &mut Vec<Update>) -> Option<usize> {
        let next = self.loading.take()?;
        for (key, old) in &self.current {
            match next.get(key) {
                Some(new) if new == old => {}
                Some(_) | None => updates.push((old.clone(), time, -1)),
            }
        }
        for (key, new) in &next {
            if self.current.get(key) != Some(new) {
                updates.push((new.clone(), time, 1));
            }
        }
        self.current = next;
        Some(self.current.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: f64) -> Row {
        vec![Datum::Utf8(key.into()), Datum::Float64(value)]
    }

    fn key(name: &str) -> Row {
        vec![Datum::Utf8(name.into())]
    }

    fn loaded(rows: &[Row]) -> TableContents {
        let mut contents = TableContents::first_load();
        for row in rows {
            contents.upsert(vec![row[0].clone()], row.clone(), 0, &mut Vec::new());
        }
        contents.finish_loading(0, &mut Vec::new());
        contents
    }

    fn sorted(mut updates: Vec<Update>) -> Vec<Update> {
        updates.sort_by(|x, y| (x.2, &x.0).cmp(&(y.2, &y.0)));
        updates
    }

    #[test]
    fn a_replaced_file_upserts_new_and_changed_rows_and_deletes_the_rest() {
        let mut contents = loaded(&[row("a", 1.0), row("b", 2.0), row("c", 3.0)]);
        contents.reload();
        let mut updates = Vec::new();
        for new in [row("a", 1.0), row("b", 20.0), row("d", 4.0)] {
            contents.upsert(vec![new[0].clone()], new, 7, &mut updates);
        }
        assert!(updates.is_empty(), "nothing applies while the file is read");
        contents.finish_loading(7, &mut updates);
        assert_eq!(
            sorted(updates),
            vec![
                (row("b", 2.0), 7, -1),
                (row("c", 3.0), 7, -1),
                (row("b", 20.0), 7, 1),
                (row("d", 4.0), 7, 1),
            ]
        );
        assert_eq!(contents.current.len(), 3);
    }

    #[test]
    fn a_first_load_applies_once_with_what_its_later_records_deleted_left_out() {
        let mut contents = TableContents::first_load();
        let mut updates = Vec::new();
        contents.upsert(key("a"), row("a", 1.0), 5, &mut updates);
        contents.upsert(key("b"), row("b", 2.0), 5, &mut updates);
        contents.delete(&key("a"), 5, &mut updates);
        contents.upsert(key("b"), row("b", 3.0), 5, &mut updates);
        contents.retract(&key("b"), &row("b", 2.0), 5, &mut updates);
        assert!(updates.is_empty());
        contents.finish_loading(5, &mut updates);
        assert_eq!(updates, vec![(row("b", 3.0), 5, 1)]);
    }

    #[test]
    fn a_deletion_removes_its_keys_row_and_a_retraction_only_the_row_it_names() {
        let mut contents = loaded(&[row("a", 1.0), row("b", 2.0)]);
        let mut updates = Vec::new();
        contents.delete(&key("a"), 9, &mut updates);
        contents.delete(&key("zz"), 9, &mut updates);
        // A change log wrote b's new row before retracting the old one.
        contents.upsert(key("b"), row("b", 5.0), 9, &mut updates);
        contents.retract(&key("b"), &row("b", 2.0), 9, &mut updates);
        assert_eq!(
            updates,
            vec![
                (row("a", 1.0), 9, -1),
                (row("b", 2.0), 9, -1),
                (row("b", 5.0), 9, 1),
            ]
        );
        contents.retract(&key("b"), &row("b", 5.0), 10, &mut updates);
        assert_eq!(updates.last(), Some(&(row("b", 5.0), 10, -1)));
        assert!(contents.current.is_empty());
    }

    #[test]
    fn a_change_logs_op_says_upsert_or_retract_and_is_not_a_column() {
        let columns = TableColumns {
            key: vec![0],
            key_names: vec!["zone".into()],
            op: Some(2),
        };
        let with_op = |op: Datum| vec![Datum::Utf8("z1".into()), Datum::Float64(1.0), op];
        assert_eq!(
            columns.edit(with_op(Datum::Utf8("insert".into()))),
            Ok(Edit::Upsert(row("z1", 1.0)))
        );
        assert_eq!(
            columns.edit(with_op(Datum::Null)),
            Ok(Edit::Upsert(row("z1", 1.0)))
        );
        assert_eq!(
            columns.edit(with_op(Datum::Utf8("DELETE".into()))),
            Ok(Edit::Retract(row("z1", 1.0)))
        );
        assert_eq!(
            columns.edit(with_op(Datum::Utf8("upsert".into()))),
            Err((
                "field `_op`: expected 'insert' or 'delete', found \"upsert\"".into(),
                "z1, 1, upsert".into()
            ))
        );
        assert_eq!(
            columns.deletion_key(&vec![Datum::Null, Datum::Float64(1.0), Datum::Null]),
            Err(
                "the deletion has no value for the key column `zone`: a table deletes by its \
                 primary key"
                    .into()
            )
        );
    }
}
