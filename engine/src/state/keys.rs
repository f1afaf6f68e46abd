//! The names of a run's parts in its checkpoints, made from what each part computes rather
//! than where it sits in the plan, so that a checkpoint outlives edits to the pipeline.
//!
//! A stateful node's key is a hash of its definition and, recursively, of its inputs'
//! (a Merkle hash): editing one view changes the keys of that view's nodes and of everything
//! downstream of it, and of nothing else. Adding a view, reordering statements or changing a
//! stateless sink leaves every other key as it was. Sources, tables and sinks are keyed by
//! name and by their own statement, so a source pointed at another file does not resume from
//! the old file's offset. A part that is kept per worker adds `/<worker>` to its key.
//!
//! Each key also gets a description for people, stored with the checkpoint, so that a restart
//! can name the state an edit would drop.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use vibelux_queries::plan::{DataflowPlan, NodeId, NodeKind};

/// Every key a run's parts use, and what each holds.
#[derive(Debug, Clone, Default)]
pub struct StateKeys {
    nodes: Vec<String>,
    sources: Vec<String>,
    tables: Vec<String>,
    sinks: Vec<String>,
    /// Per materialized view (by its name): the key of its live contents.
    views: BTreeMap<String, String>,
    /// Each key (without a worker) of this run, and what it holds.
    described: BTreeMap<String, String>,
    /// Each key (without a worker), with the part of the dataflow it is in: parts that never
    /// exchange data are cut at their own times.
    groups: HashMap<String, usize>,
}

fn hash(text: &str) -> String {
    // xxHash64 is specified: the same definition gives the same key in every build.
    format!("{:016x}", twox_hash::XxHash64::oneshot(0, text.as_bytes()))
}

impl StateKeys {
    /// The keys of a run that builds `order` and reads `sources` and `tables`.
    pub fn new(plan: &DataflowPlan, order: &[NodeId], sources: &[usize], tables: &[usize]) -> Self {
        let mut identities: Vec<String> = Vec::with_capacity(plan.nodes.len());
        // Inputs always have smaller ids, so theirs are known when a node's is made.
        for node in 0..plan.nodes.len() {
            let inputs: Vec<&str> = plan.nodes[node]
                .kind
                .inputs()
                .iter()
                .map(|input| identities[*input].as_str())
                .collect();
            identities.push(hash(&format!(
                "{} <- [{}]",
                plan.node_definition(node),
                inputs.join(", ")
            )));
        }
        let owners = owners(plan);
        let mut keys = StateKeys {
            nodes: identities
                .iter()
                .map(|identity| format!("node/{identity}"))
                .collect(),
            sources: plan
                .sources
                .iter()
                .map(|source| format!("source/{}/{}", source.name, hash(&source.definition)))
                .collect(),
            tables: plan
                .tables
                .iter()
                .map(|table| format!("table/{}/{}", table.name, hash(&table.definition)))
                .collect(),
            sinks: plan
                .sinks
                .iter()
                .map(|sink| format!("sink/{}/{}", sink.name, hash(&sink.definition)))
                .collect(),
            views: plan
                .materialized
                .iter()
                .map(|(name, node)| (name.clone(), format!("view/{name}/{}", identities[*node])))
                .collect(),
            described: BTreeMap::new(),
            groups: HashMap::new(),
        };
        for &node in order {
            if let Some(what) = stateful(plan, node, &owners) {
                keys.described.insert(keys.nodes[node].clone(), what);
            }
        }
        let component = components(plan);
        for &node in order {
            let NodeKind::Join {
                left,
                right,
                key_columns,
                outer,
                expiry: None,
            } = plan.nodes[node].kind
            else {
                continue;
            };
            let of = owners_named(&owners, node);
            keys.described.insert(
                keys.join_marks(node),
                format!("the mark that the join of {of} was checkpointed"),
            );
            keys.groups.insert(keys.join_marks(node), component[node]);
            for input in [left, right] {
                let key = keys.arrangements(input, key_columns, outer.nulls_match);
                keys.described
                    .entry(key.clone())
                    .and_modify(|what| what.push_str(&format!(", {of}")))
                    .or_insert(format!("the rows arranged by join key for {of}"));
                keys.groups.insert(key, component[input]);
            }
        }
        for &source in sources {
            let name = &plan.sources[source].name;
            keys.described
                .insert(keys.sources[source].clone(), format!("source {name}"));
        }
        for &table in tables {
            let name = &plan.tables[table].name;
            keys.described
                .insert(keys.tables[table].clone(), format!("table {name}"));
        }
        for (sink, plan_sink) in plan.sinks.iter().enumerate() {
            keys.described
                .insert(keys.sinks[sink].clone(), format!("sink {}", plan_sink.name));
        }
        for (name, key) in &keys.views {
            keys.described.insert(
                key.clone(),
                format!("the live contents of materialized view {name}"),
            );
        }
        for (node, key) in keys.nodes.iter().enumerate() {
            keys.groups.insert(key.clone(), component[node]);
        }
        for (node, plan_node) in plan.nodes.iter().enumerate() {
            match plan_node.kind {
                NodeKind::SourceRows { source } => {
                    keys.groups
                        .insert(keys.sources[source].clone(), component[node]);
                }
                NodeKind::TableChanges { table } => {
                    keys.groups
                        .insert(keys.tables[table].clone(), component[node]);
                }
                _ => {}
            }
        }
        for (sink, plan_sink) in plan.sinks.iter().enumerate() {
            keys.groups
                .insert(keys.sinks[sink].clone(), component[plan_sink.node]);
        }
        for (name, node) in &plan.materialized {
            keys.groups
                .insert(keys.views[name].clone(), component[*node]);
        }
        keys
    }

