/**
 * One D1 transaction mixing drizzle queries with raw `INSERT … SELECT` statements. Drizzle's own
 * batch cannot carry raw statements on D1, and its insert-select needs every column of the table;
 * naming the columns in raw SQL lets a row be written only if another row (the job) is in a given
 * state at that moment, which is what makes the job's status moves race-free.
 */
import type { Database } from "./client.ts";

/** A statement for {@link conditionalBatch}: a drizzle query, or raw SQL with `?` parameters. */
export type BatchStatement = { toSQL(): { sql: string; params: unknown[] } } | { sql: string; params: unknown[] };

/** Runs the statements in one transaction; the number of rows each changed. */
export async function conditionalBatch(db: Database, statements: BatchStatement[]): Promise<number[]> {
  const client = db.$client;
  const prepared = statements.map((statement) => {
    const { sql, params } = "toSQL" in statement ? statement.toSQL() : statement;
    return client.prepare(sql).bind(...params);
  });
  const results = await client.batch(prepared);
  return results.map((result) => result.meta.changes ?? 0);
}
