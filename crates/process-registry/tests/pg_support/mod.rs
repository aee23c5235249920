//! What the PostgreSQL tests and benchmarks share: the server they use and a schema of
//! their own per test, dropped at the end. A missing server fails them; they never skip.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use process_registry::PostgresOptions;

/// The server: `LEDGER_TEST_POSTGRES`, else the project machines' local one.
pub fn params() -> String {
    std::env::var("LEDGER_TEST_POSTGRES")
        .unwrap_or_else(|_| "host=127.0.0.1 user=postgres dbname=test".to_owned())
}

/// A plain connection to it, for setting up and looking.
pub fn client() -> postgres::Client {
    postgres::Client::connect(&params(), postgres::NoTls)
        .unwrap_or_else(|error| panic!("the test PostgreSQL server ({}): {error}", params()))
}

/// A schema of the caller's own (tests run in parallel), dropped with the value.
pub struct Schema(pub String);

impl Schema {
    /// `{prefix}_{pid}_{name}`, emptied first.
    pub fn new(prefix: &str, name: &str) -> Schema {
        let schema = format!("{prefix}_{}_{name}", std::process::id());
        client()
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .unwrap();
        Schema(schema)
    }

    /// Options naming this schema, with `connections` connections.
    pub fn options(&self, connections: usize) -> PostgresOptions {
        PostgresOptions::default()
            .with_schema(self.0.clone())
            .with_connections(connections)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut client) = postgres::Client::connect(&params(), postgres::NoTls) {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0));
        }
    }
}
