//! The simulator's ground truth: seeded records per location and their sorted indexes. Map:
//!
//! - `records`: the record structs, `Records` (maps and indexes kept in step), time and id formats
//! - `index`: sorted `(ms, id)` indexes and the page walk over one
//! - `lag`: the search index's lag behind writes (what the searches see meanwhile)
//! - `render`: GHL's JSON shapes of the records
//! - `seed`: deterministic generation of a location
//!
//! It knows nothing of HTTP: the routes (`api`) and the admin API read and write it.

mod index;
mod lag;
mod records;
mod render;
mod seed;

pub use index::{ID_MAX, Index, Key, MsRange, Page, page};
pub use records::{
    Contact, Conversation, DND_CHANNELS, DndChannel, LocationMeta, Opportunity, Records,
    SEED_EPOCH_MS, Task, gen_id, iso, parse_time,
};
pub use render::put;
pub use seed::generate;
