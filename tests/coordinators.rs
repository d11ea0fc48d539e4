//! The coordinator group through real processes: three coordinators formed with `--peers`,
//! shard nodes that know all of them, and faults by kill -9.
//!
//! Specification: any coordinator takes any call; a linearizable read sees every change
//! acknowledged before it; killing the leader loses no acknowledged catalog change and
//! clients meanwhile see only retryable errors; coordinators join and leave through
//! AddCoordinator and RemoveCoordinator; schema growth through two coordinators at once keeps
//! every column; a coordinator that lags the leader (just restarted) catches up before it
//! answers NOT_FOUND; a coordinator of another group that binds a dead member's address
//! takes no part in the group whose messages reach it.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use common::group::*;
use common::replicas::{start_node, Node};
use common::*;
use serde_json::json;

const DIM: usize = 4;

fn some_rows(lo: u64, hi: u64) -> RecordBatch {
    let ids: Vec<u64> = (lo..hi).collect();
    let data: Vec<f32> = ids
        .iter()
        .flat_map(|i| (0..DIM).map(move |d| (*i as f32) + d as f32 * 0.25))
        .collect();
    rows(&ids, &data, DIM)
}

/// A group of three and `nodes` shard nodes that know every coordinator, all live.
async fn cluster(dir: &std::path::Path, nodes: usize) -> (Vec<Member>, Vec<Node>) {
    let group = start_group(dir, 3, &[]);
    wait_leader(&group, 3).await;
    let list = internal_list(&group);
    let shards: Vec<Node> = (0..nodes)
        .map(|i| start_node(&dir.join(format!("shard-{i}")), &list))
        .collect();
    for m in &group {
        wait_live(&mut m.linearizable_client().await, nodes).await;
    }
    (group, shards)
}

#[test]
fn any_coordinator_takes_catalog_changes_and_a_linearizable_read_sees_them_at_once() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (group, _nodes) = cluster(tmp.path(), 2).await;
        for round in 0..12 {
            let (by, reader) = (&group[round % 3], &group[(round + 1) % 3]);
            let name = format!("ns-{round}");
            let mut c = by.client().await;
            action(&mut c, "CreateNamespace", json!({"name": name, "dim": DIM}))
                .await
                .unwrap_or_else(|e| panic!("create {name} through coordinator {}: {e}", by.id));
            // Straight after the answer, another coordinator already serves it.
            let mut r = reader.linearizable_client().await;
            let names = namespace_names(&mut r).await.expect("list");
            assert!(
                names.contains(&name),
                "coordinator {} did not see {name} created through {}: {names:?}",
                reader.id,
                by.id
            );
        }
        // Data written through one coordinator is found through another.
        let mut w = group[2].client().await;
        put(&mut w, "ns-0", vec![some_rows(0, 50)])
            .await
            .expect("write through coordinator 3");
        let mut s = group[1].client().await;
        let q = queries(&[7.0, 7.25, 7.5, 7.75], DIM);
        let hit = search(&mut s, json!({"namespace": "ns-0", "k": 1}), q)
            .await
            .expect("search through coordinator 2");
        assert_eq!(u64s(&hit, "id"), vec![7]);
        // A consistency the server does not know is refused, naming the header.
        let mut bad = group[0].client().await;
        bad.add_header("x-longbow-read-consistency", "eventual")
            .expect("header");
        let err = namespace_names(&mut bad).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message().contains("x-longbow-read-consistency"),
            "{err}"
        );
    });
}