    /// Each key (without a worker) with its group (see [`Checkpoints::set_groups`]).
    ///
    /// [`Checkpoints::set_groups`]: vibelux_interfaces::checkpoint::Checkpoints::set_groups
    pub fn groups(&self) -> HashMap<String, usize> {
        self.groups.clone()
    }

    /// A stateful node's part on one worker.
    pub fn node(&self, node: NodeId, worker: usize) -> String {
        format!("{}/{worker}", self.nodes[node])
    }

    /// The part of a join's arrangement of `input` by its first `key_columns` columns, on one
    /// worker: named by what it holds, so every join reading the same rows by the same key
    /// shares it.
    pub fn arrangement(
        &self,
        input: NodeId,
        key_columns: usize,
        nulls_match: bool,
        worker: usize,
    ) -> String {
        format!(
            "{}/{worker}",
            self.arrangements(input, key_columns, nulls_match)
        )
    }

    fn arrangements(&self, input: NodeId, key_columns: usize, nulls_match: bool) -> String {
        let nulls = if nulls_match { " matching NULLs" } else { "" };
        let arranged = format!("{} by {key_columns}{nulls}", self.nodes[input]);
        format!("arrangement/{}", hash(&arranged))
    }

    /// The part by which a join on arrangements marks that it was checkpointed, on one worker.
    pub fn join_mark(&self, node: NodeId, worker: usize) -> String {
        format!("{}/{worker}", self.join_marks(node))
    }

    fn join_marks(&self, node: NodeId) -> String {
        self.nodes[node].replacen("node/", "join/", 1)
    }

    /// A source's part on one worker.
    pub fn source(&self, source: usize, worker: usize) -> String {
        format!("{}/{worker}", self.sources[source])
    }

    /// A table's part (worker 0 reads tables).
    pub fn table(&self, table: usize) -> String {
        self.tables[table].clone()
    }

    /// The part of a sink's first (or only) writer.
    pub fn sink(&self, sink: usize) -> String {
        self.sinks[sink].clone()
    }

    /// The part of one of a sink's writers, when it has several (a warehouse's, one per
    /// worker): the first keeps the sink's own key.
    pub fn sink_writer(&self, sink: usize, writer: usize) -> String {
        match writer {
            0 => self.sinks[sink].clone(),
            _ => format!("{}/{writer}", self.sinks[sink]),
        }
    }

    /// The part holding a materialized view's contents.
    pub fn view(&self, name: &str) -> String {
        self.views[name].clone()
    }

    /// These keys and one more part, as another build might have named its state.
    #[cfg(test)]
    pub fn with_part(mut self, key: &str, what: &str) -> Self {
        self.described.insert(key.to_string(), what.to_string());
        self
    }

    /// Every key of this run (without workers), and what it holds.
    pub fn described(&self) -> &BTreeMap<String, String> {
        &self.described
    }

    /// Whether a stored part (with or without a worker) belongs to one of this run's keys.
    pub fn covers(&self, part: &str) -> bool {
        self.key_of(part).is_some()
    }

