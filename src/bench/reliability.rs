//! The reliability harness (issue 19), shared by the CI test
//! (`tests/api/reliability.rs`: 4 kills, 1,200 contacts) and the bench section
//! (`bench --only reliability`: 20 kills, 10,000 contacts): FULL syncs of a simulator location
//! killed at seeded random points under GHL's faults, GHL changing between kills, then runs to a
//! successful job. The cache must then be GHL as of that job's claims (every synced field of every
//! row), its `syncedAt` the oldest read time of the stages it kept, and one more clean FULL run
//! must make it equal to GHL.
//!
//! A "process" is a sync engine on its own Tokio runtime: killing it drops the runtime where it
//! stands (`shutdown_background`), so no shutdown code runs, transactions in flight are dropped
//! and the job row stays RUNNING, as after `kill -9`.
//!
//! Uses the simulator's in-process handle and the store; must not reach into the sync engine's
//! internals (it only starts engines, watches their events and reads the store).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::app::credentials::StoreCredentials;
use crate::domain::{JobState, Resource, SyncMode, SyncStage, to_ms};
use crate::sim::{FaultConfig, FaultSpec, Sim, SimArgs, SimHandle};
use crate::store::entities::{
    contact, contact_custom_value, conversation, opportunity, task, user,
};
use crate::store::{DatabaseConfig, Store};
use crate::sync::{SyncConfig, SyncEngine};
use crate::upstream::{Client, UpstreamConfig};

/// The size of one harness run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Seeds the simulator's data and every random choice (kill points, changes, faults).
    pub seed: u64,
    /// Contacts of the simulated location (tasks, conversations and opportunities follow the
    /// simulator's ratios).
    pub contacts: usize,
    /// Processes started to be killed mid-job.
    pub kills: usize,
}

/// The figures of one harness run. The run passes when `mismatches`, `clean_mismatches` are 0
/// and `synced_at_honest` holds.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// Processes killed mid-job (a kill sent after the job ended is not counted).
    pub kills: usize,
    /// Processes started in all, the killed ones and those run to the end.
    pub processes: usize,
    /// Rows (ids present in the cache or in GHL, all resources) compared after the last resumed
    /// job.
    pub rows_compared: usize,
    /// Rows that were not GHL as of the job's claims.
    pub mismatches: usize,
    /// A few of them, described.
    pub mismatch_examples: Vec<String>,
    /// Stages of the last resumed job whose data an earlier process read.
    pub kept_stages: usize,
    /// The job's `syncedAt` (job row and the location's freshness) is the oldest read time of its
    /// stages.
    pub synced_at_honest: bool,
    /// GHL calls (the simulator's count, every answer and fault included) from the first killed
    /// process to the successful job.
    pub calls: u64,
    /// GHL calls of one clean FULL run afterwards (no faults, nothing to resume).
    pub clean_calls: u64,
    /// Rows that differ from GHL after the clean run (ids, all resources).
    pub clean_mismatches: usize,
    /// Rows compared after the clean run.
    pub clean_rows: usize,
    /// From the first killed process to the successful job.
    pub wall: Duration,
    /// The clean FULL run.
    pub clean_wall: Duration,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A sync "process": an engine on its own runtime running (or resuming) a FULL job.
struct Process {
    /// Pages the job wrote so far, as the engine's events tell.
    pages: mpsc::UnboundedReceiver<i64>,
    kill: Option<oneshot::Sender<()>>,
    /// The state of the location's last job when the process ended on its own; `None` when it
    /// was killed.
    done: tokio::task::JoinHandle<anyhow::Result<Option<JobState>>>,
}

