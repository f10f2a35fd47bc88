//! The writes of GHL webhook events: a transaction that records each event's `webhookId` (so a
//! replay is refused by every replica and after a restart) and applies the event, order-safely.
//!
//! Group commit: deliveries that arrive while another batch holds the writer (SQLite's write
//! gate, or on PostgreSQL the webhooks' own) queue, and the next writer applies all of them in one
//! transaction, in arrival order: one multi-row insert of their `webhookId`s, one location check
//! per location, each event's conditional write, and one rewrite of the tags and custom values of
//! the contacts written. Each delivery is answered only after the transaction that holds it
//! commits. When a batch fails, it is rolled back and each of its events is applied again in a
//! transaction of its own, so that one bad event fails alone.
//!
//! Order safety: webhooks arrive late, twice, or out of order, and beside a sync that writes the
//! same rows. Every write here is conditional on the row it meets, in the statement itself (no
//! read-then-write race):
//! - an upsert changes an existing row only when the event is not older than what the row holds
//!   (`date_updated` / `updated_at` against the event's time; `last_message_date` against the
//!   message's), and never a row marked deleted: a late update does not resurrect it;
//! - a delete marks the row deleted, inserting a deleted row when the cache never had it, so an
//!   update that arrives after the delete finds it deleted.
//!
//! `store` knows no wire format: `webhooks` parses the payloads into [`EventWrite`]s.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, TransactionTrait};
use tokio::sync::oneshot;

use super::write::{
    CONTACT_COLS, OPPORTUNITY_COLS, Row, TASK_COLS, contact_row, opportunity_row,
    replace_contact_children, task_row, upsert_where,
};
use super::{Store, StoreError};
use crate::domain::{ChangeKind, ChangeOp, ChangeSource, Contact, Opportunity, Task, to_ms};

/// What one webhook event asks of the cache, in the store's terms. The event's time (GHL's
/// `timestamp`, or the message's `dateAdded`) is in the record: `date_updated` of a contact or
/// task, `updated_at` of an opportunity.
#[derive(Clone, Debug, PartialEq)]
pub enum EventWrite {
    /// `ContactCreate`, `ContactUpdate`, `ContactTagUpdate`, `ContactDndUpdate`: the whole contact.
    Contact(Contact),
    /// `ContactDelete`.
    ContactDeleted(Contact),
    /// `TaskCreate`, `TaskComplete`. A `None` `contact_id` or `body` (real `TaskCreate` payloads
    /// omit both) keeps what the row holds: the next sync fills them, nothing is guessed.
    Task(Task),
    /// `TaskDelete`.
    TaskDeleted(Task),
    /// `OpportunityCreate`, `OpportunityUpdate` and the other `Opportunity*Update`s.
    Opportunity(Opportunity),
    /// `OpportunityDelete`.
    OpportunityDeleted(Opportunity),
    /// `InboundMessage` / `OutboundMessage`: the conversation's last message, when the cache
    /// holds the conversation (a new one waits for the next sync: its type and unread count are
    /// not in the payload).
    Message {
        conversation_id: String,
        body: Option<String>,
        /// In the conversations' own vocabulary (`TYPE_SMS`, `TYPE_EMAIL`, ...).
        message_type: Option<String>,
        date: DateTime<Utc>,
    },
    /// `ConversationUnreadUpdate`, on a conversation the cache holds.
    ConversationUnread {
        conversation_id: String,
        unread_count: i32,
        deleted: bool,
        at: DateTime<Utc>,
    },
    /// `UNINSTALL` of the location's app: its credentials are revoked, so no sync can run until
    /// it is connected again.
    Uninstalled { at: DateTime<Utc> },
}

/// The receipt of one event: its `webhookId`, when it arrived, and the location it is about
/// (none for an agency-level event).
#[derive(Clone, Copy, Debug)]
pub struct Receipt<'a> {
    pub webhook_id: &'a str,
    pub received_at: DateTime<Utc>,
    pub location_id: Option<&'a str>,
}

