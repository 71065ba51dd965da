//! Admission of WebSocket sessions (PROTOCOL.md §18.5): what a client may
//! open before the server spends anything on it.
//!
//! - Before the upgrade: at most `max_upgrades_per_ip` open WebSocket
//!   sessions per client address (HTTP 429 beyond), and a fair share of the
//!   session slots per owner ([`may_take_slot`], HTTP 429).
//! - At the opening, before any protocol work: at most
//!   `max_half_open_per_owner` keygen-class sessions (keygen and refresh,
//!   the two that run the OT setup) in progress per owner and
//!   `max_half_open_per_ip` per client address (4111); a keygen when the
//!   owner's keys (not revoked, pending included) plus its keygens in
//!   progress reach `max_keys_per_owner` (4108); a presign when its unused
//!   presignatures plus its presigns in progress reach
//!   `max_presignatures_per_owner` (4109).
//! - Where the key or presignature is stored, the quota again, atomically
//!   ([`crate::vault::Quota`]): the opening's check is only a fast path.
//!
//! The counters of sessions in progress are this process's (a connection
//! lives in one process): with several replicas, each enforces the
//! per-owner and per-address limits on its own connections. The quotas are
//! counted in the database and hold across replicas.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use mpc_transport_ws::{Frames, Operation, Rejection, ServerSession, Traffic, TransportError};

use crate::server::AppState;
use crate::session::{codes, storage_failed};

/// Default of `MPC_MAX_KEYS_PER_OWNER`.
pub const DEFAULT_MAX_KEYS_PER_OWNER: u64 = 100;
/// Default of `MPC_MAX_PRESIGNATURES_PER_OWNER`.
pub const DEFAULT_MAX_PRESIGNATURES_PER_OWNER: u64 = 1000;
/// Default of `MPC_MAX_HALF_OPEN_PER_OWNER`.
pub const DEFAULT_MAX_HALF_OPEN_PER_OWNER: usize = 2;
/// Default of `MPC_MAX_HALF_OPEN_PER_IP`.
pub const DEFAULT_MAX_HALF_OPEN_PER_IP: usize = 8;
/// Default of `MPC_MAX_UPGRADES_PER_IP`.
pub const DEFAULT_MAX_UPGRADES_PER_IP: usize = 64;

/// The admission flags, each also read from its `MPC_*` variable
/// (flattened into [`crate::config::Cli`]).
#[derive(Debug, Clone, clap::Args)]
pub struct AdmissionArgs {
    /// Most keys one owner may have that are not revoked (pending keys
    /// included); a keygen beyond is refused with 4108.
    #[arg(long, hide_env_values = true, env = "MPC_MAX_KEYS_PER_OWNER", default_value_t = DEFAULT_MAX_KEYS_PER_OWNER)]
    pub max_keys_per_owner: u64,
    /// Most unused stored presignatures one owner may have (every scheme
    /// and key); a presign beyond is refused with 4109.
    #[arg(long, hide_env_values = true, env = "MPC_MAX_PRESIGNATURES_PER_OWNER", default_value_t = DEFAULT_MAX_PRESIGNATURES_PER_OWNER)]
    pub max_presignatures_per_owner: u64,
    /// Most keygen and refresh sessions one owner may have in progress
    /// (opened, not finished) in this process; beyond: 4111.
    #[arg(long, hide_env_values = true, env = "MPC_MAX_HALF_OPEN_PER_OWNER", default_value_t = DEFAULT_MAX_HALF_OPEN_PER_OWNER)]
    pub max_half_open_per_owner: usize,
    /// Most keygen and refresh sessions in progress in this process from
    /// one client address; beyond: 4111.
    #[arg(long, hide_env_values = true, env = "MPC_MAX_HALF_OPEN_PER_IP", default_value_t = DEFAULT_MAX_HALF_OPEN_PER_IP)]
    pub max_half_open_per_ip: usize,
    /// Most open WebSocket sessions (any operation) from one client
    /// address in this process; the upgrade beyond is refused with 429.
    #[arg(long, hide_env_values = true, env = "MPC_MAX_UPGRADES_PER_IP", default_value_t = DEFAULT_MAX_UPGRADES_PER_IP)]
    pub max_upgrades_per_ip: usize,
}

