//! A batch's statements are prepared once per connection, not once per
//! batch: a projector applying one event at a time would otherwise pay a
//! prepare (a round trip and a parse) for every statement of every batch.

use taskledger_projections::runtime::{Batch, Statements};

use crate::helpers::database;

const SQL: &str = "SELECT count(*) FROM projector_checkpoints WHERE projector = $1";

/// How many statements this session holds prepared with `SQL`'s text.
async fn prepared(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement = $1",
            &[&SQL],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_statement_is_prepared_once_per_connection_across_batches() {
    let (_store, database, mut client) = database().await;
    let statements = Statements::default();
    let mut answers = Vec::new();
    for _ in 0..5 {
        let tx = client.transaction().await.unwrap();
        let batch = Batch::new(&tx, &statements);
        let first: i64 = batch.query_one(SQL, &[&"tasks"]).await.unwrap().get(0);
        let again = batch.query(SQL, &[&"tasks"]).await.unwrap();
        answers.push((first, again.len()));
        tx.commit().await.unwrap();
    }
    assert_eq!(answers, vec![(0, 1); 5], "each batch's queries answer");
    assert_eq!(
        prepared(&client).await,
        1,
        "five batches of two queries each prepared the statement once"
    );

    // Forgotten (after a failed batch): prepared afresh, the old one closed.
    statements.clear();
    let tx = client.transaction().await.unwrap();
    Batch::new(&tx, &statements)
        .execute(SQL, &[&"tasks"])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(prepared(&client).await, 1, "one statement after clear()");

    // Without the cache, every query prepares its own statement; those
    // are closed once dropped, so none stays (what each batch used to do).
    let tx = client.transaction().await.unwrap();
    tx.query_one(SQL, &[&"tasks"]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        prepared(&client).await,
        1,
        "an uncached query keeps nothing"
    );
    drop(client);
    database.drop_database().await;
}