/// One event of a batch for [`Store::apply_webhooks`]: its receipt and what it writes.
#[derive(Clone, Copy, Debug)]
pub struct Delivery<'a> {
    pub receipt: Receipt<'a>,
    /// `None` for an event recorded only.
    pub write: Option<&'a EventWrite>,
}

/// A delivery waiting for the writer, owned.
struct Pending {
    webhook_id: String,
    received_at: DateTime<Utc>,
    location_id: Option<String>,
    write: Option<EventWrite>,
}

impl Pending {
    fn delivery(&self) -> Delivery<'_> {
        Delivery {
            receipt: Receipt {
                webhook_id: &self.webhook_id,
                received_at: self.received_at,
                location_id: self.location_id.as_deref(),
            },
            write: self.write.as_ref(),
        }
    }
}

/// The deliveries waiting for the next webhook batch, each with where its answer goes.
type Queue = Vec<(Pending, oneshot::Sender<Result<Applied, StoreError>>)>;

/// The store's state for group commit (shared by its clones).
pub(super) struct WebhookBatches {
    pending: std::sync::Mutex<Queue>,
    /// The batches' writer on PostgreSQL (SQLite's is the store's write gate).
    gate: Arc<tokio::sync::Mutex<()>>,
    group_commit: AtomicBool,
}

impl Default for WebhookBatches {
    fn default() -> Self {
        Self {
            pending: std::sync::Mutex::new(Vec::new()),
            gate: Arc::new(tokio::sync::Mutex::new(())),
            group_commit: AtomicBool::new(true),
        }
    }
}

