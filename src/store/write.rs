//! Bulk writes: a page of records in one transaction, multi-row `INSERT ... ON CONFLICT DO
//! UPDATE`, plus the stage checkpoint when the sync passes one, so a reader never sees half a page
//! and a crash never loses a checkpoint that is ahead of the data.
//!
//! A sync page never makes a record older: webhooks write the same rows while a job runs, and a
//! page read before an event must not undo it (see [`upsert_unless_newer`]). A FULL run still
//! reconciles: a row is left alone only while its version is newer than the pass's start.

use sea_orm::sea_query::{Expr, ExprTrait, InsertStatement, OnConflict, Query, Value};
use sea_orm::{ConnectionTrait, DbErr};

use super::{IN_CHUNK, Store, StoreError, rows_per_insert};
use crate::domain::{
    ChangeKind, ChangeOp, ChangeSource, Contact, Conversation, CustomField, Location, Opportunity,
    Pipeline, Resource, SyncStage, Task, User, to_ms,
};

/// One page of records of one resource, as fetched from GHL.
#[derive(Clone, Copy, Debug)]
pub enum Page<'a> {
    Users(&'a [User]),
    CustomFields(&'a [CustomField]),
    Pipelines(&'a [Pipeline]),
    Contacts(&'a [Contact]),
    Tasks(&'a [Task]),
    Conversations(&'a [Conversation]),
    Opportunities(&'a [Opportunity]),
}

impl Page<'_> {
    pub fn len(&self) -> usize {
        match self {
            Page::Users(r) => r.len(),
            Page::CustomFields(r) => r.len(),
            Page::Pipelines(r) => r.len(),
            Page::Contacts(r) => r.len(),
            Page::Tasks(r) => r.len(),
            Page::Conversations(r) => r.len(),
            Page::Opportunities(r) => r.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kind of the page's records and their ids, for the `changes` subscription.
    fn changed(&self) -> (ChangeKind, Vec<String>) {
        fn ids<T>(rows: &[T], id: impl Fn(&T) -> &String) -> Vec<String> {
            rows.iter().map(|r| id(r).clone()).collect()
        }
        match self {
            Page::Users(r) => (ChangeKind::User, ids(r, |x| &x.id)),
            Page::CustomFields(r) => (ChangeKind::CustomField, ids(r, |x| &x.id)),
            Page::Pipelines(r) => (ChangeKind::Pipeline, ids(r, |x| &x.id)),
            Page::Contacts(r) => (ChangeKind::Contact, ids(r, |x| &x.id)),
            Page::Tasks(r) => (ChangeKind::Task, ids(r, |x| &x.id)),
            Page::Conversations(r) => (ChangeKind::Conversation, ids(r, |x| &x.id)),
            Page::Opportunities(r) => (ChangeKind::Opportunity, ids(r, |x| &x.id)),
        }
    }
}

pub(super) type Row = Vec<Value>;

pub(super) fn ms(t: Option<chrono::DateTime<chrono::Utc>>) -> Value {
    t.map(to_ms).into()
}

/// Upserts `rows` into `table` with as few statements as the bind limit allows. Columns outside
/// `key` are overwritten with the new values.
async fn upsert<C: ConnectionTrait>(
    conn: &C,
    table: &'static str,
    cols: &[&'static str],
    key: &[&'static str],
    rows: Vec<Row>,
) -> Result<(), DbErr> {
    let update: Vec<&'static str> = cols.iter().copied().filter(|c| !key.contains(c)).collect();
    upsert_where(conn, table, cols, key, &update, &[], None, rows)
        .await
        .map(|_| ())
}

/// [`upsert`] that overwrites only the `update` columns of an existing row (and the `keep`
/// columns where the new value is not NULL), and only where `condition` holds (it may name the
/// row as `table.col` and the new values as `excluded.col`). Returns the rows inserted or updated.
#[allow(clippy::too_many_arguments)]
pub(super) async fn upsert_where<C: ConnectionTrait>(
    conn: &C,
    table: &'static str,
    cols: &[&'static str],
    key: &[&'static str],
    update: &[&'static str],
    keep: &[&'static str],
    condition: Option<&str>,
    rows: Vec<Row>,
) -> Result<u64, DbErr> {
    let mut written = 0;
    for insert in upsert_statements(table, cols, key, update, keep, condition, rows) {
        written += conn.execute(&insert).await?.rows_affected();
    }
    Ok(written)
}

/// The multi-row `INSERT ... ON CONFLICT` statements of [`upsert_where`], as many as the bind
/// limit needs.
#[allow(clippy::too_many_arguments)]
fn upsert_statements(
    table: &'static str,
    cols: &[&'static str],
    key: &[&'static str],
    update: &[&'static str],
    keep: &[&'static str],
    condition: Option<&str>,
    rows: Vec<Row>,
) -> Vec<InsertStatement> {
    let mut statements = Vec::new();
    let per_statement = rows_per_insert(cols.len());
    let mut rows = rows.into_iter();
    for size in statement_sizes(rows.len(), per_statement) {
        let mut insert = Query::insert();
        insert.into_table(table).columns(cols.iter().copied());
        for row in rows.by_ref().take(size) {
            // A row that does not match its columns is a bug in this module: fail loudly.
            assert_eq!(
                row.len(),
                cols.len(),
                "a row of {table} has the wrong number of values"
            );
            insert.values_panic(row.into_iter().map(Expr::val));
        }
        let mut on_conflict = OnConflict::columns(key.iter().copied());
        if update.is_empty() && keep.is_empty() {
            on_conflict.do_nothing();
        } else {
            on_conflict.update_columns(update.iter().copied());
            for col in keep {
                on_conflict.value(
                    *col,
                    Expr::cust(format!("COALESCE(excluded.{col}, {table}.{col})")),
                );
            }
        }
        if let Some(condition) = condition {
            on_conflict.action_and_where(Expr::cust(condition.to_owned()));
        }
        insert.on_conflict(on_conflict);
        statements.push(insert);
    }
    statements
}

/// Most rows (or keys) one bulk statement carries: see [`statement_sizes`].
const MAX_SHAPE: usize = 128;

/// How many rows (or keys) each bulk statement over `n` of them carries: powers of two, the
/// largest at most `max` and [`MAX_SHAPE`], largest first (713 → 128 ×5, 64, 8, 1).
///
/// sqlx keeps every distinct SQL text prepared on each pooled connection (100 a connection),
/// and a multi-row statement's SQL is as long as its rows. With one statement of exactly the
/// page's rows, every page whose child rows (tags, custom values) counted differently prepared
/// a new statement of up to 100 KB and kept it: the heap grew with the location's size (peak
/// RSS 228 MiB syncing 100k contacts, two thirds of the heap in prepared INSERTs). Powers of
/// two give each table a handful of shapes whatever the pages hold, reused from then on.
fn statement_sizes(n: usize, max: usize) -> Vec<usize> {
    let cap = max.clamp(1, MAX_SHAPE);
    let top = 1 << (usize::BITS - 1 - cap.leading_zeros());
    let mut sizes = vec![top; n / top];
    let mut rest = n % top;
    let mut size = top / 2;
    while rest > 0 {
        if rest >= size {
            sizes.push(size);
            rest -= size;
        }
        size /= 2;
    }
    sizes
}

/// The columns that version a record table's rows (GHL's time of the record's last change, or
/// of its last message), compared before a sync page overwrites a row.
fn version_cols(table: &str) -> &'static [&'static str] {
    match table {
        "contacts" | "tasks" => &["date_updated"],
        "conversations" => &["date_updated", "last_message_date"],
        "opportunities" => &["updated_at"],
        _ => &[],
    }
}

/// Upserts a sync page's `rows` of a record table (keyed by `id`), except over a row that holds
/// something newer than the page: a row a webhook wrote, or deleted, after the job began
/// (`mark`) whose version is newer than the record's. A page read before such an event would
/// otherwise make the row older, or bring a deleted row back. Returns the ids written.
///
/// The rows a page leaves alone keep the `seen_at` of the webhook that wrote them, its arrival,
/// which is after the job began (its version is): [`Store::mark_unseen_deleted`] spares them.
async fn upsert_unless_newer<C: ConnectionTrait>(
    conn: &C,
    table: &'static str,
    cols: &[&'static str],
    mark: i64,
    rows: Vec<Row>,
) -> Result<Vec<String>, DbErr> {
    let update: Vec<&'static str> = cols.iter().copied().filter(|c| *c != "id").collect();
    let condition = version_cols(table)
        .iter()
        .map(|v| {
            format!("({table}.{v} IS NULL OR {table}.{v} <= excluded.{v} OR {table}.{v} <= {mark})")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let condition = (!condition.is_empty()).then_some(condition);
    let mut ids = Vec::new();
    for mut insert in upsert_statements(
        table,
        cols,
        &["id"],
        &update,
        &[],
        condition.as_deref(),
        rows,
    ) {
        insert.returning_col("id");
        for row in conn.query_all(&insert).await? {
            ids.push(row.try_get::<String>("", "id")?);
        }
    }
    Ok(ids)
}

/// Deletes the rows of `table` whose `column` is one of `ids` (child rows replaced by a page).
async fn delete_in<C: ConnectionTrait>(
    conn: &C,
    table: &'static str,
    column: &'static str,
    ids: &[String],
) -> Result<(), DbErr> {
    let mut rest = ids;
    for size in statement_sizes(ids.len(), IN_CHUNK) {
        let (chunk, after) = rest.split_at(size);
        rest = after;
        let delete = Query::delete()
            .from_table(table)
            .and_where(Expr::col(column).is_in(chunk.iter().cloned()))
            .to_owned();
        conn.execute(&delete).await?;
    }
    Ok(())
}

const LOCATION_COLS: &[&str] = &[
    "id",
    "name",
    "company_id",
    "timezone",
    "created_at",
    "deleted",
    "seen_at",
];
const USER_COLS: &[&str] = &[
    "location_id",
    "id",
    "name",
    "first_name",
    "last_name",
    "email",
    "deleted",
    "seen_at",
];
const CUSTOM_FIELD_COLS: &[&str] = &[
    "id",
    "location_id",
    "name",
    "field_key",
    "data_type",
    "model",
    "position",
    "deleted",
    "seen_at",
];
const PIPELINE_COLS: &[&str] = &["id", "location_id", "name", "deleted", "seen_at"];
const STAGE_COLS: &[&str] = &[
    "id",
    "pipeline_id",
    "location_id",
    "name",
    "position",
    "deleted",
    "seen_at",
];
pub(super) const CONTACT_COLS: &[&str] = &[
    "id",
    "location_id",
    "first_name",
    "last_name",
    "name",
    "sort_name",
    "email",
    "phone",
    "company_name",
    "source",
    "assigned_to",
    "tags",
    "date_added",
    "date_updated",
    "deleted",
    "seen_at",
    "search_text",
];
pub(super) const TASK_COLS: &[&str] = &[
    "id",
    "location_id",
    "contact_id",
    "title",
    "body",
    "due_date",
    "completed",
    "assigned_to",
    "date_added",
    "date_updated",
    "deleted",
    "seen_at",
];
pub(super) const CONVERSATION_COLS: &[&str] = &[
    "id",
    "location_id",
    "contact_id",
    "type",
    "last_message_body",
    "last_message_type",
    "last_message_date",
    "unread_count",
    "assigned_to",
    "date_added",
    "date_updated",
    "deleted",
    "seen_at",
];
pub(super) const OPPORTUNITY_COLS: &[&str] = &[
    "id",
    "location_id",
    "contact_id",
    "pipeline_id",
    "stage_id",
    "name",
    "status",
    "monetary_value",
    "assigned_to",
    "created_at",
    "updated_at",
    "deleted",
    "seen_at",
];
const STAGE_CHECKPOINT_COLS: &[&str] = &[
    "job_id",
    "name",
    "state",
    "fetched",
    "total",
    "pages",
    "checkpoint",
    "error",
    "updated_at",
    "calls",
    "retries",
    "rate_limited",
    "waited_ms",
    "read_at",
];

/// Writes one page for `location_id`. Each row is stamped with `mark` (the sync run's mark) and
/// undeleted; the records' own `location_id` is ignored in favour of the argument.
async fn write_records<C: ConnectionTrait>(
    conn: &C,
    location_id: &str,
    mark: i64,
    page: Page<'_>,
) -> Result<(), DbErr> {
    let loc = || Value::from(location_id.to_owned());
    let live = || [Value::from(false), Value::from(mark)];
    match page {
        Page::Users(users) => {
            let rows = users
                .iter()
                .map(|u| {
                    let mut r: Row = vec![
                        loc(),
                        u.id.clone().into(),
                        u.name.clone().into(),
                        u.first_name.clone().into(),
                        u.last_name.clone().into(),
                        u.email.clone().into(),
                    ];
                    r.extend(live());
                    r
                })
                .collect();
            upsert(conn, "users", USER_COLS, &["location_id", "id"], rows).await
        }
        Page::CustomFields(fields) => {
            let rows = fields
                .iter()
                .map(|f| {
                    let mut r: Row = vec![
                        f.id.clone().into(),
                        loc(),
                        f.name.clone().into(),
                        f.field_key.clone().into(),
                        f.data_type.clone().into(),
                        f.model.clone().into(),
                        f.position.into(),
                    ];
                    r.extend(live());
                    r
                })
                .collect();
            upsert(conn, "custom_fields", CUSTOM_FIELD_COLS, &["id"], rows).await
        }
        Page::Pipelines(pipelines) => {
            let mut pipeline_rows = Vec::with_capacity(pipelines.len());
            let mut stage_rows = Vec::new();
            for p in pipelines {
                let mut r: Row = vec![p.id.clone().into(), loc(), p.name.clone().into()];
                r.extend(live());
                pipeline_rows.push(r);
                for s in &p.stages {
                    let mut r: Row = vec![
                        s.id.clone().into(),
                        p.id.clone().into(),
                        loc(),
                        s.name.clone().into(),
                        s.position.into(),
                    ];
                    r.extend(live());
                    stage_rows.push(r);
                }
            }
            upsert(conn, "pipelines", PIPELINE_COLS, &["id"], pipeline_rows).await?;
            upsert(conn, "pipeline_stages", STAGE_COLS, &["id"], stage_rows).await
        }
        Page::Contacts(contacts) => write_contacts(conn, location_id, mark, contacts).await,
        Page::Tasks(tasks) => {
            let rows = tasks
                .iter()
                .map(|t| task_row(t, location_id, mark))
                .collect();
            upsert_unless_newer(conn, "tasks", TASK_COLS, mark, rows)
                .await
                .map(|_| ())
        }
        Page::Conversations(conversations) => {
            let rows = conversations
                .iter()
                .map(|c| {
                    let mut r: Row = vec![
                        c.id.clone().into(),
                        loc(),
                        c.contact_id.clone().into(),
                        c.kind.clone().into(),
                        c.last_message_body.clone().into(),
                        c.last_message_type.clone().into(),
                        ms(c.last_message_date),
                        c.unread_count.into(),
                        c.assigned_to.clone().into(),
                        ms(c.date_added),
                        ms(c.date_updated),
                    ];
                    r.extend(live());
                    r
                })
                .collect();
            upsert_unless_newer(conn, "conversations", CONVERSATION_COLS, mark, rows)
                .await
                .map(|_| ())
        }
        Page::Opportunities(opportunities) => {
            let rows = opportunities
                .iter()
                .map(|o| opportunity_row(o, location_id, mark))
                .collect();
            upsert_unless_newer(conn, "opportunities", OPPORTUNITY_COLS, mark, rows)
                .await
                .map(|_| ())
        }
    }
}

/// A task's row in [`TASK_COLS`] order, live (not deleted) and stamped with `mark`.
pub(super) fn task_row(t: &Task, location_id: &str, mark: i64) -> Row {
    vec![
        t.id.clone().into(),
        location_id.to_owned().into(),
        t.contact_id.clone().into(),
        t.title.clone().into(),
        t.body.clone().into(),
        ms(t.due_date),
        t.completed.into(),
        t.assigned_to.clone().into(),
        ms(t.date_added),
        ms(t.date_updated),
        false.into(),
        mark.into(),
    ]
}

/// An opportunity's row in [`OPPORTUNITY_COLS`] order, live and stamped with `mark`.
pub(super) fn opportunity_row(o: &Opportunity, location_id: &str, mark: i64) -> Row {
    vec![
        o.id.clone().into(),
        location_id.to_owned().into(),
        o.contact_id.clone().into(),
        o.pipeline_id.clone().into(),
        o.stage_id.clone().into(),
        o.name.clone().into(),
        o.status.clone().into(),
        o.monetary_value.into(),
        o.assigned_to.clone().into(),
        ms(o.created_at),
        ms(o.updated_at),
        false.into(),
        mark.into(),
    ]
}

/// Contacts, then their tags and custom field values, which the page replaces wholesale.
async fn write_contacts<C: ConnectionTrait>(
    conn: &C,
    location_id: &str,
    mark: i64,
    contacts: &[Contact],
) -> Result<(), DbErr> {
    let rows = contacts
        .iter()
        .map(|c| contact_row(c, location_id, mark, false))
        .collect();
    let written = upsert_unless_newer(conn, "contacts", CONTACT_COLS, mark, rows).await?;
    // The tags and custom values of a contact the page left alone stay with its newer row.
    let written: std::collections::HashSet<String> = written.into_iter().collect();
    let contacts: Vec<&Contact> = contacts
        .iter()
        .filter(|c| written.contains(&c.id))
        .collect();
    replace_contact_children(conn, location_id, &contacts).await
}

/// A contact's row in [`CONTACT_COLS`] order, stamped with `mark`.
pub(super) fn contact_row(c: &Contact, location_id: &str, mark: i64, deleted: bool) -> Row {
    let display = c.display_name();
    let tags = serde_json::to_string(&c.tags).unwrap_or_else(|_| "[]".to_owned());
    vec![
        c.id.clone().into(),
        location_id.to_owned().into(),
        c.first_name.clone().into(),
        c.last_name.clone().into(),
        (!display.is_empty()).then_some(display.clone()).into(),
        display.to_lowercase().into(),
        c.email.clone().into(),
        c.phone.clone().into(),
        c.company_name.clone().into(),
        c.source.clone().into(),
        c.assigned_to.clone().into(),
        tags.into(),
        to_ms(c.date_added).into(),
        to_ms(c.date_updated).into(),
        deleted.into(),
        mark.into(),
        search_text(&display, c.email.as_deref(), c.phone.as_deref()).into(),
    ]
}

/// Replaces the tags and custom field values of `contacts` (whose rows are written) with theirs.
pub(super) async fn replace_contact_children<C: ConnectionTrait>(
    conn: &C,
    location_id: &str,
    contacts: &[&Contact],
) -> Result<(), DbErr> {
    let loc = || Value::from(location_id.to_owned());
    let mut tag_rows = Vec::new();
    let mut value_rows = Vec::new();
    for c in contacts {
        let mut seen_tags = std::collections::HashSet::new();
        for tag in c.tags.iter().filter(|t| seen_tags.insert(t.as_str())) {
            tag_rows.push(vec![c.id.clone().into(), tag.clone().into(), loc()]);
        }
        let mut seen_fields = std::collections::HashSet::new();
        for v in c
            .custom_fields
            .iter()
            .filter(|v| seen_fields.insert(v.field_id.as_str()))
        {
            value_rows.push(vec![
                c.id.clone().into(),
                v.field_id.clone().into(),
                loc(),
                v.value.to_string().into(),
            ]);
        }
    }
    let ids: Vec<String> = contacts.iter().map(|c| c.id.clone()).collect();
    delete_in(conn, "contact_tags", "contact_id", &ids).await?;
    delete_in(conn, "contact_custom_values", "contact_id", &ids).await?;
    upsert(
        conn,
        "contact_tags",
        &["contact_id", "tag", "location_id"],
        &["contact_id", "tag"],
        tag_rows,
    )
    .await?;
    upsert(
        conn,
        "contact_custom_values",
        &["contact_id", "field_id", "location_id", "value"],
        &["contact_id", "field_id"],
        value_rows,
    )
    .await
}

/// Writes a stage's progress (its row in `sync_stages`).
pub(super) async fn save_checkpoint<C: ConnectionTrait>(
    conn: &C,
    c: &SyncStage,
) -> Result<(), DbErr> {
    let row: Row = vec![
        c.job_id.clone().into(),
        c.resource.as_str().into(),
        super::jobs::job_state_name(c.state).into(),
        c.fetched.into(),
        c.total.into(),
        c.pages.into(),
        c.checkpoint.clone().into(),
        c.error.clone().into(),
        chrono::Utc::now().timestamp_millis().into(),
        c.calls.into(),
        c.retries.into(),
        c.rate_limited.into(),
        c.waited_ms.into(),
        ms(c.read_at),
    ];
    upsert(
        conn,
        "sync_stages",
        STAGE_CHECKPOINT_COLS,
        &["job_id", "name"],
        vec![row],
    )
    .await
}

impl Store {
    /// Upserts a location's own row (its name, company and time zone).
    pub async fn upsert_location(&self, location: &Location, mark: i64) -> Result<(), StoreError> {
        let row: Row = vec![
            location.id.clone().into(),
            location.name.clone().into(),
            location.company_id.clone().into(),
            location.timezone.clone().into(),
            location.created_at.map(to_ms).unwrap_or(0).into(),
            false.into(),
            mark.into(),
        ];
        upsert(&self.db, "locations", LOCATION_COLS, &["id"], vec![row]).await?;
        self.bump(&location.id);
        Ok(())
    }

    /// Writes one page of records, and the stage's checkpoint if given, in one transaction.
    pub async fn write_page(
        &self,
        location_id: &str,
        mark: i64,
        page: Page<'_>,
        checkpoint: Option<&SyncStage>,
    ) -> Result<(), StoreError> {
        let (_writing, txn) = self.begin_write().await?;
        write_records(&txn, location_id, mark, page).await?;
        if let Some(checkpoint) = checkpoint {
            save_checkpoint(&txn, checkpoint).await?;
        }
        txn.commit().await?;
        let (kind, ids) = page.changed();
        self.committed(location_id, kind, ChangeOp::Upsert, ids, ChangeSource::Sync);
        Ok(())
    }

    /// Marks the rows of `resource` in `location_id` that no run since `mark` has seen as deleted
    /// (a FULL sync calls it after its stage saw every row). Returns how many rows it marked.
    pub async fn mark_unseen_deleted(
        &self,
        location_id: &str,
        resource: Resource,
        mark: i64,
    ) -> Result<u64, StoreError> {
        let tables: &[&'static str] = match resource {
            Resource::Users => &["users"],
            Resource::CustomFields => &["custom_fields"],
            Resource::Pipelines => &["pipelines", "pipeline_stages"],
            Resource::Contacts => &["contacts"],
            Resource::Tasks => &["tasks"],
            Resource::Conversations => &["conversations"],
            Resource::Opportunities => &["opportunities"],
        };
        let (_writing, txn) = self.begin_write().await?;
        let mut marked = 0;
        // The ids of the resource's own rows (a pipeline's, not its stages'), for `changes`.
        let mut ids = Vec::new();
        for (at, table) in tables.iter().enumerate() {
            let update = Query::update()
                .table(*table)
                .value("deleted", true)
                .and_where(Expr::col("location_id").eq(location_id))
                .and_where(Expr::col("seen_at").lt(mark))
                .and_where(Expr::col("deleted").eq(false))
                .returning_col("id")
                .to_owned();
            let rows = txn.query_all(&update).await?;
            marked += rows.len() as u64;
            if at == 0 {
                for row in rows {
                    ids.push(row.try_get::<String>("", "id")?);
                }
            }
        }
        txn.commit().await?;
        if marked > 0 {
            let kind = ChangeKind::of(resource);
            self.committed(location_id, kind, ChangeOp::Delete, ids, ChangeSource::Sync);
        }
        Ok(marked)
    }
}

/// A contact's `search_text`: its display name, e-mail and phone, each [`super::fold`]ed, one per
/// line (a query never holds a line break, so it cannot match across two of them).
fn search_text(display: &str, email: Option<&str>, phone: Option<&str>) -> String {
    [display, email.unwrap_or(""), phone.unwrap_or("")]
        .map(super::fold)
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_statements_take_a_few_shapes_whatever_the_row_counts() {
        assert_eq!(
            statement_sizes(713, 30_000),
            [128, 128, 128, 128, 128, 64, 8, 1]
        );
        assert_eq!(statement_sizes(5, 3), [2, 2, 1]);
        assert!(statement_sizes(0, 100).is_empty());
        let mut shapes = std::collections::BTreeSet::new();
        for n in 0..3_000 {
            let sizes = statement_sizes(n, rows_per_insert(20));
            assert_eq!(sizes.iter().sum::<usize>(), n);
            shapes.extend(sizes);
        }
        // Eight statement texts per table and conflict rule, however many rows pages carry.
        assert_eq!(shapes.len(), 8, "{shapes:?}");
    }
}
