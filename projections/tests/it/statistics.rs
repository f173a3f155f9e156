//! Planner statistics of the read models where autovacuum does not keep
//! them (`statistics::analyze_due`): nothing while a table has changed
//! less than autovacuum's own rule allows, an analyze once it has, and
//! after it a filtered listing walks an index instead of sorting every
//! match.

use std::time::{Duration, Instant};

use taskledger_projections::statistics::analyze_due;

use crate::helpers::{database, scalar};

/// Rows of `tasks` numbered `from..to`: five kinds, three in four queued,
/// submitted a second apart.
async fn insert_tasks(client: &tokio_postgres::Client, from: i64, to: i64) {
    client
        .execute(
            "INSERT INTO tasks (task_id, kind, status, frontend_id, params, priority,
                                timeout_seconds, max_attempts, submitted_at, updated_at,
                                stream_version, last_position, tenant)
             SELECT gen_random_uuid(), 'kind-' || (i % 5),
                    CASE WHEN i % 4 = 0 THEN 'succeeded' ELSE 'queued' END,
                    'frontend-' || (i % 50), '{}', 0, 60, 1,
                    timestamptz '2026-01-01' + make_interval(secs => i), now(), 1, i,
                    'tenant-' || (i % 10)
             FROM generate_series($1::bigint, $2::bigint - 1) AS i",
            &[&from, &to],
        )
        .await
        .unwrap();
}

/// Waits until the server's counters show at least `changed` rows of
/// `tasks` changed since its last analyze (backends report them within
/// about a second).
async fn wait_for_changes(client: &tokio_postgres::Client, changed: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen: i64 = scalar(
            client,
            "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'tasks'",
        )
        .await;
        if seen >= changed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server reported {seen} changed rows of tasks, not {changed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The plan's node types, outermost first.
fn node_types(plan: &serde_json::Value, into: &mut Vec<String>) {
    if let Some(node) = plan.get("Node Type").and_then(|node| node.as_str()) {
        into.push(node.to_owned());
    }
    for child in plan
        .get("Plans")
        .and_then(|plans| plans.as_array())
        .into_iter()
        .flatten()
    {
        node_types(child, into);
    }
}

#[tokio::test]
async fn a_read_model_autovacuum_leaves_alone_is_analyzed_once_it_grew_and_then_lists_by_index() {
    let (store, database, client) = database().await;
    // Whatever the server's own setting, autovacuum leaves `tasks` alone.
    client
        .batch_execute("ALTER TABLE tasks SET (autovacuum_enabled = false)")
        .await
        .unwrap();

    // 40 changed rows: under autovacuum's threshold (50 by default).
    insert_tasks(&client, 0, 40).await;
    wait_for_changes(&client, 40).await;
    assert_eq!(
        analyze_due(&store, &["tasks", "results"]).await.unwrap(),
        Vec::<String>::new(),
        "a table that changed less than the threshold is not analyzed"
    );

    insert_tasks(&client, 40, 50_000).await;
    wait_for_changes(&client, 50_000).await;
    assert_eq!(
        analyze_due(&store, &["tasks", "results"]).await.unwrap(),
        vec!["tasks".to_owned()],
        "the grown table is analyzed, the unchanged one is not"
    );
    let analyzed: bool = scalar(
        &client,
        "SELECT last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'tasks'",
    )
    .await;
    assert!(analyzed, "the server records the analyze");
    assert_eq!(
        analyze_due(&store, &["tasks", "results"]).await.unwrap(),
        Vec::<String>::new(),
        "an analyzed table is not due again until it changes again"
    );

    // The API's listing of one kind and status, newest first, a page of
    // 100 (and one more): with statistics it reads an ordering index and
    // stops after the page, sorting nothing.
    let plan: serde_json::Value = client
        .query_one(
            "EXPLAIN (FORMAT JSON) SELECT * FROM tasks
             WHERE status = ANY('{queued}'::text[]) AND kind = 'kind-3'
             ORDER BY submitted_at DESC, task_id DESC LIMIT 101",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut nodes = Vec::new();
    node_types(&plan[0]["Plan"], &mut nodes);
    assert_eq!(
        nodes,
        ["Limit", "Index Scan"],
        "the listing's plan: {plan:#}"
    );
    database.drop_database().await;
}