impl WebhookBatches {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue holds no invariant a panic could break halfway: take it as it is.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The error of a delivery whose batch ended without answering it (its writer panicked).
fn lost() -> StoreError {
    StoreError::Db(DbErr::Custom(
        "the webhook batch ended without an answer".to_owned(),
    ))
}

/// Rows per multi-row insert of `webhookId`s (2 binds each).
const RECEIPTS_PER_INSERT: usize = 1_000;

/// Records the deliveries' `webhookId`s; whether each is new (neither recorded before nor earlier
/// in the batch).
async fn record_receipts(
    txn: &DatabaseTransaction,
    deliveries: &[Delivery<'_>],
) -> Result<Vec<bool>, DbErr> {
    let mut first = HashSet::new();
    let unique: Vec<&Receipt<'_>> = deliveries
        .iter()
        .map(|d| &d.receipt)
        .filter(|r| first.insert(r.webhook_id))
        .collect();
    let mut inserted = HashSet::new();
    for chunk in unique.chunks(RECEIPTS_PER_INSERT) {
        let mut insert = Query::insert();
        insert
            .into_table("webhook_events")
            .columns(["webhook_id", "received_at"]);
        for r in chunk {
            insert.values_panic([r.webhook_id.to_owned().into(), to_ms(r.received_at).into()]);
        }
        insert
            .on_conflict(OnConflict::column("webhook_id").do_nothing().to_owned())
            .returning_col("webhook_id");
        for row in txn.query_all(&insert).await? {
            inserted.insert(row.try_get::<String>("", "webhook_id")?);
        }
    }
    // Only the first delivery of an id is new; a later one in the batch is its duplicate.
    Ok(deliveries
        .iter()
        .map(|d| inserted.remove(d.receipt.webhook_id))
        .collect())
}

/// What [`Store::apply_webhook`] did. Every variant but `Duplicate` recorded the `webhookId`.
#[derive(Clone, Debug, PartialEq)]
pub enum Applied {
    /// The `webhookId` was already recorded: nothing written.
    Duplicate,
    /// The location is neither cached nor connected: nothing written.
    UnknownLocation,
    /// The rows were changed: the location's data version moved and a change was published.
    Written {
        kind: ChangeKind,
        op: ChangeOp,
        ids: Vec<String>,
    },
    /// Nothing to change: the cache holds newer data, the row is deleted, or (for messages and
    /// unread counts) the cache does not hold the conversation yet.
    Unchanged,
}

/// `table.col` is older than or as old as the event's (the new row's) `col`, or unknown.
fn not_newer(table: &str, col: &str) -> String {
    format!(
        "{table}.deleted = FALSE AND ({table}.{col} IS NULL OR {table}.{col} <= excluded.{col})"
    )
}

impl Store {
    /// Records `receipt.webhook_id` and applies `write` (`None` for an event that changes nothing
    /// in the cache: recorded only), atomically: a failure writes nothing of the event (GHL
    /// retries, and the retry is not a duplicate). Bumps the location's data version and
    /// publishes a [`crate::domain::ChangeEvent`] (source `WEBHOOK`) when rows changed. Answers
    /// once the transaction that holds the event has committed: with group commit on (the
    /// default), the event joins the deliveries waiting for the writer and they commit together
    /// (see the module's documentation).
    pub async fn apply_webhook(
        &self,
        receipt: Receipt<'_>,
        write: Option<&EventWrite>,
    ) -> Result<Applied, StoreError> {
        if !self.webhooks.group_commit.load(Ordering::Relaxed) {
            let delivery = Delivery { receipt, write };
            return self
                .apply_webhooks(&[delivery])
                .await
                .pop()
                .unwrap_or_else(|| Err(lost()));
        }
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            webhook_id: receipt.webhook_id.to_owned(),
            received_at: receipt.received_at,
            location_id: receipt.location_id.map(str::to_owned),
            write: write.cloned(),
        };
        let first = {
            let mut queue = self.webhooks.lock();
            queue.push((pending, answer));
            queue.len() == 1
        };
        // The first delivery of a batch starts its writer; the others find it waiting. The
        // writer is a task of its own, so a delivery whose client goes away (its future dropped)
        // does not take the batch down with it.
        if first {
            let store = self.clone();
            tokio::spawn(async move { store.drain_webhooks().await });
        }
        answered.await.unwrap_or_else(|_| Err(lost()))
    }

    /// Applies `deliveries` in one transaction, in order, after the writers queued before (see the
    /// module's documentation); one answer per delivery, as [`Store::apply_webhook`] gives it.
    pub async fn apply_webhooks(
        &self,
        deliveries: &[Delivery<'_>],
    ) -> Vec<Result<Applied, StoreError>> {
        let _writing = self.webhook_writer().await;
        self.apply_batch(deliveries).await
    }

    /// Whether [`Store::apply_webhook`] commits waiting deliveries together (on by default; the
    /// bench turns it off to measure one transaction per event in the same run).
    pub fn set_webhook_group_commit(&self, on: bool) {
        self.webhooks.group_commit.store(on, Ordering::Relaxed);
    }

    /// The writer of webhook batches: SQLite's write gate (shared with every writer), else the
    /// webhooks' own gate (PostgreSQL takes concurrent writers; the gate lets deliveries gather
    /// into batches, and two batches never lock the same rows in opposite orders).
    async fn webhook_writer(&self) -> tokio::sync::OwnedMutexGuard<()> {
        let gate = self
            .write_gate
            .clone()
            .unwrap_or_else(|| self.webhooks.gate.clone());
        gate.lock_owned().await
    }

    /// Takes the writer, then every delivery queued until then, and answers each.
    async fn drain_webhooks(&self) {
        let _writing = self.webhook_writer().await;
        let batch = std::mem::take(&mut *self.webhooks.lock());
        if batch.is_empty() {
            return;
        }
        let (pending, answers): (Vec<Pending>, Vec<_>) = batch.into_iter().unzip();
        let deliveries: Vec<Delivery<'_>> = pending.iter().map(Pending::delivery).collect();
        let results = self.apply_batch(&deliveries).await;
        for (answer, result) in answers.into_iter().zip(results) {
            // A delivery whose client went away no longer listens: its event is applied anyway.
            let _ = answer.send(result);
        }
    }

    /// [`Store::apply_webhooks`] with the writer held: the batch in one transaction, or, when it
    /// fails, each event in a transaction of its own.
    async fn apply_batch(&self, deliveries: &[Delivery<'_>]) -> Vec<Result<Applied, StoreError>> {
        match self.try_batch(deliveries).await {
            Ok(applied) => applied.into_iter().map(Ok).collect(),
            Err(error) if deliveries.len() == 1 => vec![Err(error.into())],
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    events = deliveries.len(),
                    "webhook batch failed: applying its events one by one"
                );
                let mut results = Vec::with_capacity(deliveries.len());
                for delivery in deliveries {
                    let alone = self.try_batch(std::slice::from_ref(delivery)).await;
                    results.push(match alone {
                        Ok(mut applied) => applied.pop().ok_or_else(lost),
                        Err(error) => Err(error.into()),
                    });
                }
                results
            }
        }
    }

    /// One transaction for `deliveries`; after its commit, bumps the data versions and publishes
    /// the changes. Nothing is written when it fails.
    async fn try_batch(&self, deliveries: &[Delivery<'_>]) -> Result<Vec<Applied>, DbErr> {
        let txn = self.db.begin().await?;
        let fresh = record_receipts(&txn, deliveries).await?;
        let mut known_locations: HashMap<&str, bool> = HashMap::new();
        // The contacts whose rows were written, by id: the last written one's children win.
        let mut children: HashMap<&str, (&str, &Contact)> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        let mut revoked: Vec<&str> = Vec::new();
        let mut applied = Vec::with_capacity(deliveries.len());
        for (delivery, fresh) in deliveries.iter().zip(fresh) {
            if !fresh {
                applied.push(Applied::Duplicate);
                continue;
            }
            let Some(location_id) = delivery.receipt.location_id else {
                applied.push(Applied::Unchanged);
                continue;
            };
            let is_known = match known_locations.get(location_id) {
                Some(known) => *known,
                None => {
                    let is_known = known(&txn, location_id).await?;
                    known_locations.insert(location_id, is_known);
                    is_known
                }
            };
            if !is_known {
                applied.push(Applied::UnknownLocation);
                continue;
            }
            let Some(write) = delivery.write else {
                applied.push(Applied::Unchanged);
                continue;
            };
            if let EventWrite::Uninstalled { at } = write {
                if revoke(&txn, location_id, *at).await? {
                    revoked.push(location_id);
                }
                applied.push(Applied::Unchanged);
                continue;
            }
            let mark = to_ms(delivery.receipt.received_at);
            let changed = apply(&txn, location_id, mark, write).await?;
            if let (Some(_), EventWrite::Contact(c)) = (&changed, write)
                && children.insert(&c.id, (location_id, c)).is_none()
            {
                order.push(&c.id);
            }
            applied.push(match changed {
                Some((kind, op, id)) => Applied::Written {
                    kind,
                    op,
                    ids: vec![id],
                },
                None => Applied::Unchanged,
            });
        }
        let mut by_location: HashMap<&str, Vec<&Contact>> = HashMap::new();
        for id in order {
            if let Some((location_id, contact)) = children.get(id) {
                by_location.entry(location_id).or_default().push(contact);
            }
        }
        for (location_id, contacts) in &by_location {
            replace_contact_children(&txn, location_id, contacts).await?;
        }
        txn.commit().await?;
        for location_id in revoked {
            // A credential state change: the location's sync state (and answers) move.
            self.bump(location_id);
        }
        for (delivery, applied) in deliveries.iter().zip(&applied) {
            if let (Applied::Written { kind, op, ids }, Some(location_id)) =
                (applied, delivery.receipt.location_id)
            {
                self.committed(location_id, *kind, *op, ids.clone(), ChangeSource::Webhook);
            }
        }
        Ok(applied)
    }

    /// Forgets the `webhookId`s received before `before` (their events are outside the
    /// timestamp window by then, so a replay is refused on its timestamp). Returns how many.
    pub async fn prune_webhook_ids(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let delete = Query::delete()
            .from_table("webhook_events")
            .and_where(Expr::col("received_at").lt(to_ms(before)))
            .to_owned();
        Ok(self.db.execute(&delete).await?.rows_affected())
    }

    /// Lifts an `UNINSTALL`'s revocation of `location_id`'s credential when it is an agency
    /// credential (the gateway mints location tokens from it, so the install connects the
    /// location again). Whether it did; the location's data version moves when it did.
    pub async fn reinstate_credential(&self, location_id: &str) -> Result<bool, StoreError> {
        let update = Query::update()
            .table("credentials")
            .value("revoked_at", Option::<i64>::None)
            .and_where(Expr::col("location_id").eq(location_id))
            .and_where(Expr::col("kind").eq("agency"))
            .and_where(Expr::col("revoked_at").is_not_null())
            .to_owned();
        let changed = self.db.execute(&update).await?.rows_affected() > 0;
        if changed {
            self.bump(location_id);
        }
        Ok(changed)
    }

    /// Whether the location's credentials were revoked by an `UNINSTALL` (and not replaced).
    pub async fn credential_revoked(&self, location_id: &str) -> Result<bool, StoreError> {
        let select = Query::select()
            .column("revoked_at")
            .from("credentials")
            .and_where(Expr::col("location_id").eq(location_id))
            .to_owned();
        let row = self.db.query_one(&select).await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<i64>>("", "revoked_at")?.is_some(),
            None => false,
        })
    }
}