#[test]
fn a_restarted_coordinator_never_answers_not_found_for_a_namespace_made_while_it_was_down() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (mut group, _nodes) = cluster(tmp.path(), 1).await;
        let leader = wait_leader(&group, 3).await;
        let i = group
            .iter()
            .position(|m| m.id != leader)
            .expect("a follower");
        group[i].kill9();
        let j = group
            .iter()
            .position(|m| m.proc.is_some())
            .expect("one runs");
        let mut c = group[j].client().await;
        for n in 0..3 {
            action(
                &mut c,
                "CreateNamespace",
                json!({"name": format!("while-down-{n}"), "dim": DIM}),
            )
            .await
            .expect("create while a follower is down");
        }
        put(&mut c, "while-down-0", vec![some_rows(0, 20)])
            .await
            .expect("write");
        // Asked the moment it listens again (its state machine may still lag the leader),
        // with the default local consistency: it catches up rather than answer NOT_FOUND.
        group[i].start();
        let mut back = group[i].client().await;
        let stats = action(&mut back, "GetNamespace", json!({"name": "while-down-1"}))
            .await
            .expect("GetNamespace on the restarted coordinator");
        assert_eq!(stats["name"], "while-down-1", "{stats}");
        let q = queries(&[7.0, 7.25, 7.5, 7.75], DIM);
        let hit = search(&mut back, json!({"namespace": "while-down-0", "k": 1}), q)
            .await
            .expect("search on the restarted coordinator");
        assert_eq!(u64s(&hit, "id"), vec![7]);
        action(
            &mut back,
            "DeleteNamespace",
            json!({"name": "while-down-2"}),
        )
        .await
        .expect("delete on the restarted coordinator");
    });
}

#[test]
fn killing_the_leader_loses_no_acknowledged_catalog_change() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (mut group, _nodes) = cluster(tmp.path(), 1).await;
        let leader = wait_leader(&group, 3).await;
        let via = group
            .iter()
            .position(|m| m.id != leader)
            .expect("a follower");
        let mut c = group[via].client().await;
        let mut acked: BTreeSet<String> = BTreeSet::new();
        let mut deleted: BTreeSet<String> = BTreeSet::new();
        let mut errors = Vec::new();
        let mut killed_at = None;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut i = 0;
        // Bounded: 120 changes, or 90 s.
        while i < 120 && Instant::now() < deadline {
            let name = format!("ns-{i}");
            let r = if i % 4 == 3 {
                let victim = format!("ns-{}", i - 1);
                action(&mut c, "DeleteNamespace", json!({"name": victim}))
                    .await
                    .map(|_| deleted.insert(victim))
            } else {
                action(&mut c, "CreateNamespace", json!({"name": name}))
                    .await
                    .map(|_| acked.insert(name.clone()))
            };
            match r {
                Ok(_) => i += 1,
                // An answer lost in the leader change: the change may have been applied
                // before it; the retry finds that out.
                Err(e) if e.code() == tonic::Code::AlreadyExists && i % 4 != 3 => {
                    acked.insert(name);
                    i += 1
                }
                Err(e) if e.code() == tonic::Code::NotFound && i % 4 == 3 => {
                    deleted.insert(format!("ns-{}", i - 1));
                    i += 1
                }
                Err(e) => {
                    assert!(retryable(&e), "a leader change gave a final error: {e}");
                    errors.push(e.message().to_string());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            if i == 40 && killed_at.is_none() {
                let l = group.iter_mut().find(|m| m.id == leader).expect("leader");
                l.kill9();
                killed_at = Some(Instant::now());
            }
        }
        assert_eq!(i, 120, "catalog changes never resumed; errors: {errors:?}");
        let live: BTreeSet<String> = acked.difference(&deleted).cloned().collect();
        // Both survivors hold exactly the acknowledged catalog.
        for m in group.iter().filter(|m| m.proc.is_some()) {
            let names = namespace_names(&mut m.linearizable_client().await)
                .await
                .expect("list");
            assert_eq!(
                names.into_iter().collect::<BTreeSet<_>>(),
                live,
                "coordinator {}",
                m.id
            );
        }
        // The old leader comes back as a follower and catches up to the same catalog.
        let old = group.iter_mut().find(|m| m.id == leader).expect("leader");
        old.start();
        wait_leader(&group, 3).await;
        let old = group.iter().find(|m| m.id == leader).expect("leader");
        let names = namespace_names(&mut old.linearizable_client().await)
            .await
            .expect("list");
        assert_eq!(names.into_iter().collect::<BTreeSet<_>>(), live);
    });
}