impl Process {
    /// An engine on its own runtime that starts (or resumes) a FULL sync of `location_id`.
    fn start(db_url: &str, sim: &SimHandle, location_id: &str) -> Self {
        let (pages_tx, pages) = mpsc::unbounded_channel();
        let (kill, killed) = oneshot::channel::<()>();
        let (url, base_url, loc) = (
            db_url.to_owned(),
            sim.base_url.clone(),
            location_id.to_owned(),
        );
        let (client_id, client_secret) = (sim.client_id.clone(), sim.client_secret.clone());
        let done = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("cannot build the process's runtime")?;
            let state = runtime.block_on(async move {
                let store = Store::open(&DatabaseConfig::new(&url)).await?;
                let mut config = UpstreamConfig::new(base_url);
                config.client_id = Some(client_id);
                config.client_secret = Some(client_secret.into());
                config.backoff_ms = 10;
                config.spurious_backoff_ms = 10;
                config.timeout_secs = 1;
                config.max_retries = 6;
                let credentials = StoreCredentials::new(store.clone(), None);
                let client = Client::new(config, Arc::new(credentials))?;
                let sync = SyncConfig {
                    failure_cooldown_secs: 0,
                    ..Default::default()
                };
                let engine = SyncEngine::start(store.clone(), client, sync).await?;
                let mut events = engine.subscribe();
                engine.refresh(&loc, SyncMode::Full).await?;
                let watch = async {
                    let mut base = None;
                    loop {
                        match events.recv().await {
                            Ok(event) if event.location_id == loc => {
                                let pages: i64 = event.job.stages.iter().map(|s| s.pages).sum();
                                let base = *base.get_or_insert(pages);
                                let _ = pages_tx.send(pages - base);
                                if event.job.is_finished() {
                                    return;
                                }
                            }
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => return,
                        }
                    }
                };
                anyhow::Ok(tokio::select! {
                    _ = killed => None,
                    _ = watch => {
                        engine.wait_idle(&loc, Duration::from_secs(60)).await;
                        store.last_job(&loc).await?.map(|j| j.state)
                    }
                })
            });
            // The kill: every task stops where it is; nothing runs the engine's shutdown.
            runtime.shutdown_background();
            state
        });
        Process {
            pages,
            kill: Some(kill),
            done,
        }
    }

    async fn ended(self) -> anyhow::Result<Option<JobState>> {
        self.done.await.context("the process panicked")?
    }
}

/// Whether the store holds an access token other than `expired`: the renewal of a process whose
/// token expired mid-run has been stored.
///
/// A kill between GHL's answer to a refresh and the store's write loses the rotated refresh
/// token: GHL spent the old one (FACTS.md §8.1) and the new one dies with the process. No client
/// can recover from that but by a new install, and the gateway then marks the location's
/// credentials refused. The harness is about rows, so the run whose token expired is killed only
/// once its renewal is stored (at the first page after it): killed mid-renewal, about one CI run
/// in six failed, every later try refused the spent token.
async fn renewal_stored(store: &Store, location_id: &str, expired: &str) -> anyhow::Result<bool> {
    let token = store
        .credential(location_id)
        .await?
        .and_then(|c| c.access_token);
    Ok(token.as_deref() != Some(expired))
}

/// The fault mix of the killed runs: 5xx, resets, hangs (1 s client timeout), truncated and
/// malformed bodies, spurious 429s; a storm of 429s when `storm`.
///
/// `POST /oauth/token` gets every fault but the broken bodies: the simulator breaks a body after
/// the route has answered, and a refresh that was answered has spent its refresh token (GHL
/// rotates it, FACTS.md §8.1) while its successor is lost with the body. No client can recover
/// from that but by a new install; the gateway marks the location's credentials refused. The
/// harness is about rows, and such a run would only show that loss (see [`renewal_stored`]
/// for the same loss by a kill).
fn fault_mix(storm: bool) -> FaultConfig {
    let default = FaultSpec {
        error500: 0.02,
        error502: 0.01,
        error503: 0.03,
        reset: 0.02,
        hang: 0.01,
        truncate: 0.01,
        malformed: 0.01,
        rate_limit: if storm { 0.5 } else { 0.02 },
    };
    let token = FaultSpec {
        truncate: 0.0,
        malformed: 0.0,
        ..default.clone()
    };
    FaultConfig {
        default,
        endpoints: [("oauth.token".to_owned(), token)].into(),
    }
}

fn sim_error(error: String) -> anyhow::Error {
    anyhow::anyhow!("simulator: {error}")
}