/// Whether the gateway knows the location: cached, or with credentials to sync it.
async fn known(txn: &DatabaseTransaction, location_id: &str) -> Result<bool, DbErr> {
    for table in ["locations", "credentials"] {
        let id = if table == "locations" {
            "id"
        } else {
            "location_id"
        };
        let select = Query::select()
            .expr(Expr::val(1))
            .from(table)
            .and_where(Expr::col(id).eq(location_id))
            .to_owned();
        if txn.query_one(&select).await?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Applies one write; returns the kind, operation and id of the row it changed, if any. A
/// contact's tags and custom values are left to the caller (one rewrite per batch).
async fn apply(
    txn: &DatabaseTransaction,
    location_id: &str,
    mark: i64,
    write: &EventWrite,
) -> Result<Option<(ChangeKind, ChangeOp, String)>, DbErr> {
    let upsert = |id: &str, kind| Some((kind, ChangeOp::Upsert, id.to_owned()));
    let delete = |id: &str, kind| Some((kind, ChangeOp::Delete, id.to_owned()));
    let changed = match write {
        EventWrite::Contact(c) => {
            let row = contact_row(c, location_id, mark, false);
            // The caller rewrites the tags and custom values of the contacts written.
            conditional(txn, "contacts", CONTACT_COLS, &[], row, "date_updated")
                .await?
                .then(|| upsert(&c.id, ChangeKind::Contact))
                .flatten()
        }
        EventWrite::ContactDeleted(c) => {
            let row = contact_row(c, location_id, mark, true);
            mark_deleted(txn, "contacts", CONTACT_COLS, row, "date_updated")
                .await?
                .then(|| delete(&c.id, ChangeKind::Contact))
                .flatten()
        }
        EventWrite::Task(t) => {
            let row = task_row(t, location_id, mark);
            let keep = &["contact_id", "body"];
            conditional(txn, "tasks", TASK_COLS, keep, row, "date_updated")
                .await?
                .then(|| upsert(&t.id, ChangeKind::Task))
                .flatten()
        }
        EventWrite::TaskDeleted(t) => {
            let mut row = task_row(t, location_id, mark);
            set(&mut row, TASK_COLS, "deleted", true.into());
            mark_deleted(txn, "tasks", TASK_COLS, row, "date_updated")
                .await?
                .then(|| delete(&t.id, ChangeKind::Task))
                .flatten()
        }
        EventWrite::Opportunity(o) => {
            let row = opportunity_row(o, location_id, mark);
            conditional(
                txn,
                "opportunities",
                OPPORTUNITY_COLS,
                &[],
                row,
                "updated_at",
            )
            .await?
            .then(|| upsert(&o.id, ChangeKind::Opportunity))
            .flatten()
        }
        EventWrite::OpportunityDeleted(o) => {
            let mut row = opportunity_row(o, location_id, mark);
            set(&mut row, OPPORTUNITY_COLS, "deleted", true.into());
            mark_deleted(txn, "opportunities", OPPORTUNITY_COLS, row, "updated_at")
                .await?
                .then(|| delete(&o.id, ChangeKind::Opportunity))
                .flatten()
        }
        EventWrite::Message {
            conversation_id,
            body,
            message_type,
            date,
        } => {
            let date = to_ms(*date);
            let update = Query::update()
                .table("conversations")
                .value("last_message_body", body.clone())
                .value("last_message_type", message_type.clone())
                .value("last_message_date", date)
                .value("seen_at", mark)
                .and_where(Expr::col("id").eq(conversation_id.as_str()))
                .and_where(Expr::col("location_id").eq(location_id))
                .and_where(Expr::cust("deleted = FALSE"))
                .and_where(
                    Expr::col("last_message_date")
                        .is_null()
                        .or(Expr::col("last_message_date").lte(date)),
                )
                .to_owned();
            (txn.execute(&update).await?.rows_affected() > 0)
                .then(|| upsert(conversation_id, ChangeKind::Conversation))
                .flatten()
        }
        EventWrite::ConversationUnread {
            conversation_id,
            unread_count,
            deleted,
            at,
        } => {
            let at = to_ms(*at);
            let update = Query::update()
                .table("conversations")
                .value("unread_count", *unread_count)
                .value("deleted", *deleted)
                .value("date_updated", at)
                .value("seen_at", mark)
                .and_where(Expr::col("id").eq(conversation_id.as_str()))
                .and_where(Expr::col("location_id").eq(location_id))
                .and_where(Expr::cust("deleted = FALSE"))
                .and_where(
                    Expr::col("date_updated")
                        .is_null()
                        .or(Expr::col("date_updated").lte(at)),
                )
                .to_owned();
            let op = if *deleted { delete } else { upsert };
            (txn.execute(&update).await?.rows_affected() > 0)
                .then(|| op(conversation_id, ChangeKind::Conversation))
                .flatten()
        }
        // Handled by `revoke`: no cached record changes.
        EventWrite::Uninstalled { .. } => None,
    };
    Ok(changed)
}

/// Marks the location's credential revoked (an `UNINSTALL`); whether it was live.
async fn revoke(
    txn: &DatabaseTransaction,
    location_id: &str,
    at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let update = Query::update()
        .table("credentials")
        .value("revoked_at", to_ms(at))
        .and_where(Expr::col("location_id").eq(location_id))
        .and_where(Expr::col("revoked_at").is_null())
        .to_owned();
    Ok(txn.execute(&update).await?.rows_affected() > 0)
}

/// Replaces the value of column `col` in `row` (laid out as `cols`).
fn set(row: &mut Row, cols: &[&str], col: &str, value: sea_orm::sea_query::Value) {
    if let Some(at) = cols.iter().position(|c| *c == col) {
        row[at] = value;
    }
}

/// Inserts `row`, or overwrites the existing one when it is live and not newer than `row` by
/// `version_col`. The `keep` columns keep their stored value when `row` has none. Whether the
/// row was written.
async fn conditional(
    txn: &DatabaseTransaction,
    table: &'static str,
    cols: &'static [&'static str],
    keep: &[&'static str],
    row: Row,
    version_col: &str,
) -> Result<bool, DbErr> {
    let update: Vec<&'static str> = cols
        .iter()
        .copied()
        .filter(|c| *c != "id" && !keep.contains(c))
        .collect();
    let condition = not_newer(table, version_col);
    let written = upsert_where(
        txn,
        table,
        cols,
        &["id"],
        &update,
        keep,
        Some(&condition),
        vec![row],
    )
    .await?;
    Ok(written > 0)
}

/// Inserts `row` (already marked deleted) when the cache never had it, else marks the live row
/// deleted and moves its `version_col` to the event's time, so that a sync page read before the
/// delete does not bring the row back (see `write::upsert_unless_newer`). Whether a row changed.
async fn mark_deleted(
    txn: &DatabaseTransaction,
    table: &'static str,
    cols: &'static [&'static str],
    row: Row,
    version_col: &'static str,
) -> Result<bool, DbErr> {
    let condition = format!("{table}.deleted = FALSE");
    let written = upsert_where(
        txn,
        table,
        cols,
        &["id"],
        &["deleted", version_col],
        &[],
        Some(&condition),
        vec![row],
    )
    .await?;
    Ok(written > 0)
}
