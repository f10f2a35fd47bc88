//! The writes of GHL webhook events: one transaction per event that records its `webhookId` (so a
//! replay is refused by every replica and after a restart) and applies the event, order-safely.
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

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr};

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
    /// Records `receipt.webhook_id` and applies `write`, in one transaction: a failure writes
    /// nothing (GHL retries, and the retry is not a duplicate). `write` is `None` for an event
    /// that changes nothing in the cache (recorded only). Bumps the location's data version and
    /// publishes a [`crate::domain::ChangeEvent`] (source `WEBHOOK`) when rows changed.
    pub async fn apply_webhook(
        &self,
        receipt: Receipt<'_>,
        write: Option<&EventWrite>,
    ) -> Result<Applied, StoreError> {
        let (_writing, txn) = self.begin_write().await?;
        let insert = Query::insert()
            .into_table("webhook_events")
            .columns(["webhook_id", "received_at"])
            .values_panic([
                receipt.webhook_id.to_owned().into(),
                to_ms(receipt.received_at).into(),
            ])
            .on_conflict(OnConflict::column("webhook_id").do_nothing().to_owned())
            .to_owned();
        if txn.execute(&insert).await?.rows_affected() == 0 {
            txn.rollback().await?;
            return Ok(Applied::Duplicate);
        }
        let Some(location_id) = receipt.location_id else {
            txn.commit().await?;
            return Ok(Applied::Unchanged);
        };
        if !known(&txn, location_id).await? {
            txn.commit().await?;
            return Ok(Applied::UnknownLocation);
        }
        let Some(write) = write else {
            txn.commit().await?;
            return Ok(Applied::Unchanged);
        };
        let mark = to_ms(receipt.received_at);
        if let EventWrite::Uninstalled { at } = write {
            let revoked = revoke(&txn, location_id, *at).await?;
            txn.commit().await?;
            if revoked {
                // A credential state change: the location's sync state (and answers) move.
                self.bump(location_id);
            }
            return Ok(Applied::Unchanged);
        }
        let changed = apply(&txn, location_id, mark, write).await?;
        txn.commit().await?;
        Ok(match changed {
            Some((kind, op, id)) => {
                let ids = vec![id];
                self.committed(location_id, kind, op, ids.clone(), ChangeSource::Webhook);
                Applied::Written { kind, op, ids }
            }
            None => Applied::Unchanged,
        })
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

/// Applies one write; returns the kind, operation and id of the row it changed, if any.
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
            let written =
                conditional(txn, "contacts", CONTACT_COLS, &[], row, "date_updated").await?;
            if written {
                replace_contact_children(txn, location_id, &[c]).await?;
            }
            written
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