/// GHL changes between kills: contacts, tasks, conversations and opportunities created, edited
/// (a new message moves a conversation to the top; a new due date moves a task) and deleted.
fn change_ghl(
    sim: &SimHandle,
    loc: &str,
    rng: &mut ChaCha8Rng,
    round: usize,
) -> anyhow::Result<()> {
    let truth = sim.dump(loc).context("the simulator holds the location")?;
    let ids = |kind: &str| -> Vec<String> {
        truth[kind]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let pick =
        |rng: &mut ChaCha8Rng, list: &[String]| list[rng.random_range(0..list.len())].clone();
    let (contacts, tasks) = (ids("contacts"), ids("tasks"));
    let (conversations, opportunities) = (ids("conversations"), ids("opportunities"));
    anyhow::ensure!(
        [&contacts, &tasks, &conversations, &opportunities]
            .iter()
            .all(|l| !l.is_empty()),
        "the location holds records of every kind"
    );
    for i in 0..3 {
        let id = pick(rng, &contacts);
        let body =
            json!({ "firstName": format!("Round{round}-{i}"), "tags": [format!("r{round}")] });
        sim.update(loc, "contacts", &id, body).map_err(sim_error)?;
    }
    sim.create(
        loc,
        "contacts",
        json!({ "firstName": format!("New{round}"), "email": format!("new{round}@example.com") }),
    )
    .map_err(sim_error)?;
    // Deletes and some edits may meet a record an earlier change deleted: that is fine.
    let _ = sim.delete(loc, "contacts", &pick(rng, &contacts));
    let id = pick(rng, &tasks);
    let due = now_ms() + rng.random_range(-86_400_000..86_400_000_i64);
    sim.update(
        loc,
        "tasks",
        &id,
        json!({ "title": format!("Moved{round}"), "dueDate": due }),
    )
    .map_err(sim_error)?;
    let _ = sim.update(
        loc,
        "tasks",
        &pick(rng, &tasks),
        json!({ "completed": true }),
    );
    sim.create(
        loc,
        "tasks",
        json!({ "contactId": pick(rng, &contacts), "title": format!("Task{round}") }),
    )
    .map_err(sim_error)?;
    let _ = sim.delete(loc, "tasks", &pick(rng, &tasks));
    for i in 0..2 {
        let id = pick(rng, &conversations);
        let body = json!({ "lastMessageBody": format!("Message {round}-{i}") });
        let _ = sim.update(loc, "conversations", &id, body);
    }
    let _ = sim.update(
        loc,
        "conversations",
        &pick(rng, &conversations),
        json!({ "unreadCount": 7 }),
    );
    sim.create(
        loc,
        "conversations",
        json!({ "contactId": pick(rng, &contacts), "lastMessageBody": format!("Hello {round}") }),
    )
    .map_err(sim_error)?;
    let _ = sim.delete(loc, "conversations", &pick(rng, &conversations));
    let body = json!({ "status": "won", "monetaryValue": 1234.5 + round as f64 });
    let _ = sim.update(loc, "opportunities", &pick(rng, &opportunities), body);
    let _ = sim.delete(loc, "opportunities", &pick(rng, &opportunities));
    Ok(())
}

fn text(v: &Value) -> Option<String> {
    v.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn ms(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        _ => None,
    }
}

/// Every synced field of every row, by resource and id (one string per row).
type Rows = HashMap<Resource, BTreeMap<String, String>>;

/// The rows as GHL (the simulator's dump of a location) holds them.
fn truth_rows(dump: &Value) -> Rows {
    let list = |key: &str| dump[key].as_array().cloned().unwrap_or_default();
    let mut rows = Rows::new();
    let id = |r: &Value| r["id"].as_str().unwrap_or_default().to_owned();
    rows.insert(
        Resource::Contacts,
        list("contacts")
            .iter()
            .map(|c| {
                let mut fields: Vec<(String, String)> = c["customFields"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|f| {
                        let field = f["id"].as_str().unwrap_or_default().to_owned();
                        (field, f["value"].to_string())
                    })
                    .collect();
                fields.sort();
                let row = (
                    text(&c["firstName"]),
                    text(&c["lastName"]),
                    text(&c["email"]),
                    text(&c["phone"]),
                    text(&c["companyName"]),
                    text(&c["assignedTo"]),
                    c["tags"].to_string(),
                    (ms(&c["dateAdded"]), ms(&c["dateUpdated"])),
                    fields,
                );
                (id(c), format!("{row:?}"))
            })
            .collect(),
    );
    rows.insert(
        Resource::Tasks,
        list("tasks")
            .iter()
            .map(|t| {
                let row = (
                    text(&t["title"]),
                    text(&t["body"]),
                    t["completed"].as_bool().unwrap_or(false),
                    text(&t["contactId"]),
                    text(&t["assignedTo"]),
                    ms(&t["dueDate"]),
                );
                (id(t), format!("{row:?}"))
            })
            .collect(),
    );
    rows.insert(
        Resource::Conversations,
        list("conversations")
            .iter()
            .map(|c| {
                let row = (
                    text(&c["contactId"]),
                    text(&c["type"]),
                    text(&c["lastMessageBody"]),
                    text(&c["lastMessageType"]),
                    ms(&c["lastMessageDate"]),
                    c["unreadCount"].as_i64().unwrap_or_default() as i32,
                );
                (id(c), format!("{row:?}"))
            })
            .collect(),
    );
    rows.insert(
        Resource::Opportunities,
        list("opportunities")
            .iter()
            .map(|o| {
                let row = (
                    text(&o["name"]),
                    text(&o["status"]),
                    o["monetaryValue"]
                        .as_f64()
                        .map(|v| (v * 100.0).round() as i64),
                    text(&o["pipelineId"]),
                    text(&o["pipelineStageId"]),
                    text(&o["contactId"]),
                    text(&o["assignedTo"]),
                    ms(&o["updatedAt"]),
                );
                (id(o), format!("{row:?}"))
            })
            .collect(),
    );
    rows.insert(
        Resource::Users,
        list("users")
            .iter()
            .map(|u| (id(u), format!("{:?}", text(&u["email"]))))
            .collect(),
    );
    rows
}

/// A text as GHL's JSON is compared: empty is absent.
fn t(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// The same fields of the rows the cache serves (not deleted).
async fn cache_rows(store: &Store, loc: &str) -> anyhow::Result<Rows> {
    let db = store.connection();
    let mut values: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for v in contact_custom_value::Entity::find()
        .filter(contact_custom_value::Column::LocationId.eq(loc))
        .all(db)
        .await?
    {
        values
            .entry(v.contact_id)
            .or_default()
            .push((v.field_id, v.value));
    }
    let mut rows = Rows::new();
    rows.insert(
        Resource::Contacts,
        contact::Entity::find()
            .filter(contact::Column::LocationId.eq(loc))
            .filter(contact::Column::Deleted.eq(false))
            .all(db)
            .await?
            .into_iter()
            .map(|c| {
                let mut fields = values.remove(&c.id).unwrap_or_default();
                fields.sort();
                let row = (
                    t(c.first_name),
                    t(c.last_name),
                    t(c.email),
                    t(c.phone),
                    t(c.company_name),
                    t(c.assigned_to),
                    c.tags,
                    (Some(c.date_added), Some(c.date_updated)),
                    fields,
                );
                (c.id, format!("{row:?}"))
            })
            .collect(),
    );
    rows.insert(
        Resource::Tasks,
        task::Entity::find()
            .filter(task::Column::LocationId.eq(loc))
            .filter(task::Column::Deleted.eq(false))
            .all(db)
            .await?
            .into_iter()
            .map(|r| {
                let row = (
                    t(r.title),
                    t(r.body),
                    r.completed,
                    t(r.contact_id),
                    t(r.assigned_to),
                    r.due_date,
                );
                (r.id, format!("{row:?}"))
            })
            .collect(),
    );
    rows.insert(
        Resource::Conversations,
        conversation::Entity::find()
            .filter(conversation::Column::LocationId.eq(loc))
            .filter(conversation::Column::Deleted.eq(false))
            .all(db)
            .await?
            .into_iter()
            .map(|c| {
                let row = (
                    t(c.contact_id),
                    t(c.kind),
                    t(c.last_message_body),
                    t(c.last_message_type),
                    c.last_message_date,
                    c.unread_count,
                );
                (c.id, format!("{row:?}"))
            })
            .collect(),
    );
    rows.insert(
        Resource::Opportunities,
        opportunity::Entity::find()
            .filter(opportunity::Column::LocationId.eq(loc))
            .filter(opportunity::Column::Deleted.eq(false))
            .all(db)
            .await?
            .into_iter()
            .map(|o| {
                let row = (
                    t(o.name),
                    t(o.status),
                    o.monetary_value.map(|v| (v * 100.0).round() as i64),
                    t(o.pipeline_id),
                    t(o.stage_id),
                    t(o.contact_id),
                    t(o.assigned_to),
                    o.updated_at,
                );
                (o.id, format!("{row:?}"))
            })
            .collect(),
    );
    rows.insert(
        Resource::Users,
        user::Entity::find()
            .filter(user::Column::LocationId.eq(loc))
            .filter(user::Column::Deleted.eq(false))
            .all(db)
            .await?
            .into_iter()
            .map(|u| (u.id, format!("{:?}", t(u.email))))
            .collect(),
    );
    Ok(rows)
}

/// Checks that the cache is GHL as of the last job's claims: for each resource, every row (and
/// every absence) is as GHL held it at some moment since the stage's data began to be read.
/// `snapshots` are GHL's states, each taken before a process started (and GHL changed only
/// between processes). Returns the rows compared and the mismatches, described.
fn as_of_claims(
    cache: &Rows,
    snapshots: &[(i64, Rows)],
    stages: &[SyncStage],
) -> anyhow::Result<(usize, Vec<String>)> {
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for (resource, cached) in cache {
        let read_at = to_ms(
            stages
                .iter()
                .find(|s| s.resource == *resource)
                .and_then(|s| s.read_at)
                .with_context(|| format!("the {resource:?} stage of a successful job was read"))?,
        );
        // The first state GHL may have been read in: the last one taken before the read began.
        let from = snapshots
            .iter()
            .rposition(|(taken, _)| *taken <= read_at)
            .context("a stage was read after the first snapshot")?;
        let states: Vec<&BTreeMap<String, String>> = snapshots[from..]
            .iter()
            .filter_map(|(_, rows)| rows.get(resource))
            .collect();
        let ids: BTreeSet<&String> = cached
            .keys()
            .chain(states.iter().flat_map(|s| s.keys()))
            .collect();
        for id in ids {
            compared += 1;
            let got = cached.get(id);
            if !states.iter().any(|s| s.get(id) == got) {
                mismatches.push(format!(
                    "{resource:?} {id}: cached {got:?}, GHL since the read {:?}",
                    states.iter().map(|s| s.get(id)).collect::<Vec<_>>()
                ));
            }
        }
    }
    Ok((compared, mismatches))
}

/// The harness on the database at `db_url` (`store` is a connection to it, migrated): `kills`
/// processes killed at seeded points (2 to 9 pages in, plus up to 40 ms) under the fault mix,
/// one of them in a 429 storm and one with its OAuth token expiring mid-run; GHL changes between
/// kills; then processes run to a successful job (up to 8 tries under the mild mix). Then one
/// clean FULL run. Errors when the harness itself cannot run (the simulator, the database, no
/// successful job in 8 tries); what it checks is in the [`Figures`].
pub async fn killed_syncs_converge(
    db_url: &str,
    store: &Store,
    plan: Plan,
) -> anyhow::Result<Figures> {
    let sim = Sim::spawn(SimArgs {
        contacts: plan.contacts,
        locations: 1,
        seed: plan.seed,
        latency_ms: 2,
        jitter_ms: 4,
        fault_hang_ms: 1_500,
        ..Default::default()
    })
    .await
    .context("cannot start the simulator")?;
    let figures = run(db_url, store, plan, &sim).await;
    sim.shutdown().await;
    figures
}

async fn run(db_url: &str, store: &Store, plan: Plan, sim: &SimHandle) -> anyhow::Result<Figures> {
    let Plan { seed, kills, .. } = plan;
    anyhow::ensure!(kills > 0, "at least one kill");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let loc = sim.locations[0].id.clone();
    // Through OAuth, so that the access token can expire mid-run.
    let mut config = UpstreamConfig::new(sim.base_url.clone());
    config.client_id = Some(sim.client_id.clone());
    config.client_secret = Some(sim.client_secret.clone().into());
    let installer = Client::new(config, Arc::new(StoreCredentials::new(store.clone(), None)))?;
    let code = sim.auth_code("Location", Some(&loc)).map_err(sim_error)?;
    let installed = installer.install_with_code(&code).await?;
    anyhow::ensure!(installed == loc, "installed {installed}, not {loc}");

    let storm_run = rng.random_range(0..kills);
    let token_run = rng.random_range(0..kills);
    let mut figures = Figures::default();
    let mut snapshots: Vec<(i64, Rows)> = Vec::new();
    let dump = |sim: &SimHandle| sim.dump(&loc).context("the simulator holds the location");
    let started = Instant::now();
    for round in 0..kills {
        sim.wait_idle().await;
        snapshots.push((now_ms(), truth_rows(&dump(sim)?)));
        sim.set_faults(fault_mix(round == storm_run))
            .map_err(sim_error)?;
        let kill_after = rng.random_range(2..=9_i64);
        let expire_after = (round == token_run).then(|| rng.random_range(0..=(kill_after - 2)));
        let extra = Duration::from_millis(rng.random_range(0..40));
        let mut process = Process::start(db_url, sim, &loc);
        figures.processes += 1;
        let mut expired = None;
        while let Some(pages) = process.pages.recv().await {
            if expire_after.is_some_and(|at| pages >= at) && expired.is_none() {
                let token = store
                    .credential(&loc)
                    .await?
                    .and_then(|c| c.access_token)
                    .context("the installed location has an access token")?;
                anyhow::ensure!(sim.expire_token(&token), "the simulator knows the token");
                expired = Some(token);
            }
            if pages >= kill_after {
                tokio::time::sleep(extra).await;
                if let Some(token) = &expired
                    && !renewal_stored(store, &loc, token).await?
                {
                    continue;
                }
                if let Some(kill) = process.kill.take() {
                    // Sent after the job ended, a kill finds the process gone: not counted.
                    if kill.send(()).is_ok() {
                        figures.kills += 1;
                    }
                }
                break;
            }
        }
        process.ended().await?;
        // The kill was the process's end; GHL changes before the next one starts.
        sim.wait_idle().await;
        change_ghl(sim, &loc, &mut rng, round)?;
    }

    // To the end, under the mild mix: a job that fails (a body cut short, say) is resumed.
    sim.wait_idle().await;
    snapshots.push((now_ms(), truth_rows(&dump(sim)?)));
    sim.set_faults(fault_mix(false)).map_err(sim_error)?;
    let mut succeeded = false;
    let mut endings = Vec::new();
    for _ in 0..8 {
        let process = Process::start(db_url, sim, &loc);
        figures.processes += 1;
        let state = process.ended().await?;
        if state == Some(JobState::Succeeded) {
            succeeded = true;
            break;
        }
        let error = store.last_job(&loc).await?.and_then(|j| j.error);
        endings.push(format!("{state:?}: {error:?}"));
        sim.wait_idle().await;
    }
    anyhow::ensure!(
        succeeded,
        "no run ended well within 8 tries: {endings:#?}; oauth: {:?}",
        sim.counters().get("oauth.token")
    );
    figures.wall = started.elapsed();
    figures.calls = sim.total_requests();

    let last = store
        .last_snapshot(&loc)
        .await?
        .context("the location has a job")?;
    let read: Vec<i64> = last
        .stages
        .iter()
        .map(|s| s.read_at.map(to_ms).context("every stage was read"))
        .collect::<anyhow::Result<_>>()?;
    let oldest = read.iter().min().copied();
    let claimed = store.job_synced_at(&last.job.id).await?;
    let freshness = store.freshness(std::slice::from_ref(&loc)).await?;
    figures.synced_at_honest = oldest.is_some()
        && claimed == oldest
        && freshness.get(&loc).and_then(|f| f.synced_at) == oldest;
    let final_start = snapshots.last().map_or(0, |(t, _)| *t);
    figures.kept_stages = read.iter().filter(|r| **r < final_start).count();
    let cache = cache_rows(store, &loc).await?;
    let (compared, mismatches) = as_of_claims(&cache, &snapshots, &last.stages)?;
    figures.rows_compared = compared;
    figures.mismatches = mismatches.len();
    figures.mismatch_examples = mismatches.into_iter().take(5).collect();

    // A clean FULL run (nothing to resume) makes the cache GHL exactly, fresh from its start.
    sim.set_faults(FaultConfig::default()).map_err(sim_error)?;
    sim.wait_idle().await;
    sim.reset_counters();
    let before = now_ms();
    let clean_started = Instant::now();
    let state = Process::start(db_url, sim, &loc).ended().await?;
    anyhow::ensure!(
        state == Some(JobState::Succeeded),
        "the clean run ended {state:?}"
    );
    figures.clean_wall = clean_started.elapsed();
    figures.clean_calls = sim.total_requests();
    let clean = store
        .last_snapshot(&loc)
        .await?
        .context("the location has a job")?;
    let clean_synced = store.job_synced_at(&clean.job.id).await?;
    figures.synced_at_honest &= clean_synced.is_some_and(|s| s >= before);
    let cache = cache_rows(store, &loc).await?;
    let truth = truth_rows(&dump(sim)?);
    for (resource, rows) in &truth {
        let empty = BTreeMap::new();
        let got = cache.get(resource).unwrap_or(&empty);
        let ids: BTreeSet<&String> = rows.keys().chain(got.keys()).collect();
        figures.clean_rows += ids.len();
        for id in ids {
            if got.get(id) != rows.get(id) {
                figures.clean_mismatches += 1;
                if figures.mismatch_examples.len() < 10 {
                    figures
                        .mismatch_examples
                        .push(format!("after the clean run: {resource:?} {id}"));
                }
            }
        }
    }
    Ok(figures)
}

/// The heading of the section in `BENCHMARKS.md`.
pub const HEADING: &str = "## Reliability: syncs killed at random points (issue 19)";

/// The section's run on one database.
#[derive(Clone, Debug)]
pub struct ReliabilityResult {
    pub backend: String,
    pub plan: Plan,
    pub figures: Figures,
}

/// The plan of the bench section: 20 kills over 10,000 contacts (5 over 2,000 when `quick`).
pub fn bench_plan(quick: bool, database: usize) -> Plan {
    let (contacts, kills) = if quick { (2_000, 5) } else { (10_000, 20) };
    Plan {
        seed: 0x1900 + database as u64,
        contacts,
        kills,
    }
}

/// Runs the harness on each database of the bench (`args`' SQLite file and PostgreSQL server).
pub async fn run_section(args: &super::BenchArgs) -> anyhow::Result<Vec<ReliabilityResult>> {
    let (dir, databases) = super::bench_databases(args, "reliability").await?;
    let mut results = Vec::new();
    for (i, db) in databases.into_iter().enumerate() {
        let plan = bench_plan(args.quick, i);
        eprintln!(
            "bench: reliability on {}: {} kills over {} contacts",
            db.backend, plan.kills, plan.contacts
        );
        let outcome = async {
            let store = Store::open(&DatabaseConfig::new(&db.url)).await?;
            let figures = killed_syncs_converge(&db.url, &store, plan).await;
            store.close().await;
            figures
        }
        .await;
        let backend = db.backend.clone();
        db.drop().await;
        let figures = outcome?;
        eprintln!("bench: reliability on {backend}: {figures:?}");
        results.push(ReliabilityResult {
            backend,
            plan,
            figures,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(results)
}

/// The section's Markdown: the figures per database, the targets, how they are made.
pub fn markdown(results: &[ReliabilityResult], machine: &str) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{HEADING}\n\n\
         A simulator location (latency 2 + U(0..4) ms) synced FULL by engines that are killed \
         (their runtime dropped where it stands, as `kill -9`: no shutdown code, transactions in \
         flight lost, the job left RUNNING) 2 to 9 pages into their job plus 0 to 40 ms, all \
         seeded; under 2% 500s, 1% 502s, 3% 503s, 2% connection resets, 1% hangs (1 s client \
         timeout), 1% truncated and 1% malformed bodies, 2% spurious 429s, one run in a 429 storm \
         (50%) and one whose OAuth token expires mid-run. Between kills GHL changes: 3 contacts \
         edited, 1 created, 1 deleted; tasks moved, completed, created, deleted; conversations \
         given new messages and unread counts, created, deleted; opportunities won and deleted. \
         Then processes run to a successful job (the same faults, up to 8 tries), and one clean \
         FULL run (no faults, nothing to resume) follows.\n"
    );
    let _ = writeln!(
        s,
        "| database | contacts | kills survived | processes | rows compared | mismatches | stages kept from killed runs | `syncedAt` honest | GHL calls, killed + resumed runs | GHL calls, clean FULL run | ratio | wall s, killed + resumed | wall s, clean run | clean run: rows / mismatches |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for r in results {
        let f = &r.figures;
        let _ = writeln!(
            s,
            "| {} | {} | {} of {} | {} | {} | {} | {} | {} | {} | {} | {:.2}x | {:.1} | {:.1} | {} / {} |",
            r.backend,
            r.plan.contacts,
            f.kills,
            r.plan.kills,
            f.processes,
            f.rows_compared,
            f.mismatches,
            f.kept_stages,
            if f.synced_at_honest { "yes" } else { "**no**" },
            f.calls,
            f.clean_calls,
            f.calls as f64 / f.clean_calls.max(1) as f64,
            f.wall.as_secs_f64(),
            f.clean_wall.as_secs_f64(),
            f.clean_rows,
            f.clean_mismatches,
        );
    }
    let _ = writeln!(s, "\n| target | measured | status |\n| --- | --- | --- |");
    for r in results {
        let f = &r.figures;
        let met = |ok: bool| if ok { "met" } else { "**missed**" };
        let _ = writeln!(
            s,
            "| {}: 0 rows lost or wrong after {} kills over {} contacts | {} mismatches of {} rows; {} after the clean run | {} |",
            r.backend,
            r.plan.kills,
            r.plan.contacts,
            f.mismatches,
            f.rows_compared,
            f.clean_mismatches,
            met(f.mismatches == 0 && f.clean_mismatches == 0)
        );
        let _ = writeln!(
            s,
            "| {}: `syncedAt` is the oldest read of the data the job kept | {} | {} |",
            r.backend,
            if f.synced_at_honest {
                "equal, on the job row and the location's freshness"
            } else {
                "differs"
            },
            met(f.synced_at_honest)
        );
    }
    for (backend, example) in examples(results) {
        let _ = writeln!(s, "\n{backend}: {example}");
    }
    let _ = writeln!(
        s,
        "\n**Rows compared** counts every id in the cache or in GHL, all resources: after the last \
         resumed job each row (and each absence) must equal GHL as it was at some moment since \
         its stage began to be read, every synced field compared; after the clean run each must \
         equal GHL now. **GHL calls** are the simulator's count, faults and retries included. \
         `syncedAt` honest: the job's `syncedAt` and the location's freshness equal the oldest \
         read time of its stages (some kept from killed runs), and the clean run's is no earlier \
         than its start. The run (`bench --only reliability`):\n\n{}",
        machine.trim_end()
    );
    s
}

/// The mismatches' examples, by database.
fn examples(results: &[ReliabilityResult]) -> Vec<(String, String)> {
    results
        .iter()
        .flat_map(|r| {
            r.figures
                .mismatch_examples
                .iter()
                .map(|m| (r.backend.clone(), m.clone()))
        })
        .collect()
}
