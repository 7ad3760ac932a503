//! End to end on a real cluster running the chart and `examples/` as real pods: the single
//! node `scripts/node.sh up` makes on this machine (the README's test command brings it up and
//! down), or kind (`e2e/kind.sh`). The cluster is found through `ARTSTORE_STACK` (the stack
//! file, default `target/artstore-node/stack.json`) and `KUBECONFIG` (default
//! `target/artstore-node/kubeconfig`); a missing cluster is a failure.
//!
//! Scenarios change shared resources (an element's mode, replicas, the operator), so they
//! run one at a time and each puts back what it changed.

mod files;
mod lifecycle;
mod maintenance;
mod resilience;
mod support;