/// The admission limits (every one at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Keys per owner that are not revoked (pending included).
    pub max_keys_per_owner: u64,
    /// Unused stored presignatures per owner.
    pub max_presignatures_per_owner: u64,
    /// Keygen and refresh sessions in progress per owner (per process).
    pub max_half_open_per_owner: usize,
    /// Keygen and refresh sessions in progress per client address (per
    /// process).
    pub max_half_open_per_ip: usize,
    /// Open WebSocket sessions per client address (per process).
    pub max_upgrades_per_ip: usize,
}

impl Default for AdmissionLimits {
    fn default() -> Self {
        Self {
            max_keys_per_owner: DEFAULT_MAX_KEYS_PER_OWNER,
            max_presignatures_per_owner: DEFAULT_MAX_PRESIGNATURES_PER_OWNER,
            max_half_open_per_owner: DEFAULT_MAX_HALF_OPEN_PER_OWNER,
            max_half_open_per_ip: DEFAULT_MAX_HALF_OPEN_PER_IP,
            max_upgrades_per_ip: DEFAULT_MAX_UPGRADES_PER_IP,
        }
    }
}

impl From<&AdmissionArgs> for AdmissionLimits {
    fn from(args: &AdmissionArgs) -> Self {
        Self {
            max_keys_per_owner: args.max_keys_per_owner.max(1),
            max_presignatures_per_owner: args.max_presignatures_per_owner.max(1),
            max_half_open_per_owner: args.max_half_open_per_owner.max(1),
            max_half_open_per_ip: args.max_half_open_per_ip.max(1),
            max_upgrades_per_ip: args.max_upgrades_per_ip.max(1),
        }
    }
}

/// Sessions in progress of one owner, by what they count against.
#[derive(Debug, Default, Clone, Copy)]
struct InProgress {
    keygens: usize,
    refreshes: usize,
    presigns: usize,
}

impl InProgress {
    fn half_open(self) -> usize {
        self.keygens + self.refreshes
    }

    fn get_mut(&mut self, kind: Tracked) -> &mut usize {
        match kind {
            Tracked::Keygen => &mut self.keygens,
            Tracked::Refresh => &mut self.refreshes,
            Tracked::Presign => &mut self.presigns,
        }
    }

    fn is_empty(self) -> bool {
        self.keygens == 0 && self.refreshes == 0 && self.presigns == 0
    }
}

/// Which sessions are counted while in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracked {
    Keygen,
    Refresh,
    Presign,
}

impl Tracked {
    fn of(operation: &Operation) -> Option<Self> {
        match operation {
            Operation::Keygen => Some(Self::Keygen),
            Operation::Refresh { .. } => Some(Self::Refresh),
            Operation::Presign { .. } | Operation::PresignSchnorr { .. } => Some(Self::Presign),
            _ => None,
        }
    }

    fn half_open(self) -> bool {
        matches!(self, Self::Keygen | Self::Refresh)
    }
}

/// This process's counts; an entry exists only while its count is not
/// zero, so the maps hold no more entries than there are open sessions.
#[derive(Debug, Default)]
struct Counters {
    owners: HashMap<String, InProgress>,
    half_open_by_ip: HashMap<IpAddr, usize>,
    upgrades_by_ip: HashMap<IpAddr, usize>,
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

type Shared = Arc<Mutex<Counters>>;

fn lock(counters: &Shared) -> std::sync::MutexGuard<'_, Counters> {
    counters.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The admission state of one server process.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: AdmissionLimits,
    counters: Shared,
}

/// An open WebSocket session of a client address; counted until dropped.
#[derive(Debug)]
pub(crate) struct UpgradeTicket {
    counters: Shared,
    ip: IpAddr,
}

impl Drop for UpgradeTicket {
    fn drop(&mut self) {
        decrement(&mut lock(&self.counters).upgrades_by_ip, &self.ip);
    }
}

/// A counted session in progress; counted until dropped.
#[derive(Debug)]
struct SessionTicket {
    counters: Shared,
    owner: String,
    /// `None` when the client's address is unknown (an embedding
    /// application without connect info): no per-address count.
    ip: Option<IpAddr>,
    kind: Tracked,
}