#[test]
fn a_coordinator_of_another_group_at_a_dead_members_address_takes_no_part_in_that_group() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (mut group, _nodes) = cluster(tmp.path(), 1).await;
        let leader = wait_leader(&group, 3).await;
        let mut c = group[0].client().await;
        for n in 0..3 {
            action(
                &mut c,
                "CreateNamespace",
                json!({"name": format!("ours-{n}")}),
            )
            .await
            .expect("create");
        }
        // The leader dies; a one-coordinator group with the same Raft id takes its address.
        let at = group.iter().position(|m| m.id == leader).expect("leader");
        group[at].kill9();
        let internal = group[at].internal.clone();
        let mut stranger = start_alone_at(&tmp.path().join("stranger"), leader, &internal);
        // The survivors elect a leader (their appends and votes reach the stranger) and take
        // changes; bounded: a few election rounds.
        let survivors: Vec<usize> = (0..3).filter(|i| *i != at).collect();
        let mut c = group[survivors[0]].client().await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match action(&mut c, "CreateNamespace", json!({"name": "ours-3"})).await {
                Ok(_) => break,
                Err(e) if e.code() == tonic::Code::AlreadyExists => break,
                Err(e) => {
                    assert!(retryable(&e), "{e}");
                    assert!(
                        Instant::now() < deadline,
                        "the survivors never took a change: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ours: Vec<String> = (0..4).map(|n| format!("ours-{n}")).collect();
        for i in &survivors {
            let names = namespace_names(&mut group[*i].linearizable_client().await)
                .await
                .expect("list");
            assert_eq!(names, ours, "coordinator {}", group[*i].id);
        }
        // The stranger's catalog is still its own: empty, and a group of one.
        let names = namespace_names(&mut stranger.linearizable_client().await)
            .await
            .expect("the stranger still answers for its own group");
        assert!(
            names.is_empty(),
            "the stranger took the group's catalog: {names:?}"
        );
        let status = status_of(&stranger).await.expect("cluster-status");
        let members = status["coordinators"].as_array().map_or(0, |m| m.len());
        assert_eq!(members, 1, "the stranger's group: {status}");
        stranger.kill9();
    });
}

#[test]
fn a_coordinator_joins_with_add_coordinator_and_leaves_with_remove_coordinator() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (mut group, _nodes) = cluster(tmp.path(), 1).await;
        let mut c = group[1].client().await;
        action(
            &mut c,
            "CreateNamespace",
            json!({"name": "before", "dim": DIM}),
        )
        .await
        .expect("create");
        // Bad bodies are refused naming the field.
        for (kind, body, field) in [
            ("AddCoordinator", json!({"node_id": 4}), "address"),
            (
                "AddCoordinator",
                json!({"node_id": 4, "address": "nowhere"}),
                "address",
            ),
            ("RemoveCoordinator", json!({"node_id": 99}), "node_id"),
            (
                "RemoveCoordinator",
                json!({"node_id": 1, "adress": "x"}),
                "adress",
            ),
        ] {
            let err = action(&mut c, kind, body).await.expect_err("refused");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{kind}: {err}");
            assert!(err.message().contains(field), "{kind}: {err}");
        }
        let joining = start_joining(tmp.path(), 4);
        let added = action(
            &mut c,
            "AddCoordinator",
            json!({"node_id": 4, "address": joining.internal}),
        )
        .await
        .expect("add coordinator 4");
        assert_eq!(added["added"], 4);
        group.push(joining);
        let leader = wait_leader(&group, 4).await;
        // The new coordinator holds the catalog made before it joined.
        let names = namespace_names(&mut group[3].linearizable_client().await)
            .await
            .expect("list on coordinator 4");
        assert_eq!(names, vec!["before".to_string()]);
        // Remove the leader, through the newcomer: the other three carry on.
        let mut via_new = group[3].client().await;
        let removed = action(
            &mut via_new,
            "RemoveCoordinator",
            json!({"node_id": leader}),
        )
        .await
        .expect("remove the leader");
        assert_eq!(removed["removed"], leader);
        let mut gone = group.remove(group.iter().position(|m| m.id == leader).expect("it"));
        gone.kill9();
        let next = wait_leader(&group, 3).await;
        assert_ne!(next, leader);
        // A coordinator that joined moments ago may not have heard from every shard node
        // yet: it says so with a retryable error, never a refusal.
        action_retried(
            &mut via_new,
            "CreateNamespace",
            json!({"name": "after", "dim": DIM}),
        )
        .await
        .expect("catalog changes after the removal");
        for m in &group {
            let names = namespace_names(&mut m.linearizable_client().await)
                .await
                .expect("list");
            assert_eq!(names, vec!["after".to_string(), "before".to_string()]);
        }
    });
}