    /// The run's key a stored part belongs to.
    pub fn key_of<'a>(&'a self, part: &str) -> Option<&'a str> {
        let key = match part.rsplit_once('/') {
            Some((key, worker)) if worker.bytes().all(|b| b.is_ascii_digit()) => {
                if self.described.contains_key(key) {
                    key
                } else {
                    part
                }
            }
            _ => part,
        };
        self.described
            .get_key_value(key)
            .map(|(key, _)| key.as_str())
    }
}

/// What a stateful node holds, for people; `None` for a node that keeps no state.
fn stateful(
    plan: &DataflowPlan,
    node: NodeId,
    owners: &BTreeMap<NodeId, BTreeSet<String>>,
) -> Option<String> {
    let what = match &plan.nodes[node].kind {
        NodeKind::RaiseAlarms { spec, .. } => {
            return Some(format!(
                "alarm {} (its instances, acknowledgements and shelves)",
                spec.name
            ));
        }
        NodeKind::Aggregate {
            plan: aggregate, ..
        } if aggregate.window.is_some() => "the open windows",
        NodeKind::Aggregate { .. } => "the groups",
        // A join on arrangements keeps its rows in them (see `StateKeys::arrangement`).
        NodeKind::Join {
            expiry: Some(_), ..
        } => "the join state (rows within the interval)",
        NodeKind::AsOfJoin { .. } => "the versions and the rows waiting for them (as-of join)",
        NodeKind::TopN { .. } => "the rows of each group, in order (TOP-N)",
        NodeKind::ScoreAnomalies { .. } => "the detectors' learning",
        NodeKind::Analytic { .. } => "the window functions' series (LAG, running aggregates)",
        NodeKind::TemporalFilter { .. } => "the rows within the temporal filter",
        _ => return None,
    };
    Some(format!("{what} of {}", owners_named(owners, node)))
}

/// The views and sinks a node feeds, for people.
fn owners_named(owners: &BTreeMap<NodeId, BTreeSet<String>>, node: NodeId) -> String {
    let names: Vec<&str> = owners
        .get(&node)
        .map(|names| names.iter().map(String::as_str).collect())
        .unwrap_or_default();
    names.join(" and ")
}

/// The connected parts of the plan, numbered from 0 per node: nodes joined by an input, and
/// the outputs of one source (its rows, dead letters, late rows, health) or one table.
fn components(plan: &DataflowPlan) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..plan.nodes.len()).collect();
    fn root(parent: &mut [usize], mut node: usize) -> usize {
        while parent[node] != node {
            parent[node] = parent[parent[node]];
            node = parent[node];
        }
        node
    }
    let mut first_of_input: HashMap<(bool, usize), usize> = HashMap::new();
    for (node, plan_node) in plan.nodes.iter().enumerate() {
        let mut joined = plan_node.kind.inputs();
        let input = match plan_node.kind {
            NodeKind::SourceRows { source }
            | NodeKind::SourceDeadLetters { source }
            | NodeKind::SourceLateRows { source }
            | NodeKind::SourceHealth { source } => Some((true, source)),
            NodeKind::TableChanges { table } | NodeKind::TableDeadLetters { table } => {
                Some((false, table))
            }
            _ => None,
        };
        if let Some(input) = input {
            joined.push(*first_of_input.entry(input).or_insert(node));
        }
        for other in joined {
            let (a, b) = (root(&mut parent, node), root(&mut parent, other));
            parent[a] = b;
        }
    }
    let mut numbers: HashMap<usize, usize> = HashMap::new();
    (0..plan.nodes.len())
        .map(|node| {
            let top = root(&mut parent, node);
            let next = numbers.len();
            *numbers.entry(top).or_insert(next)
        })
        .collect()
}

/// The materialized views and sinks each node feeds, by name.
fn owners(plan: &DataflowPlan) -> BTreeMap<NodeId, BTreeSet<String>> {
    let mut roots: Vec<(String, NodeId)> = plan
        .materialized
        .iter()
        .map(|(name, node)| (format!("view {name}"), *node))
        .collect();
    roots.extend(
        plan.sinks
            .iter()
            .map(|sink| (format!("sink {}", sink.name), sink.node)),
    );
    let mut owners: BTreeMap<NodeId, BTreeSet<String>> = BTreeMap::new();
    for (name, root) in roots {
        let mut stack = vec![root];
        let mut seen = BTreeSet::new();
        while let Some(node) = stack.pop() {
            if seen.insert(node) {
                owners.entry(node).or_default().insert(name.clone());
                stack.extend(plan.nodes[node].kind.inputs());
            }
        }
    }
    owners
}