impl Drop for SessionTicket {
    fn drop(&mut self) {
        let mut counters = lock(&self.counters);
        if let Some(owner) = counters.owners.get_mut(&self.owner) {
            let count = owner.get_mut(self.kind);
            *count = count.saturating_sub(1);
            if owner.is_empty() {
                counters.owners.remove(&self.owner);
            }
        }
        if let (true, Some(ip)) = (self.kind.half_open(), &self.ip) {
            decrement(&mut counters.half_open_by_ip, ip);
        }
    }
}

impl Admission {
    pub(crate) fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            counters: Shared::default(),
        }
    }

    /// The limits in force.
    pub(crate) fn limits(&self) -> &AdmissionLimits {
        &self.limits
    }

    /// Counts an open WebSocket session of `ip`, or `None` if it has
    /// `max_upgrades_per_ip` already.
    pub(crate) fn open_upgrade(
        &self,
        metrics: &crate::rest::metrics::Metrics,
        ip: IpAddr,
    ) -> Option<UpgradeTicket> {
        let mut counters = lock(&self.counters);
        let count = counters.upgrades_by_ip.entry(ip).or_insert(0);
        if *count >= self.limits.max_upgrades_per_ip {
            drop(counters);
            metrics.admission_refused("upgrades_per_ip");
            return None;
        }
        *count += 1;
        Some(UpgradeTicket {
            counters: Arc::clone(&self.counters),
            ip,
        })
    }

    /// Counts a session of `kind` in progress, within the half-open
    /// limits. Returns its ticket and how many sessions of `kind` the owner
    /// had in progress before it.
    fn enter(
        &self,
        owner: &str,
        ip: Option<IpAddr>,
        kind: Tracked,
    ) -> Result<(SessionTicket, usize), &'static str> {
        let mut counters = lock(&self.counters);
        if kind.half_open() {
            let by_owner = counters
                .owners
                .get(owner)
                .map_or(0, |owner| owner.half_open());
            if by_owner >= self.limits.max_half_open_per_owner {
                return Err("keygens_in_progress_owner");
            }
            if let Some(ip) = ip {
                let by_ip = counters.half_open_by_ip.get(&ip).copied().unwrap_or(0);
                if by_ip >= self.limits.max_half_open_per_ip {
                    return Err("keygens_in_progress_ip");
                }
                *counters.half_open_by_ip.entry(ip).or_insert(0) += 1;
            }
        }
        let count = counters
            .owners
            .entry(owner.to_owned())
            .or_default()
            .get_mut(kind);
        let before = *count;
        *count += 1;
        let ticket = SessionTicket {
            counters: Arc::clone(&self.counters),
            owner: owner.to_owned(),
            ip,
            kind,
        };
        Ok((ticket, before))
    }
}

/// Runs the session the opening asks for ([`crate::session::handle`]) if
/// the admission rules let it in; otherwise closes it at once with the
/// rule's code, before any protocol work.
///
/// # Errors
///
/// The session's [`TransportError`]; the socket is closed by then.
pub(crate) async fn handle<F: Frames>(
    state: Arc<AppState>,
    owner: String,
    ip: Option<IpAddr>,
    session: ServerSession<F>,
) -> Result<Traffic, TransportError> {
    let ticket = match admit(&state, &owner, ip, &session.opening().operation).await {
        Ok(ticket) => ticket,
        Err(rejection) => return Err(session.reject(rejection).await),
    };
    TICKET
        .scope(
            RefCell::new(ticket),
            crate::session::handle(state, owner, session),
        )
        .await
}

tokio::task_local! {
    /// The running session's count of work in progress, until [`stored`].
    static TICKET: RefCell<Option<SessionTicket>>;
}

/// Ends the running session's count of work in progress once the key or
/// presignature it made is stored: from then on the store counts it. Kept
/// until the closing handshake ended, it would count twice, and an owner's
/// next opening right after its client saw the close would be refused a
/// quota it still has room in. Nothing outside an admitted session.
pub(crate) fn stored() {
    let ticket = TICKET
        .try_with(|ticket| ticket.borrow_mut().take())
        .ok()
        .flatten();
    drop(ticket);
}

