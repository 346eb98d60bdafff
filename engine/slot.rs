//! A concurrent list loop's work slots: `concurrency: N` bounds the items at work, not the
//! items waiting for the run history to confirm what they did, or for the disk to sync it.
//!
//! An item confirms each side effect before its next step starts (a put, a rename, a child
//! flow's call: see [`crate::run::Exec`]); the wait is the run's next journal write, a
//! commit that covers every confirmation waiting when it starts. A put to a local directory
//! likewise waits for its bytes and its name to be synced, by one sync shared with the puts
//! waiting at once. An item waiting there gives its slot to the next item, and takes a slot
//! again before it goes on. So `concurrency: 8` keeps 8 items at work while others wait, and
//! one commit (one sync) covers the puts or renames of more than 8 files. How many items a
//! loop holds in all, working or waiting, is bounded ([`held`]).
//!
//! A slot is held by the item's task (a task-local): the waits of the item's steps, and of
//! the child flows it calls, release it ([`idle`]). A concurrent record loop inside an item
//! runs its records [`apart`] from the slot (several records waiting at once must not give
//! up and take back one slot among them); only the wait that gave a slot up takes one
//! again. A loop of `concurrency: 1` holds one item in all, so its items stay strictly one
//! after the other.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A list loop with `concurrency: N` (N > 1) holds at most this many times N items at once
/// ([`held`]): N at work, the others waiting for their confirmations.
pub const HELD_PER_SLOT: usize = 8;
/// ... and at most this many waiting beyond its N at work.
pub const MAX_WAITING: usize = 256;

/// The most items a list loop of `concurrency: n` holds at once, working or waiting: 1 for
/// a loop of one item at a time (its items stay strictly one after the other), else
/// [`HELD_PER_SLOT`] × n, at most n + [`MAX_WAITING`].
pub fn held(n: usize) -> usize {
    if n <= 1 {
        1
    } else {
        (n * HELD_PER_SLOT).min(n + MAX_WAITING)
    }
}

tokio::task_local! {
    /// The slot of the loop item this task runs, if any.
    static SLOT: Option<Arc<Slot>>;
}

/// The slots of one loop.
#[derive(Debug)]
pub struct Slots {
    shared: Arc<Shared>,
}

/// What a loop's slots and its items' slots share.
#[derive(Debug)]
struct Shared {
    free: Arc<Semaphore>,
    /// Items back from a wait, waiting for a slot: they go before any new item.
    returning: AtomicUsize,
    /// Told when no item is returning any more.
    calm: Notify,
}

/// The slot of one item, held while it works.
#[derive(Debug)]
struct Slot {
    shared: Arc<Shared>,
    held: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Slot {
    fn hold(&self, permit: Option<OwnedSemaphorePermit>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = permit;
    }

    fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Slots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Slots {
        Slots {
            shared: Arc::new(Shared {
                free: Arc::new(Semaphore::new(n.max(1))),
                returning: AtomicUsize::new(0),
                calm: Notify::new(),
            }),
        }
    }

    /// Resolves with a free slot, for the next item to start in, once no item back from a
    /// wait needs one: an item under way finishes before a new one starts (a loop of large
    /// files does not pile up fetched files while its puts wait for their slots).
    pub async fn free(&self) -> Slotted {
        let shared = &self.shared;
        loop {
            let calm = shared.calm.notified();
            tokio::pin!(calm);
            // told of a calm that comes after this point, even before it is awaited
            calm.as_mut().enable();
            if shared.returning.load(Ordering::SeqCst) == 0 {
                // the semaphore is never closed: an error cannot happen, and would start the
                // item without a slot rather than lose it
                let permit = shared.free.clone().acquire_owned().await.ok();
                if shared.returning.load(Ordering::SeqCst) == 0 {
                    return Slotted(permit);
                }
                // an item came back meanwhile: the slot is its (the first waiting for one)
                drop(permit);
            }
            calm.await;
        }
    }

    /// Runs `item` in the slot `slot` (from [`Slots::free`]): the slot is released while the
    /// item waits in [`idle`], and when the item ends.
    pub async fn run<F: Future>(&self, slot: Slotted, item: F) -> F::Output {
        let slot = Arc::new(Slot {
            shared: self.shared.clone(),
            held: Mutex::new(slot.0),
        });
        SLOT.scope(Some(slot), item).await
    }
}

/// Runs `work`, one of several futures of one task that run at once (a concurrent record
/// loop's records), outside the slot of the loop item around it: their waits keep that slot.
pub async fn apart<F: Future>(work: F) -> F::Output {
    SLOT.scope(None, work).await
}

/// A slot taken for an item that has not started yet.
#[derive(Debug)]
pub struct Slotted(Option<OwnedSemaphorePermit>);

/// Waits for `wait` without holding the current loop item's slot (if the caller runs in
/// one), and takes a slot again before returning, ahead of any new item: the item's next
/// step starts in a slot.
pub async fn idle<F: Future>(wait: F) -> F::Output {
    let Some(slot) = SLOT.try_with(Clone::clone).ok().flatten() else {
        return wait.await;
    };
    let Some(permit) = slot.take() else {
        // not held (another wait of the same item gave it up): that wait takes it again
        return wait.await;
    };
    drop(permit);
    let out = wait.await;
    let permit = {
        let _back = Returning::new(&slot.shared);
        slot.shared.free.clone().acquire_owned().await.ok()
    };
    slot.hold(permit);
    out
}

/// Counts an item back from its wait among those returning, until it has a slot (or stops
/// waiting for one).
struct Returning<'a>(&'a Shared);

