//! The memory ledger against a model: random sequences of its primitives (dispatches,
//! finished runs, retractions, puts, claims, takes, settles, requeues, recovery, a clock
//! that moves), each step's answer and every row the ledger then shows compared with a
//! plain list of what should be there. Delegation ids are both short (a `Text` keeps up to
//! 23 bytes inline) and long (shared), for two owners. Then `Text` itself: it hashes,
//! compares and orders as the `str` it holds, so maps keyed by it are looked up by `&str`.
//!
//! The random steps come from a small generator written here, started from the case's
//! number: a failure names its case and step, and the same case fails again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use process_registry::{
    AsyncDelegationEvent, CandidateQuery, ClaimToken, ClaimedRow, DeliveryState, Event, Finish,
    Inserted, LedgerBackend, LedgerRow, ManualClock, MemoryLedger, NewClaim, NewPending,
    NewRunning, RowQuery, RunState, SessionMatch, Settle, Status, Text, WatchOverflow,
};

/// SplitMix64: every case's steps follow from its number alone.
struct Rng(u64);

impl Rng {
    fn new(case: u64) -> Rng {
        Rng(case.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }
}

const START: f64 = 1_750_000_000.0;
const CASES: u64 = 160;
const STEPS: usize = 300;
const OWNERS: [&str; 2] = ["instance-a", "instance-b"];
/// Never interned by a step: every guard naming it fails.
const STRANGER: &str = "instance-z";

/// A small pool, so ids collide: short ones (inline), one at the 23-byte limit and one
/// just past it, long ones (shared between the ledger's map and its row).
const IDS: [&str; 8] = [
    "deleg_0000000a",
    "deleg_0000000b",
    "deleg_0000000c",
    "deleg_23_bytes_exactly!",
    "deleg_24_bytes_exactly!!",
    "deleg_a_long_id_shared_by_the_map_and_the_row_1",
    "deleg_a_long_id_shared_by_the_map_and_the_row_2",
    "délégation-ünïcode-identifier-past-23",
];

const DELEGATION: &str = "async_delegation";
/// Every row, restored ones too, or not; delegations only; anything else.
const QUERIES: [CandidateQuery<'static>; 4] = [
    query(&[], &[], false),
    query(&[], &[], true),
    query(&[DELEGATION], &[], false),
    query(&[], &[DELEGATION], true),
];

const fn query(
    kinds: &'static [&'static str],
    except_kinds: &'static [&'static str],
    restored: bool,
) -> CandidateQuery<'static> {
    let sessions = SessionMatch::Any;
    CandidateQuery {
        kinds,
        except_kinds,
        sessions,
        restored,
        after_seq: 0,
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Delivery {
    Pending,
    Claimed {
        token: u64,
        by: usize,
        lease_until: f64,
    },
    Dead,
}

/// A delegation that runs: no delivery state yet.
#[derive(Debug)]
struct Running {
    seq: u64,
    owner: usize,
    created_at: f64,
    skeleton_goal: String,
}

/// A written row, as the ledger should show it.
#[derive(Debug, Clone)]
struct Row {
    /// The event's own mark (a finished run's goal, a put's message): unique.
    tag: String,
    /// Learnt from the ledger when the write does not return it (a put).
    seq: Option<u64>,
    delegation_id: Option<String>,
    run_state: Option<RunState>,
    owner: usize,
    delivery: Delivery,
    attempts: u32,
    restored: bool,
    possible_redelivery: bool,
    reason: Option<String>,
    not_before: Option<f64>,
    created_at: f64,
    completed_at: f64,
}

impl Row {
    fn claimable(&self, now: f64) -> bool {
        match self.delivery {
            Delivery::Pending => self.not_before.is_none_or(|t| t <= now),
            Delivery::Claimed { lease_until, .. } => lease_until <= now,
            Delivery::Dead => false,
        }
    }

    fn kind(&self) -> &str {
        if self.delegation_id.is_some() {
            DELEGATION
        } else {
            "watch_overflow_tripped"
        }
    }

    fn wanted_by(&self, query: &CandidateQuery<'_>) -> bool {
        let kind = self.kind();
        (query.kinds.is_empty() || query.kinds.contains(&kind))
            && !query.except_kinds.contains(&kind)
            && (query.restored || !self.restored)
    }

    fn open(&self) -> bool {
        !matches!(self.delivery, Delivery::Dead)
    }
}

/// What the ledger should hold: the running ids and the rows in `seq` order (a finished
/// run or a put goes to the tail; a requeued row keeps its place).
#[derive(Default)]
struct Model {
    running: BTreeMap<String, Running>,
    rows: Vec<Row>,
    now: f64,
    marks: u64,
    tokens: u64,
    last_seq: u64,
    /// Every `seq` handed out so far: none is ever handed out twice.
    seqs: HashSet<u64>,
}

impl Model {
    fn mark(&mut self, prefix: &str) -> String {
        self.marks += 1;
        format!("{prefix}{}", self.marks)
    }

    /// An id the ledger holds: running, or with a row in any state.
    fn holds(&self, id: &str) -> bool {
        self.running.contains_key(id)
            || self
                .rows
                .iter()
                .any(|row| row.delegation_id.as_deref() == Some(id))
    }

    fn first(&self, query: &CandidateQuery<'_>, accepts: impl Fn(&Row) -> bool) -> Option<usize> {
        self.rows
            .iter()
            .position(|row| row.wanted_by(query) && row.claimable(self.now) && accepts(row))
    }

    fn claim(&mut self, index: usize, by: usize, lease: f64) {
        self.tokens += 1;
        let now = self.now;
        let row = &mut self.rows[index];
        if matches!(row.delivery, Delivery::Claimed { .. }) {
            row.possible_redelivery = true;
        }
        row.delivery = Delivery::Claimed {
            token: self.tokens,
            by,
            lease_until: now + lease,
        };
        row.not_before = None;
        row.attempts += 1;
    }

    fn claimed_under(&self, token: u64, by: usize) -> Option<usize> {
        self.rows.iter().position(|row| {
            matches!(row.delivery, Delivery::Claimed { token: t, by: b, .. } if t == token && b == by)
        })
    }

    /// The claims held: `seq`, token and claimer of each claimed row.
    fn claims(&self) -> Vec<(u64, u64, usize)> {
        self.rows
            .iter()
            .filter_map(|row| match (row.seq, row.delivery) {
                (Some(seq), Delivery::Claimed { token, by, .. }) => Some((seq, token, by)),
                _ => None,
            })
            .collect()
    }

    /// A new row's `seq`: greater than every one before.
    fn wrote(&mut self, seq: u64) {
        assert!(seq > self.last_seq, "seq {seq} after {}", self.last_seq);
        self.learnt(seq);
    }

    /// The `seq` of a put, learnt after it was written (its place among the others is
    /// checked with the rows): one never handed out before.
    fn learnt(&mut self, seq: u64) {
        assert!(self.seqs.insert(seq), "seq {seq} handed out twice");
        self.last_seq = self.last_seq.max(seq);
    }
}

fn tag_of(event: &Event) -> String {
    match event {
        Event::AsyncDelegation(event) => event.goal.to_string(),
        Event::WatchOverflowTripped(event) => event.message.clone().unwrap_or_default(),
        other => panic!("an event no step wrote: {other:?}"),
    }
}

fn put_event(tag: &str) -> Event {
    Event::WatchOverflowTripped(WatchOverflow {
        message: Some(tag.to_owned()),
        ..WatchOverflow::default()
    })
}

fn delegation_event(id: Option<&str>, goal: &str, status: Option<Status>) -> Event {
    Event::from(AsyncDelegationEvent {
        delegation_id: id.map(Text::from),
        goal: goal.into(),
        status,
        ..AsyncDelegationEvent::default()
    })
}

/// A run's end: the statuses the engine writes, ones a caller wrote as `Other`, and a
/// dead owner's `unknown`.
fn run_state(rng: &mut Rng) -> RunState {
    match rng.below(7) {
        0 => RunState::Finished(Status::Completed),
        1 => RunState::Finished(Status::Error),
        2 => RunState::Finished(Status::Interrupted),
        3 => RunState::Finished(Status::Other("completed".into())),
        4 => RunState::Finished(Status::Other("weird".into())),
        5 => RunState::Finished(Status::from("timeout")),
        _ => RunState::Unknown,
    }
}

/// A kind of step.
type Step = fn(&mut Case);

/// The steps, with how often each is drawn.
const STEP_WEIGHTS: [(usize, Step); 17] = [
    (14, Case::insert_running),
    (12, Case::finish_run),
    (5, Case::retract_running),
    (8, Case::insert_pending),
    (10, Case::append_pending),
    (7, Case::take_next),
    (1, Case::catch_up),
    (1, Case::burst),
    (8, Case::claim_next),
    (3, Case::claim_seq),
    (10, Case::settle),
    (3, Case::renew),
    (3, Case::requeue),
    (5, Case::advance),
    (2, Case::adopt_orphans),
    (2, Case::expire_pending),
    (6, Case::reads),
];

/// One case: a ledger, its model, and the steps so far (for the failure message).
struct Case {
    ledger: MemoryLedger,
    clock: Arc<ManualClock>,
    model: Model,
    rng: Rng,
    trace: Vec<String>,
    number: u64,
    /// How often each outcome was reached.
    seen: BTreeMap<&'static str, usize>,
}

impl Case {
    fn new(number: u64) -> Case {
        let clock = Arc::new(ManualClock::new(START));
        Case {
            ledger: MemoryLedger::with_clock(clock.clone()),
            clock,
            model: Model {
                now: START,
                ..Model::default()
            },
            rng: Rng::new(number),
            trace: Vec::new(),
            number,
            seen: BTreeMap::new(),
        }
    }

    fn reached(&mut self, outcome: &'static str) {
        *self.seen.entry(outcome).or_default() += 1;
    }

    fn context(&self) -> String {
        let from = self.trace.len().saturating_sub(40);
        format!(
            "case {}, step {}; the last steps:\n  {}",
            self.number,
            self.trace.len(),
            self.trace[from..].join("\n  ")
        )
    }

    fn note(&mut self, step: String) {
        self.trace.push(step);
    }

    fn owner(&mut self) -> usize {
        self.rng.below(OWNERS.len())
    }

    fn run(mut self) -> BTreeMap<&'static str, usize> {
        for _ in 0..STEPS {
            self.step();
            // Not after every step: a read takes the lock, which turns the puts waiting
            // in the inbox into rows, and a take can find them there only without it.
            if !self.rng.one_in(3) {
                self.check_rows();
            }
        }
        self.check_rows();
        self.seen
    }

    /// One step, drawn by weight.
    fn step(&mut self) {
        let total: usize = STEP_WEIGHTS.iter().map(|(weight, _)| weight).sum();
        let mut draw = self.rng.below(total);
        for (weight, step) in STEP_WEIGHTS {
            if draw < weight {
                return step(self);
            }
            draw -= weight;
        }
    }

    fn insert_running(&mut self) {
        let id = *self.rng.pick(&IDS);
        let owner = self.owner();
        let goal = self.model.mark("running-");
        // The skeleton's id is usually the row's (the engine's always is): then the ledger
        // shares its text; otherwise it makes its own.
        let skeleton_id = match self.rng.below(4) {
            0 => None,
            1 => Some("deleg_ffffffff"),
            _ => Some(id),
        };
        self.note(format!("insert_running({id:?}, {})", OWNERS[owner]));
        let inserted = self
            .ledger
            .insert_running(NewRunning {
                delegation_id: id,
                session_key: "",
                owner: OWNERS[owner],
                skeleton: Arc::new(delegation_event(skeleton_id, &goal, None)),
            })
            .unwrap();
        if self.model.holds(id) {
            assert_eq!(inserted, Inserted::IdTaken, "{}", self.context());
            self.reached("dispatch: id taken");
            return;
        }
        let Inserted::Row(seq) = inserted else {
            panic!("{id} refused as taken; {}", self.context());
        };
        self.model.wrote(seq);
        self.reached(if id.len() > 23 {
            "dispatch: long id"
        } else {
            "dispatch: short id"
        });
        let created_at = self.model.now;
        self.model.running.insert(
            id.to_owned(),
            Running {
                seq,
                owner,
                created_at,
                skeleton_goal: goal,
            },
        );
    }

    fn finish_run(&mut self) {
        let id = *self.rng.pick(&IDS);
        let expect = match self.rng.below(4) {
            0 => None,
            1 => Some(STRANGER),
            _ => Some(OWNERS[self.owner()]),
        };
        let state = run_state(&mut self.rng);
        let reason = (state == RunState::Unknown).then_some("its process exited");
        let tag = self.model.mark("finished-");
        let status = match &state {
            RunState::Finished(status) => Some(status.clone()),
            _ => Some(Status::Unknown),
        };
        self.note(format!("finish_run({id:?}, {expect:?}, {state:?})"));
        let moved = self
            .ledger
            .finish_run(Finish {
                delegation_id: id,
                expect_owner: expect,
                run_state: state.clone(),
                event: Arc::new(delegation_event(Some(id), &tag, status)),
                reason,
            })
            .unwrap();
        let ours = self
            .model
            .running
            .get(id)
            .is_some_and(|running| expect.is_none_or(|owner| owner == OWNERS[running.owner]));
        if !ours {
            assert_eq!(moved, None, "{}", self.context());
            self.reached("finish: refused");
            return;
        }
        self.reached("finish: recorded");
        let seq = moved.unwrap_or_else(|| panic!("{id} did not finish; {}", self.context()));
        self.model.wrote(seq);
        let running = self.model.running.remove(id).unwrap();
        let completed_at = self.model.now;
        self.model.rows.push(Row {
            tag,
            seq: Some(seq),
            delegation_id: Some(id.to_owned()),
            run_state: Some(state),
            owner: running.owner,
            delivery: Delivery::Pending,
            attempts: 0,
            restored: false,
            possible_redelivery: false,
            reason: reason.map(str::to_owned),
            not_before: None,
            created_at: running.created_at,
            completed_at,
        });
    }

    fn retract_running(&mut self) {
        let id = *self.rng.pick(&IDS);
        let owner = if self.rng.one_in(5) {
            STRANGER
        } else {
            OWNERS[self.owner()]
        };
        self.note(format!("retract_running({id:?}, {owner})"));
        let retracted = self.ledger.retract_running(id, owner).unwrap();
        let ours = self
            .model
            .running
            .get(id)
            .is_some_and(|running| OWNERS[running.owner] == owner);
        assert_eq!(retracted, ours, "{}", self.context());
        if ours {
            self.model.running.remove(id);
        }
        self.reached(if ours {
            "retract: retracted"
        } else {
            "retract: refused"
        });
    }

    fn pending_row(&self, tag: String, seq: Option<u64>, owner: usize) -> Row {
        Row {
            tag,
            seq,
            delegation_id: None,
            run_state: None,
            owner,
            delivery: Delivery::Pending,
            attempts: 0,
            restored: false,
            possible_redelivery: false,
            reason: None,
            not_before: None,
            created_at: self.model.now,
            completed_at: self.model.now,
        }
    }

    fn insert_pending(&mut self) {
        let owner = self.owner();
        let tag = self.model.mark("inserted-");
        self.note(format!("insert_pending({tag}, {})", OWNERS[owner]));
        let seq = self
            .ledger
            .insert_pending(NewPending {
                owner: OWNERS[owner],
                event: put_event(&tag),
            })
            .unwrap();
        self.model.wrote(seq);
        let row = self.pending_row(tag, Some(seq), owner);
        self.model.rows.push(row);
    }

    /// The queue's put: the first owner's puts pass the lock-free inbox, the other's the
    /// lock; either way in put order, its `seq` given when it becomes a row.
    fn append_pending(&mut self) {
        let owner = self.owner();
        let tag = self.model.mark("appended-");
        self.note(format!("append_pending({tag}, {})", OWNERS[owner]));
        self.ledger
            .append_pending(NewPending {
                owner: OWNERS[owner],
                event: put_event(&tag),
            })
            .unwrap();
        let row = self.pending_row(tag, None, owner);
        self.model.rows.push(row);
    }

    /// A consumer that catches up: takes until nothing is left for it, so the puts that
    /// follow find no open row (and are taken straight from the inbox).
    fn catch_up(&mut self) {
        while self.model.first(&QUERIES[1], |_| true).is_some() {
            self.take(QUERIES[1]);
        }
        self.take(QUERIES[1]);
    }

    /// Puts and takes with nothing else between, on a caught-up ledger: the first
    /// owner's puts wait in the inbox, where the takes find them.
    fn burst(&mut self) {
        self.catch_up();
        for _ in 0..8 {
            if self.rng.one_in(2) {
                self.append_pending();
            } else {
                self.take_next();
            }
        }
    }

    fn take_next(&mut self) {
        let query = *self.rng.pick(&QUERIES);
        self.take(query);
    }

    fn take(&mut self, query: CandidateQuery<'static>) {
        self.note(format!("take_next({query:?})"));
        let taken = self.ledger.take_next(&query).unwrap();
        let Some(index) = self.model.first(&query, |_| true) else {
            assert!(taken.is_none(), "took {taken:?}; {}", self.context());
            self.reached("take: none");
            return;
        };
        let taken =
            taken.unwrap_or_else(|| panic!("nothing taken, expected {index}; {}", self.context()));
        let row = self.model.rows.remove(index);
        self.reached(match (row.seq, row.delivery) {
            (None, _) => "take: a put not seen as a row",
            (_, Delivery::Claimed { .. }) => "take: a claim whose lease ran out",
            _ if row.restored => "take: a restored row",
            _ => "take: a pending row",
        });
        assert_eq!(tag_of(&taken.event), row.tag, "{}", self.context());
        let redelivery =
            row.possible_redelivery || matches!(row.delivery, Delivery::Claimed { .. });
        assert_eq!(taken.possible_redelivery, redelivery, "{}", self.context());
        match row.seq {
            Some(seq) => assert_eq!(taken.seq, seq, "{}", self.context()),
            None => self.model.learnt(taken.seq),
        }
    }

    fn claim_next(&mut self) {
        let query = *self.rng.pick(&QUERIES);
        let by = self.owner();
        let lease = *self.rng.pick(&[1.0, 2.0, 5.0]);
        let token = self.model.tokens + 1;
        let claim = NewClaim {
            token: ClaimToken {
                id: token,
                owner: OWNERS[by],
            },
            lease_seconds: lease,
        };
        // With a consumer's own filter half the time: only odd marks.
        let filtered = self.rng.one_in(2);
        let odd = |tag: &str| tag.bytes().last().is_some_and(|b| b % 2 == 1);
        self.note(format!(
            "claim_next({query:?}, token {token} of {}, filtered {filtered})",
            OWNERS[by]
        ));
        let claimed = if filtered {
            self.ledger
                .claim_next_accepted(&query, claim, &|event| odd(&tag_of(event)))
                .unwrap()
        } else {
            self.ledger.claim_next(&query, claim).unwrap()
        };
        let index = self.model.first(&query, |row| !filtered || odd(&row.tag));
        self.claimed(index, claimed, by, lease);
    }

    /// A claim of a row by its `seq`: any row the model knows (its query and restored flag
    /// are not the claim's business), or one that is gone.
    fn claim_seq(&mut self) {
        let known: Vec<u64> = self.model.rows.iter().filter_map(|row| row.seq).collect();
        let seq = if known.is_empty() || self.rng.one_in(6) {
            // Past any row's, even one the model has not learnt the seq of yet.
            self.model.last_seq + 1000 + self.rng.below(3) as u64
        } else {
            *self.rng.pick(&known)
        };
        let by = self.owner();
        let lease = *self.rng.pick(&[1.0, 2.0, 5.0]);
        let token = self.model.tokens + 1;
        self.note(format!("claim({seq}, token {token} of {})", OWNERS[by]));
        let claimed = self
            .ledger
            .claim(
                seq,
                NewClaim {
                    token: ClaimToken {
                        id: token,
                        owner: OWNERS[by],
                    },
                    lease_seconds: lease,
                },
            )
            .unwrap();
        let now = self.model.now;
        let index = self
            .model
            .rows
            .iter()
            .position(|row| row.seq == Some(seq) && row.claimable(now));
        self.claimed(index, claimed, by, lease);
    }

    fn claimed(
        &mut self,
        index: Option<usize>,
        claimed: Option<ClaimedRow>,
        by: usize,
        lease: f64,
    ) {
        let Some(index) = index else {
            assert!(claimed.is_none(), "claimed {claimed:?}; {}", self.context());
            self.reached("claim: none");
            return;
        };
        let claimed = claimed.unwrap_or_else(|| panic!("no claim; {}", self.context()));
        if self.model.rows[index].seq.is_none() {
            self.model.rows[index].seq = Some(claimed.seq);
            self.model.learnt(claimed.seq);
        }
        self.reached(
            if matches!(self.model.rows[index].delivery, Delivery::Claimed { .. }) {
                "claim: a claim whose lease ran out"
            } else {
                "claim: a pending row"
            },
        );
        self.model.claim(index, by, lease);
        let row = &self.model.rows[index];
        let seen = (
            tag_of(&claimed.event),
            claimed.delegation_id.as_ref().map(Text::to_string),
            claimed.attempts,
            claimed.possible_redelivery,
            claimed.restored,
        );
        let expected = (
            row.tag.clone(),
            row.delegation_id.clone(),
            row.attempts,
            row.possible_redelivery,
            row.restored,
        );
        assert_eq!(seen, expected, "{}", self.context());
        if let Some(seq) = row.seq {
            assert_eq!(claimed.seq, seq, "{}", self.context());
        }
    }

    /// Ends a claim the model knows (or a made-up one: a lost or foreign token).
    fn settle(&mut self) {
        let claims = self.model.claims();
        let (seq, token, owner) = if claims.is_empty() || self.rng.one_in(6) {
            let seq = self.model.last_seq.saturating_sub(self.rng.below(4) as u64);
            let token = self.rng.below(self.model.tokens as usize + 2) as u64;
            (seq, token, self.owner())
        } else {
            *self.rng.pick(&claims)
        };
        let name = if self.rng.one_in(8) {
            STRANGER
        } else {
            OWNERS[owner]
        };
        let backoff = *self.rng.pick(&[0.0, 1.0, 3.0]);
        let settle = match self.rng.below(5) {
            0 | 1 => Settle::Ack,
            2 => Settle::Defer,
            3 => Settle::Release {
                backoff_seconds: backoff,
                reason: "the adapter failed",
            },
            _ => Settle::Dead {
                reason: "unroutable",
            },
        };
        self.note(format!(
            "settle({seq}, token {token} of {name}, {settle:?})"
        ));
        let settled = self
            .ledger
            .settle(
                seq,
                ClaimToken {
                    id: token,
                    owner: name,
                },
                settle,
            )
            .unwrap();
        let held = self
            .model
            .claimed_under(token, owner)
            .filter(|&index| name != STRANGER && self.model.rows[index].seq == Some(seq));
        assert_eq!(settled, held.is_some(), "{}", self.context());
        let Some(index) = held else {
            self.reached("settle: refused");
            return;
        };
        self.reached(match settle {
            Settle::Ack => "settle: ack",
            Settle::Defer => "settle: defer",
            Settle::Release { .. } => "settle: release",
            Settle::Dead { .. } => "settle: dead",
        });
        let now = self.model.now;
        let row = &mut self.model.rows[index];
        row.delivery = Delivery::Pending;
        match settle {
            Settle::Ack => {
                self.model.rows.remove(index);
            }
            Settle::Defer => row.attempts = row.attempts.saturating_sub(1),
            Settle::Release {
                backoff_seconds,
                reason,
            } => {
                row.not_before = Some(now + backoff_seconds);
                row.reason = Some(reason.to_owned());
            }
            Settle::Dead { reason } => {
                row.delivery = Delivery::Dead;
                row.reason = Some(reason.to_owned());
            }
        }
    }

    fn renew(&mut self) {
        let claims = self.model.claims();
        let Some(&(seq, token, by)) = (!claims.is_empty()).then(|| self.rng.pick(&claims)) else {
            return;
        };
        // Sometimes in another owner's name: refused.
        let name = if self.rng.one_in(4) {
            OWNERS[1 - by]
        } else {
            OWNERS[by]
        };
        let lease = *self.rng.pick(&[1.0, 4.0]);
        self.note(format!("renew({seq}, token {token} of {name}, {lease})"));
        let renewed = self
            .ledger
            .renew(
                seq,
                ClaimToken {
                    id: token,
                    owner: name,
                },
                lease,
            )
            .unwrap();
        assert_eq!(renewed, name == OWNERS[by], "{}", self.context());
        self.reached(if renewed {
            "renew: renewed"
        } else {
            "renew: refused"
        });
        if renewed {
            let index = self.model.claimed_under(token, by).unwrap();
            let now = self.model.now;
            if let Delivery::Claimed { lease_until, .. } = &mut self.model.rows[index].delivery {
                *lease_until = now + lease;
            }
        }
    }

    fn requeue(&mut self) {
        let known: Vec<u64> = self.model.rows.iter().filter_map(|row| row.seq).collect();
        let Some(&seq) = (!known.is_empty()).then(|| self.rng.pick(&known)) else {
            return;
        };
        self.note(format!("requeue({seq})"));
        let requeued = self.ledger.requeue(seq).unwrap();
        let index = self
            .model
            .rows
            .iter()
            .position(|row| row.seq == Some(seq))
            .unwrap();
        let dead = self.model.rows[index].delivery == Delivery::Dead;
        assert_eq!(requeued, dead, "{}", self.context());
        self.reached(if requeued {
            "requeue: requeued"
        } else {
            "requeue: refused"
        });
        if requeued {
            let row = &mut self.model.rows[index];
            row.delivery = Delivery::Pending;
            row.attempts = 0;
            row.not_before = None;
        }
    }

    fn advance(&mut self) {
        let by = self.rng.below(4) as f64;
        self.note(format!("advance({by})"));
        self.model.now += by;
        self.clock.set(self.model.now);
    }

    /// An owner judged dead: its claims go back as possible redeliveries, its pending
    /// rows are marked restored.
    fn adopt_orphans(&mut self) {
        let owner = self.owner();
        self.note(format!("adopt_orphans({})", OWNERS[owner]));
        let changed = self.ledger.adopt_orphans(OWNERS[owner]).unwrap();
        let mut expected = 0;
        for row in self.model.rows.iter_mut().filter(|row| row.open()) {
            let mut touched = false;
            if matches!(row.delivery, Delivery::Claimed { by, .. } if by == owner) {
                row.delivery = Delivery::Pending;
                row.possible_redelivery = true;
                touched = true;
            }
            if row.owner == owner && !row.restored {
                row.restored = true;
                touched = true;
            }
            expected += u64::from(touched);
        }
        self.counted(changed, expected, ["adopt: changed rows", "adopt: nothing"]);
    }

    /// A step that reports how many rows it changed: as many as the model did.
    fn counted(&mut self, changed: u64, expected: u64, outcomes: [&'static str; 2]) {
        assert_eq!(changed, expected, "{}", self.context());
        self.reached(outcomes[usize::from(changed == 0)]);
    }

    fn expire_pending(&mut self) {
        let before = self.model.now - self.rng.below(6) as f64;
        self.note(format!("expire_pending({before})"));
        let expired = self
            .ledger
            .expire_pending(before, "past the restore horizon")
            .unwrap();
        let mut expected = 0;
        for row in &mut self.model.rows {
            if row.delivery == Delivery::Pending && row.restored && row.completed_at < before {
                row.delivery = Delivery::Dead;
                row.reason = Some("past the restore horizon".to_owned());
                expected += 1;
            }
        }
        self.counted(
            expired,
            expected,
            ["expire: expired rows", "expire: nothing"],
        );
    }

    /// The reads that change nothing: counts, candidates, the next deadline, owners.
    fn reads(&mut self) {
        let query = *self.rng.pick(&QUERIES);
        let limit = 1 + self.rng.below(4);
        self.note(format!("reads({query:?}, {limit})"));
        let now = self.model.now;
        let claimable: Vec<&Row> = self
            .model
            .rows
            .iter()
            .filter(|row| row.wanted_by(&query) && row.claimable(now))
            .collect();
        assert_eq!(
            self.ledger.count_candidates(&query).unwrap(),
            claimable.len(),
            "{}",
            self.context()
        );
        let candidates: Vec<String> = self
            .ledger
            .candidates(&query, limit)
            .unwrap()
            .iter()
            .map(|candidate| tag_of(&candidate.event))
            .collect();
        let expected: Vec<String> = claimable
            .iter()
            .take(limit)
            .map(|row| row.tag.clone())
            .collect();
        assert_eq!(candidates, expected, "{}", self.context());
        let due = self
            .model
            .rows
            .iter()
            .filter(|row| row.wanted_by(&query))
            .filter_map(|row| match row.delivery {
                Delivery::Pending => row.not_before,
                Delivery::Claimed { lease_until, .. } => Some(lease_until),
                Delivery::Dead => None,
            })
            .filter(|t| *t > now)
            .reduce(f64::min);
        assert_eq!(
            self.ledger.next_due(&query).unwrap(),
            due,
            "{}",
            self.context()
        );
        let mut owners: BTreeSet<&str> = self
            .model
            .running
            .values()
            .map(|running| OWNERS[running.owner])
            .collect();
        for row in &self.model.rows {
            if row.delivery == Delivery::Pending && !row.restored {
                owners.insert(OWNERS[row.owner]);
            }
            if let Delivery::Claimed { by, .. } = row.delivery {
                owners.insert(OWNERS[by]);
            }
        }
        let seen: BTreeSet<String> = self.ledger.owners().unwrap().into_iter().collect();
        let owners: BTreeSet<String> = owners.into_iter().map(str::to_owned).collect();
        assert_eq!(seen, owners, "{}", self.context());
    }

    /// After every step: the rows the ledger shows are the model's, field for field; no id
    /// has two rows; the undelivered count and the running rows agree.
    fn check_rows(&mut self) {
        let rows = self.ledger.rows(&RowQuery::default()).unwrap();
        let seqs: Vec<u64> = rows.iter().map(|row| row.seq).collect();
        assert!(
            seqs.windows(2).all(|pair| pair[0] < pair[1]),
            "rows out of order or sharing a seq: {seqs:?}; {}",
            self.context()
        );
        let mut ids = HashSet::new();
        for row in &rows {
            if let Some(id) = &row.delegation_id {
                assert!(
                    ids.insert(id.clone()),
                    "two rows for {id}: {rows:#?}; {}",
                    self.context()
                );
                assert_eq!(&row.key, id, "{}", self.context());
            } else {
                assert_eq!(row.key, format!("event-{}", row.seq), "{}", self.context());
            }
        }
        let (running, written): (Vec<&LedgerRow>, Vec<&LedgerRow>) = rows
            .iter()
            .partition(|row| row.run_state == Some(RunState::Running));

        let running: BTreeMap<String, (u64, String, f64, String, Option<DeliveryState>)> = running
            .iter()
            .map(|row| {
                (
                    row.delegation_id.clone().unwrap_or_default(),
                    (
                        row.seq,
                        row.owner.clone(),
                        row.created_at,
                        tag_of(&row.event),
                        row.delivery,
                    ),
                )
            })
            .collect();
        let expected: BTreeMap<String, (u64, String, f64, String, Option<DeliveryState>)> = self
            .model
            .running
            .iter()
            .map(|(id, running)| {
                (
                    id.clone(),
                    (
                        running.seq,
                        OWNERS[running.owner].to_owned(),
                        running.created_at,
                        running.skeleton_goal.clone(),
                        None,
                    ),
                )
            })
            .collect();
        assert_eq!(running, expected, "running rows; {}", self.context());
        let only_running = self
            .ledger
            .rows(&RowQuery {
                running_only: true,
                ..RowQuery::default()
            })
            .unwrap();
        assert_eq!(
            only_running.len(),
            self.model.running.len(),
            "{}",
            self.context()
        );

        assert_eq!(
            written.len(),
            self.model.rows.len(),
            "written rows: {written:#?}; {}",
            self.context()
        );
        // A put becomes a row at the ledger's next locked step: its seq is learnt here
        // (its place among the others is checked below).
        for (seen, index) in written.iter().zip(0..self.model.rows.len()) {
            if self.model.rows[index].seq.is_none() {
                self.model.rows[index].seq = Some(seen.seq);
                self.model.learnt(seen.seq);
            }
        }
        for (seen, row) in written.iter().zip(&self.model.rows) {
            let (delivery, claimed_by, lease_until) = match row.delivery {
                Delivery::Pending => (DeliveryState::Pending, None, None),
                Delivery::Claimed {
                    by, lease_until, ..
                } => (
                    DeliveryState::Claimed,
                    Some(OWNERS[by].to_owned()),
                    Some(lease_until),
                ),
                Delivery::Dead => (DeliveryState::Dead, None, None),
            };
            let expected = Shown {
                tag: row.tag.clone(),
                seq: row.seq.unwrap(),
                delegation_id: row.delegation_id.clone(),
                kind: row.kind().to_owned(),
                run_state: row.run_state.clone(),
                delivery: Some(delivery),
                attempts: row.attempts,
                reason: row.reason.clone(),
                owner: OWNERS[row.owner].to_owned(),
                claimed_by,
                restored: row.restored,
                possible_redelivery: row.possible_redelivery,
                created_at: row.created_at,
                completed_at: Some(row.completed_at),
                not_before: row.not_before,
                lease_until,
            };
            assert_eq!(Shown::of(seen), expected, "{}", self.context());
        }

        let undelivered = self.model.rows.iter().filter(|row| row.open()).count() as u64;
        assert_eq!(
            self.ledger.count_undelivered().unwrap(),
            undelivered,
            "{}",
            self.context()
        );
        let id = *self.rng.pick(&IDS);
        let of_id = self
            .ledger
            .rows(&RowQuery {
                delegation_id: Some(id.to_owned()),
                ..RowQuery::default()
            })
            .unwrap();
        assert_eq!(
            of_id.len(),
            usize::from(self.model.holds(id)),
            "rows of {id}: {of_id:#?}; {}",
            self.context()
        );
    }
}

/// A row as inspection shows it, without its event (its mark instead).
#[derive(Debug, PartialEq)]
struct Shown {
    tag: String,
    seq: u64,
    delegation_id: Option<String>,
    kind: String,
    run_state: Option<RunState>,
    delivery: Option<DeliveryState>,
    attempts: u32,
    reason: Option<String>,
    owner: String,
    claimed_by: Option<String>,
    restored: bool,
    possible_redelivery: bool,
    created_at: f64,
    completed_at: Option<f64>,
    not_before: Option<f64>,
    lease_until: Option<f64>,
}

impl Shown {
    fn of(row: &LedgerRow) -> Shown {
        assert_eq!(row.session_key, "");
        assert_eq!(
            row.delivered_at, None,
            "a memory ledger retains no delivered row"
        );
        Shown {
            tag: tag_of(&row.event),
            seq: row.seq,
            delegation_id: row.delegation_id.clone(),
            kind: row.kind.clone(),
            run_state: row.run_state.clone(),
            delivery: row.delivery,
            attempts: row.attempts,
            reason: row.reason.clone(),
            owner: row.owner.clone(),
            claimed_by: row.claimed_by.clone(),
            restored: row.restored,
            possible_redelivery: row.possible_redelivery,
            created_at: row.created_at,
            completed_at: row.completed_at,
            not_before: row.not_before,
            lease_until: row.lease_until,
        }
    }
}

#[test]
fn random_steps_agree_with_the_model() {
    let lengths: Vec<usize> = IDS.iter().map(|id| id.len()).collect();
    assert_eq!(lengths[3..5], [23, 24], "the ids at the inline limit");
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for case in 0..CASES {
        for (outcome, times) in Case::new(case).run() {
            *seen.entry(outcome).or_default() += times;
        }
    }
    // Every outcome of every step was reached, often: a model that never gets there
    // checks nothing.
    let outcomes = [
        "dispatch: short id",
        "dispatch: long id",
        "dispatch: id taken",
        "finish: recorded",
        "finish: refused",
        "retract: retracted",
        "retract: refused",
        "take: none",
        "take: a put not seen as a row",
        "take: a pending row",
        "take: a restored row",
        "take: a claim whose lease ran out",
        "claim: none",
        "claim: a pending row",
        "claim: a claim whose lease ran out",
        "settle: ack",
        "settle: defer",
        "settle: release",
        "settle: dead",
        "settle: refused",
        "renew: renewed",
        "renew: refused",
        "requeue: requeued",
        "requeue: refused",
        "adopt: changed rows",
        "adopt: nothing",
        "expire: expired rows",
        "expire: nothing",
    ];
    println!("{seen:#?}");
    for outcome in outcomes {
        let times = seen.get(outcome).copied().unwrap_or(0);
        assert!(times >= 20, "{outcome}: reached {times} times in {seen:#?}");
    }
}

/// Strings of every length that matters to `Text`: empty, short (inline), at and past the
/// 23-byte limit (shared), runs of newlines and spaces (which `smol_str` keeps apart at
/// any length), multi-byte text, and pairs that share a long prefix.
fn random_text(rng: &mut Rng) -> String {
    const PIECES: [&str; 9] = ["a", "z", "0", "_", " ", "\n", "é", "ü", "🦀"];
    match rng.below(8) {
        0 => String::new(),
        1 => "\n".repeat(rng.below(4)) + &" ".repeat(rng.below(40)),
        2 => format!("deleg_{:08x}", rng.next() as u32),
        3 => "x".repeat(20 + rng.below(8)),
        _ => {
            let len = rng.below(48);
            let mut text = String::new();
            while text.len() < len {
                text.push_str(PIECES[rng.below(PIECES.len())]);
            }
            text
        }
    }
}

/// Every way a `Text` is built: the same text, whatever the path.
fn texts_of(text: &str) -> [Text; 6] {
    let built = Text::from(text);
    [
        Text::from(text.to_owned()),
        Text::from(Box::<str>::from(text)),
        Text::from(Arc::<str>::from(text)),
        Text::from(std::borrow::Cow::Borrowed(text)),
        serde_json::from_str(&serde_json::to_string(text).unwrap()).unwrap(),
        built.clone(),
    ]
}

#[test]
fn text_hashes_compares_and_orders_as_its_str() {
    let hasher = RandomState::new();
    let mut rng = Rng::new(7);
    let strings: Vec<String> = (0..2000).map(|_| random_text(&mut rng)).collect();
    let inline = strings.iter().filter(|text| text.len() <= 23).count();
    assert!(
        inline > 500 && strings.len() - inline > 500,
        "{inline} of {} inline",
        strings.len()
    );
    let mut hashed: HashMap<Text, usize> = HashMap::new();
    let mut ordered: BTreeMap<Text, usize> = BTreeMap::new();
    let mut by_str: HashMap<&str, usize> = HashMap::new();
    for (n, text) in strings.iter().enumerate() {
        for built in texts_of(text) {
            assert_eq!(built, *text.as_str(), "{text:?}");
            assert_eq!(*text.as_str(), built, "{text:?}");
            assert_eq!(built.as_str(), text, "{text:?}");
            assert_eq!(built.len(), text.len(), "{text:?}");
            assert_eq!(
                hasher.hash_one(&built),
                hasher.hash_one(text.as_str()),
                "{text:?} hashes unlike its str"
            );
            assert_eq!(built, Text::from(text.as_str()), "{text:?}");
        }
        // The latest index of each text, in all three maps.
        hashed.insert(Text::from(text.as_str()), n);
        ordered.insert(Text::from(text.clone()), n);
        by_str.insert(text, n);
    }
    assert_eq!(hashed.len(), by_str.len(), "distinct texts");
    assert_eq!(ordered.len(), by_str.len(), "distinct texts");
    for (text, n) in &by_str {
        assert_eq!(
            hashed.get(*text),
            Some(n),
            "HashMap<Text> looked up by {text:?}"
        );
        assert_eq!(
            ordered.get(*text),
            Some(n),
            "BTreeMap<Text> looked up by {text:?}"
        );
    }
    // A BTreeMap keyed by `Text` iterates in `str` order.
    let mut sorted: Vec<&str> = by_str.keys().copied().collect();
    sorted.sort_unstable();
    let keys: Vec<&str> = ordered.keys().map(Text::as_str).collect();
    assert_eq!(keys, sorted);
    for _ in 0..20_000 {
        let (a, b) = (rng.pick(&strings), rng.pick(&strings));
        // Pairs that share a prefix as long as the inline limit, or longer.
        let (a, b) = if rng.one_in(3) {
            let prefix = "p".repeat(18 + rng.below(10));
            (format!("{prefix}{a}"), format!("{prefix}{b}"))
        } else {
            (a.clone(), b.clone())
        };
        let (ta, tb) = (Text::from(a.as_str()), Text::from(b.clone()));
        assert_eq!(ta.cmp(&tb), a.cmp(&b), "{a:?} against {b:?}");
        assert_eq!(
            ta.partial_cmp(&tb),
            a.partial_cmp(&b),
            "{a:?} against {b:?}"
        );
        // Equal to a text exactly when the strings are, whichever side each is on.
        let equal = a == b;
        assert_eq!(ta == tb, equal, "{a:?} against {b:?}");
        assert_eq!(ta == *b.as_str(), equal, "{a:?} against {b:?}");
        assert_eq!(ta == b.as_str(), equal, "{a:?} against {b:?}");
        assert_eq!(ta == b, equal, "{a:?} against {b:?}");
        assert_eq!(*a.as_str() == tb, equal, "{a:?} against {b:?}");
        assert_eq!(a.as_str() == tb, equal, "{a:?} against {b:?}");
        assert_eq!(a == tb, equal, "{a:?} against {b:?}");
        assert_eq!(
            hasher.hash_one(&ta) == hasher.hash_one(&tb),
            hasher.hash_one(a.as_str()) == hasher.hash_one(b.as_str()),
            "{a:?} against {b:?}"
        );
    }
}