/// The opening's admission: `None` for sessions that are not counted.
async fn admit(
    state: &AppState,
    owner: &str,
    ip: Option<IpAddr>,
    operation: &Operation,
) -> Result<Option<SessionTicket>, Rejection> {
    let Some(kind) = Tracked::of(operation) else {
        return Ok(None);
    };
    let admission = &state.admission;
    let (ticket, earlier) = admission.enter(owner, ip, kind).map_err(|reason| {
        state.metrics.admission_refused(reason);
        tracing::info!(owner, ip = ?ip, reason, "session refused: too many keygens in progress");
        codes::KEYGENS_IN_PROGRESS
    })?;
    // Sessions in progress count as if they had stored already: of N
    // concurrent openings with room for k, only k run the protocol (in
    // this process; the store's own check covers the others).
    let earlier = u64::try_from(earlier).unwrap_or(u64::MAX);
    let (stored, limit, refusal, reason) = match kind {
        Tracked::Keygen => (
            state.vault.live_keys_of(owner).await,
            admission.limits.max_keys_per_owner,
            codes::KEY_QUOTA_REACHED,
            "key_quota",
        ),
        Tracked::Presign => (
            state.vault.unused_presignatures_of(owner).await,
            admission.limits.max_presignatures_per_owner,
            codes::PRESIGNATURE_QUOTA_REACHED,
            "presignature_quota",
        ),
        Tracked::Refresh => return Ok(Some(ticket)),
    };
    let stored = stored.map_err(|e| storage_failed("count an owner's quota", &e))?;
    if stored.saturating_add(earlier) >= limit {
        state.metrics.admission_refused(reason);
        tracing::info!(
            owner,
            reason,
            stored,
            in_progress = earlier,
            limit,
            "session refused: quota reached"
        );
        return Err(refusal);
    }
    Ok(Some(ticket))
}

/// The session-slot limits ([`may_take_slot`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotLimits {
    /// `MPC_MAX_SESSIONS`.
    pub(crate) max_sessions: usize,
    /// `MPC_MAX_SESSIONS_PER_OWNER`.
    pub(crate) max_per_owner: usize,
}

/// The slots in use when an owner asks for one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlotUse {
    /// Sessions open in total.
    pub(crate) open: usize,
    /// Owners holding at least one slot.
    pub(crate) owners: usize,
    /// Slots the asking owner holds.
    pub(crate) held: usize,
}

/// Why a session slot is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotRefused {
    /// Every slot is taken (503).
    ServerFull,
    /// The owner holds `MPC_MAX_SESSIONS_PER_OWNER` (429).
    OwnerFull,
    /// The server is nearly full and the owner holds its fair share (429).
    FairShare,
}

/// An owner's fair share of `max_sessions` slots while `owners` owners hold
/// some: what each would get if one more arrived.
pub(crate) fn fair_share(max_sessions: usize, owners: usize) -> usize {
    (max_sessions / owners.saturating_add(1)).max(1)
}

/// Slots kept for owners below their fair share (newcomers first):
/// one sixteenth of the total, at least one.
pub(crate) fn reserved_slots(max_sessions: usize) -> usize {
    (max_sessions / 16).max(1)
}

/// The slot rule (PROTOCOL.md §18.5): a slot is free, the owner is below
/// its cap, and, when no more than the reserved slots are free, the owner
/// holds less than its fair share. So an owner alone gets all but the
/// reserve, a newcomer always finds a slot in the reserve, and an owner
/// above its share does not get freed slots back while others are below
/// theirs.
pub(crate) fn may_take_slot(limits: SlotLimits, used: SlotUse) -> Result<(), SlotRefused> {
    if used.open >= limits.max_sessions {
        return Err(SlotRefused::ServerFull);
    }
    if used.held >= limits.max_per_owner {
        return Err(SlotRefused::OwnerFull);
    }
    let free = limits.max_sessions - used.open;
    if used.held >= fair_share(limits.max_sessions, used.owners)
        && free <= reserved_slots(limits.max_sessions)
    {
        return Err(SlotRefused::FairShare);
    }
    Ok(())
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