impl<'a> Returning<'a> {
    fn new(shared: &'a Shared) -> Returning<'a> {
        shared.returning.fetch_add(1, Ordering::SeqCst);
        Returning(shared)
    }
}

impl Drop for Returning<'_> {
    fn drop(&mut self) {
        if self.0.returning.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.calm.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four items in two slots: each works, waits in `idle` for a word, works again. The two
    /// that wait leave their slots to the other two, and no more than two ever work at once.
    #[tokio::test]
    async fn an_idle_item_leaves_its_slot_to_the_next() {
        let slots = Arc::new(Slots::new(2));
        let working = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let waiting = Arc::new(AtomicUsize::new(0));
        let word = Arc::new(Notify::new());
        let work = {
            let (working, most) = (working.clone(), most.clone());
            move || {
                let (working, most) = (working.clone(), most.clone());
                async move {
                    let now = working.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    working.fetch_sub(1, Ordering::SeqCst);
                }
            }
        };
        let mut items = Vec::new();
        for _ in 0..4 {
            let slot = slots.free().await;
            let (slots, waiting, word, work) =
                (slots.clone(), waiting.clone(), word.clone(), work.clone());
            items.push(tokio::spawn(async move {
                slots
                    .run(slot, async move {
                        work().await;
                        waiting.fetch_add(1, Ordering::SeqCst);
                        idle(word.notified()).await;
                        work().await;
                    })
                    .await
            }));
        }
        // all four reached their wait: the first two gave their slots to the last two
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while waiting.load(Ordering::SeqCst) < 4 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the two waiting items left their slots to the other two");
        for _ in 0..4 {
            word.notify_one();
        }
        for item in items {
            item.await.unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "at most two at work");
        assert_eq!(
            slots.shared.free.available_permits(),
            2,
            "every slot given back"
        );
    }

    /// One slot: A works, waits; B starts in A's slot. While B works a new item asks for a
    /// slot, then A comes back: when B ends, A goes on first, though it asked last, and the
    /// new item starts only once A is done.
    #[tokio::test]
    async fn an_item_back_from_its_wait_goes_before_a_new_one() {
        let slots = Arc::new(Slots::new(1));
        let order = Arc::new(Mutex::new(Vec::new()));
        let note = |what: &'static str| {
            let order = order.clone();
            move || order.lock().unwrap().push(what)
        };
        let (a_word, b_word) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let slot = slots.free().await;
        let a = {
            let (slots, word, back, done) = (
                slots.clone(),
                a_word.clone(),
                note("a back"),
                note("a done"),
            );
            tokio::spawn(async move {
                slots
                    .run(slot, async move {
                        idle(word.notified()).await;
                        back();
                        tokio::task::yield_now().await;
                        done();
                    })
                    .await
            })
        };
        // A waits without its slot: B starts in it
        let slot = slots.free().await;
        let b = {
            let (slots, word, done) = (slots.clone(), b_word.clone(), note("b done"));
            tokio::spawn(async move {
                slots
                    .run(slot, async move {
                        word.notified().await;
                        done();
                    })
                    .await
            })
        };
        // a new item asks for a slot while B works; then A comes back, after it
        let c = {
            let (slots, started) = (slots.clone(), note("c starts"));
            tokio::spawn(async move {
                let _slot = slots.free().await;
                started();
            })
        };
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        a_word.notify_one();
        while slots.shared.returning.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        b_word.notify_one();
        for t in [a, b, c] {
            tokio::time::timeout(std::time::Duration::from_secs(10), t)
                .await
                .expect("every item ends")
                .unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["b done", "a back", "a done", "c starts"]
        );
    }

    /// Two waits at once in one item (a record loop's records run in its task): the first
    /// to wait gives the slot up and takes it back; the second, ending first, does not take
    /// one, so the first never waits for a slot its own item holds.
    #[tokio::test]
    async fn two_waits_of_one_item_never_wait_for_each_other() {
        let slots = Slots::new(1);
        let slot = slots.free().await;
        let (first, second) = (Notify::new(), Notify::new());
        let item = slots.run(slot, async {
            tokio::join!(
                idle(first.notified()),
                async {
                    tokio::task::yield_now().await;
                    idle(second.notified()).await;
                },
                async {
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    second.notify_one();
                    for _ in 0..3 {
                        tokio::task::yield_now().await;
                    }
                    first.notify_one();
                },
            );
        });
        tokio::time::timeout(std::time::Duration::from_secs(10), item)
            .await
            .expect("the item ends");
        assert_eq!(slots.shared.free.available_permits(), 1);
    }

    #[test]
    fn a_loop_holds_a_bounded_number_of_items() {
        assert_eq!(held(1), 1);
        assert_eq!(held(8), 64);
        assert_eq!(held(256), 512);
    }

    /// Outside a loop item, `idle` just waits.
    #[tokio::test]
    async fn idle_outside_a_loop_just_waits() {
        assert_eq!(idle(async { 7 }).await, 7);
    }
}