/// A batch of rows `lo..hi` with one payload column `column` holding `id * 10`.
fn with_column(lo: u64, hi: u64, column: &str) -> RecordBatch {
    let ids: Vec<u64> = (lo..hi).collect();
    let data: Vec<f32> = ids.iter().flat_map(|i| [*i as f32; DIM]).collect();
    let schema = Schema::new(vec![
        Field::new("id", DataType::UInt64, false),
        vector_field(DIM),
        Field::new(column, DataType::Int64, true),
    ]);
    let values: ArrayRef = Arc::new(Int64Array::from(
        ids.iter().map(|i| *i as i64 * 10).collect::<Vec<_>>(),
    ));
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(UInt64Array::from(ids)),
            vectors(&data, DIM),
            values,
        ],
    )
    .expect("batch")
}

#[test]
fn schema_growth_through_two_coordinators_at_once_keeps_every_column() {
    let tmp = tempfile::tempdir().expect("tmp");
    runtime().block_on(async {
        let (group, _nodes) = cluster(tmp.path(), 1).await;
        let mut c = group[0].client().await;
        action(
            &mut c,
            "CreateNamespace",
            json!({"name": "grow", "dim": DIM, "shards": 1}),
        )
        .await
        .expect("create");
        let per_writer = 8u64;
        let writers = (0..2u64).map(|w| {
            let uri = group[w as usize].data.clone();
            tokio::spawn(async move {
                let mut c = connect(&uri).await;
                for k in 0..per_writer {
                    let lo = (w * per_writer + k) * 10;
                    let column = format!("c{w}_{k}");
                    put(&mut c, "grow", vec![with_column(lo, lo + 10, &column)])
                        .await
                        .unwrap_or_else(|e| panic!("writer {w}, column {column}: {e}"));
                }
            })
        });
        for w in writers.collect::<Vec<_>>() {
            w.await.expect("writer");
        }
        let columns: Vec<String> = (0..2)
            .flat_map(|w| (0..per_writer).map(move |k| format!("c{w}_{k}")))
            .collect();
        let ids: Vec<u64> = (0..2 * per_writer * 10).collect();
        let mut r = group[2].linearizable_client().await;
        let batches = do_get(
            &mut r,
            json!({"get": {"namespace": "grow", "ids": ids, "columns": columns, "include_vectors": false}}),
        )
        .await
        .expect("every column is known");
        let mut seen = 0;
        for b in &batches {
            let got = u64s(b, "id");
            for column in &columns {
                let values = b
                    .column_by_name(column)
                    .unwrap_or_else(|| panic!("column {column} lost"))
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("int64");
                for (row, id) in got.iter().enumerate() {
                    // Each row holds its own batch's column; every other one is null.
                    let owner = format!("c{}_{}", id / 10 / per_writer, (id / 10) % per_writer);
                    if &owner == column {
                        assert_eq!(values.value(row), *id as i64 * 10, "{column} of {id}");
                    } else {
                        assert!(values.is_null(row), "{column} of {id}");
                    }
                }
            }
            seen += got.len();
        }
        assert_eq!(seen, ids.len());
    });
}
