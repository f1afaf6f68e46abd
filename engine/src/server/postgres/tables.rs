//! What a query over the Postgres port can read: the live views, as of the moment it runs, and
//! the warehouse tables the pipeline's Parquet sinks write.
//!
//! Tables are resolved by name when a query names them, not listed up front: a query over one
//! view copies that view's contents only, and a warehouse folder is listed only when read. A
//! live view shadows a warehouse table of the same name in the default schema (`public`);
//! `warehouse.NAME` always reads the warehouse.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::prelude::SessionContext;
use vibelux_operators::columnar::rows_to_batch;

use crate::live::view::{LiveView, LiveViews};
use crate::warehouse::{session_config, table_provider};

/// The schema of live views (and, where no view has the name, warehouse tables).
#[derive(Debug)]
struct LiveSchema {
    views: LiveViews,
    warehouse: Arc<WarehouseSchema>,
}

/// The schema of warehouse tables.
#[derive(Debug)]
struct WarehouseSchema {
    tables: Vec<(String, PathBuf)>,
    /// A session to read folders with (listing and footers), apart from the query's own.
    state: SessionState,
}

/// The current contents of `view` as a table.
fn snapshot_table(view: &LiveView) -> Result<Arc<dyn TableProvider>> {
    let snapshot = view.snapshot();
    let rows = snapshot
        .rows
        .iter()
        .flat_map(|(row, count)| std::iter::repeat_n(row, (*count).max(0) as usize));
    let count = rows.clone().count();
    let batch = rows_to_batch(&view.schema, rows, count)?;
    Ok(Arc::new(MemTable::try_new(
        view.schema.clone(),
        vec![vec![batch]],
    )?))
}

#[async_trait]
impl SchemaProvider for LiveSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.views.all().iter().map(|v| v.name.clone()).collect();
        for name in self.warehouse.table_names() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        match self.views.get(name) {
            Some(view) => snapshot_table(&view).map(Some),
            None => self.warehouse.table(name).await,
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.views.get(name).is_some() || self.warehouse.table_exist(name)
    }
}

#[async_trait]
impl SchemaProvider for WarehouseSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|(name, _)| name.clone()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some((_, folder)) = self.tables.iter().find(|(table, _)| table == name) else {
            return Ok(None);
        };
        if !folder.exists() {
            // The sink has not committed its first file yet: an empty table is not known.
            return Err(DataFusionError::Plan(format!(
                "warehouse table `{name}` has no data yet ({} does not exist)",
                folder.display()
            )));
        }
        let (provider, _) = table_provider(&self.state, folder)
            .await
            .map_err(|error| DataFusionError::External(error.into()))?;
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|(table, _)| table == name)
    }
}

impl std::fmt::Debug for LiveViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.all().iter().map(|view| &view.name))
            .finish()
    }
}

/// A session whose default schema holds the live views and warehouse tables, and whose
/// `warehouse` schema holds the warehouse tables.
pub fn session(views: LiveViews, warehouse: Vec<(String, PathBuf)>) -> Result<SessionContext> {
    let config = session_config()
        .with_information_schema(true)
        .with_default_catalog_and_schema("vibelux", "public");
    let context = SessionContext::new_with_config(config);
    vibelux_queries::context::register_query_functions(&context);
    let warehouse = Arc::new(WarehouseSchema {
        tables: warehouse,
        state: context.state(),
    });
    let catalog = context
        .catalog("vibelux")
        .ok_or_else(|| DataFusionError::Plan("no default catalog".into()))?;
    catalog.register_schema(
        "public",
        Arc::new(LiveSchema {
            views,
            warehouse: warehouse.clone(),
        }),
    )?;
    catalog.register_schema("warehouse", warehouse)?;
    // Postgres clients look for `pg_catalog`; an empty one says "nothing there" rather than
    // "no such schema".
    catalog.register_schema("pg_catalog", Arc::new(MemorySchemaProvider::new()))?;
    Ok(context)
}
