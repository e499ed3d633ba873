/* SPDX-License-Identifier: MIT */
/*
 * timerq: a bounded binary min-heap of one-shot timers, driven by its owner.
 *
 * Data. A timer lives in a slot (callback, argument, generation, position in
 * the heap); free slots form a LIFO list. The heap holds (due, seq, slot)
 * nodes ordered by due time and then by seq, a counter that grows with every
 * add, so timers due at the same moment run in the order they were added. A
 * timer's id is generation << 24 | slot: the slot gives its heap position in
 * O(1), so cancel is O(log n), and the generation (40 bits, bumped whenever a
 * slot is freed, never 0) makes an id stale once its timer has run or been
 * cancelled, even after the slot is reused. Capacity is at most 2^24 so slot
 * numbers fit; the arrays start small and double up to the capacity, so a
 * large capacity costs nothing until it is used.
 *
 * Invariants (under the lock): slots[heap[i].slot].heap_idx == i for every
 * i < n; a slot is in use exactly when its callback is non-NULL; every node
 * is no earlier than its parent.
 *
 * Exactly once. A timer leaves the heap under the lock, and only the thread
 * that took it out calls its callback, after unlocking. Whoever comes second
 * (a late cancel, a run) finds the slot freed or its generation changed and
 * gets MB_ENOTFOUND or nothing.
 *
 * Run. mb_timerq_run reads the clock and the next seq once, under the lock,
 * and runs only timers due by then and added before then. add reads the
 * clock under the same lock, so a timer added later is never due earlier
 * than one it must wait behind; run stops at the first root it may not run.
 * Timers that callbacks add are therefore left for the next run, and a
 * callback that re-adds itself with no delay cannot keep run from returning.
 *
 * Threads: add, cancel, timeout_ms, next_due and size from any thread; run
 * from one driver thread at a time; destroy when no other thread uses the
 * queue. One pthread mutex guards everything; it is never held while a
 * callback or the wake function runs. Metrics are relaxed atomics.
 */
#include "mudbus/timerq.h"

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "alloc.h"
#include "metrics_int.h"

#define SLOT_BITS     24
#define SLOT_MASK     ((UINT64_C(1) << SLOT_BITS) - 1)
#define GEN_MASK      ((UINT64_C(1) << (64 - SLOT_BITS)) - 1)
#define MAX_CAPACITY  ((size_t)1 << SLOT_BITS)
#define DEF_CAPACITY  65536
#define INITIAL_SLOTS 64
#define NO_SLOT       UINT32_MAX

typedef struct slot {
    mb_timer_fn fn; /* NULL while free */
    void *arg;
    uint64_t gen;       /* of the current or next timer in this slot; never 0 */
    uint32_t heap_idx;  /* while in use */
    uint32_t next_free; /* while free */
} slot;

typedef struct hnode {
    uint64_t due; /* monotonic ns */
    uint64_t seq;
    uint32_t slot;
} hnode;

struct mb_timerq {
    pthread_mutex_t lock;
    mb_clock clock;
    void (*wake)(void *wake_ctx);
    void *wake_ctx;
    size_t capacity;
    hnode *heap; /* n used, alloc allocated */
    slot *slots; /* nslots initialised, alloc allocated */
    size_t n;
    size_t nslots;
    size_t alloc;
    uint32_t free_head;
    uint64_t next_seq;
    bool closing; /* set by destroy: adds from its callbacks are refused */
    /* Point into the caller's registry, or at the local storage below. */
    mb_gauge *pending;
    mb_counter *fired;
    mb_counter *full;
    mb_gauge own_pending;
    mb_counter own_fired;
    mb_counter own_full;
};

/* ---- heap ---- */

static bool earlier(const hnode *a, const hnode *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void place(mb_timerq *q, size_t i, hnode node)
{
    q->heap[i] = node;
    q->slots[node.slot].heap_idx = (uint32_t)i;
}

/* Move the node at i towards the root; returns where it ends. */
static size_t sift_up(mb_timerq *q, size_t i)
{
    hnode node = q->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!earlier(&node, &q->heap[parent]))
            break;
        place(q, i, q->heap[parent]);
        i = parent;
    }
    place(q, i, node);
    return i;
}

static void sift_down(mb_timerq *q, size_t i)
{
    hnode node = q->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= q->n)
            break;
        if (child + 1 < q->n && earlier(&q->heap[child + 1], &q->heap[child]))
            child++;
        if (!earlier(&q->heap[child], &node))
            break;
        place(q, i, q->heap[child]);
        i = child;
    }
    place(q, i, node);
}

/* Take the node at heap position i out, free its slot and hand back its
 * callback and argument. Caller holds the lock. */
static void remove_at(mb_timerq *q, size_t i, mb_timer_fn *fn, void **arg)
{
    uint32_t s = q->heap[i].slot;
    q->n--;
    if (i < q->n) {
        place(q, i, q->heap[q->n]);
        if (sift_up(q, i) == i)
            sift_down(q, i);
    }
    slot *sl = &q->slots[s];
    *fn = sl->fn;
    *arg = sl->arg;
    sl->fn = NULL;
    sl->arg = NULL;
    sl->gen = (sl->gen + 1) & GEN_MASK;
    if (sl->gen == 0)
        sl->gen = 1;
    sl->next_free = q->free_head;
    q->free_head = s;
    mb_gauge_set(q->pending, (int64_t)q->n);
}

/* Room for one more slot and heap node. Caller holds the lock and has
 * checked the capacity. */
static bool grow(mb_timerq *q)
{
    size_t alloc = q->alloc * 2;
    if (alloc > q->capacity)
        alloc = q->capacity;
    hnode *h = mb__realloc(q->heap, alloc * sizeof *h);
    if (h == NULL)
        return false;
    q->heap = h;
    slot *s = mb__realloc(q->slots, alloc * sizeof *s);
    if (s == NULL)
        return false; /* the larger heap array is harmless */
    q->slots = s;
    q->alloc = alloc;
    return true;
}

/* ---- lifecycle ---- */

mb_status mb_timerq_create(const mb_timerq_opts *opts, mb_timerq **out, mb_err *err)
{
    if (out == NULL)
        return mb_err_set(err, MB_EINVAL, "timer queue: NULL out");
    mb_timerq_opts o = {0};
    if (opts != NULL)
        o = *opts;
    if (o.capacity == 0)
        o.capacity = DEF_CAPACITY;
    if (o.capacity > MAX_CAPACITY)
        return mb_err_set(err, MB_EINVAL, "timer queue: capacity %zu is above %zu", o.capacity,
                          MAX_CAPACITY);

    mb_timerq *q = mb__calloc(1, sizeof *q);
    if (q == NULL)
        return mb_err_set(err, MB_ENOMEM, "timer queue: out of memory");
    q->clock = o.clock != NULL ? *o.clock : *mb_clock_system();
    q->wake = o.wake;
    q->wake_ctx = o.wake_ctx;
    q->capacity = o.capacity;
    q->alloc = o.capacity < INITIAL_SLOTS ? o.capacity : INITIAL_SLOTS;
    q->free_head = NO_SLOT;
    q->pending = &q->own_pending;
    q->fired = &q->own_fired;
    q->full = &q->own_full;
    q->heap = mb__malloc(q->alloc * sizeof *q->heap);
    q->slots = mb__malloc(q->alloc * sizeof *q->slots);
    mb_status st = MB_OK;
    if (q->heap == NULL || q->slots == NULL)
        st = mb_err_set(err, MB_ENOMEM, "timer queue: out of memory");
    if (st == MB_OK && o.metrics != NULL) {
        /* On failure the metrics registered so far are taken back below
         * (pointers still at the own_ fields are not in the registry). */
        st = mb_metrics_gauge(o.metrics, "mudbus_timerq_pending", "Timers waiting to run.",
                              o.labels, &q->pending, err);
        if (st == MB_OK)
            st = mb_metrics_counter(o.metrics, "mudbus_timerq_fired_total",
                                    "Timers that came due and ran.", o.labels, &q->fired, err);
        if (st == MB_OK)
            st = mb_metrics_counter(o.metrics, "mudbus_timerq_full_total",
                                    "Timers refused because the queue was full.", o.labels,
                                    &q->full, err);
    }
    if (st != MB_OK) {
        mb__metrics_forget(o.metrics, q->pending);
        mb__metrics_forget(o.metrics, q->fired);
        mb__metrics_forget(o.metrics, q->full);
        mb__free(q->heap);
        mb__free(q->slots);
        mb__free(q);
        return st;
    }
    pthread_mutex_init(&q->lock, NULL);
    *out = q;
    return MB_OK;
}

void mb_timerq_destroy(mb_timerq *q)
{
    if (q == NULL)
        return;
    pthread_mutex_lock(&q->lock);
    q->closing = true;
    /* Earliest first, one at a time: a callback may still cancel another
     * pending timer, which then runs exactly once from that cancel. */
    while (q->n > 0) {
        mb_timer_fn fn;
        void *arg;
        remove_at(q, 0, &fn, &arg);
        pthread_mutex_unlock(&q->lock);
        fn(arg, MB_TIMER_CANCELLED);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    pthread_mutex_destroy(&q->lock);
    mb__free(q->heap);
    mb__free(q->slots);
    mb__free(q);
}

/* ---- operations ---- */

mb_status mb_timerq_add(mb_timerq *q, uint64_t delay_ns, mb_timer_fn fn, void *arg, mb_timer_id *id)
{
    if (q == NULL || fn == NULL)
        return MB_EINVAL;
    pthread_mutex_lock(&q->lock);
    if (q->closing) {
        pthread_mutex_unlock(&q->lock);
        return MB_ECLOSED;
    }
    uint32_t s = q->free_head;
    if (s == NO_SLOT) {
        if (q->nslots == q->capacity) {
            pthread_mutex_unlock(&q->lock);
            mb_counter_add(q->full, 1);
            return MB_EAGAIN;
        }
        if (q->nslots == q->alloc && !grow(q)) {
            pthread_mutex_unlock(&q->lock);
            return MB_ENOMEM;
        }
        s = (uint32_t)q->nslots++;
        q->slots[s].gen = 1;
    } else {
        q->free_head = q->slots[s].next_free;
    }
    /* Read under the lock, so that due times follow seq order (see Run). */
    uint64_t now = mb_clock_mono_ns(&q->clock);
    /* Saturate below UINT64_MAX, which mb_timerq_next_due keeps for "empty". */
    uint64_t room = now < UINT64_MAX - 1 ? UINT64_MAX - 1 - now : 0;
    uint64_t due = delay_ns > room ? UINT64_MAX - 1 : now + delay_ns;
    slot *sl = &q->slots[s];
    sl->fn = fn;
    sl->arg = arg;
    q->heap[q->n] = (hnode){due, q->next_seq++, s};
    sl->heap_idx = (uint32_t)q->n;
    q->n++;
    bool earliest = sift_up(q, q->n - 1) == 0;
    mb_timer_id tid = (sl->gen << SLOT_BITS) | s;
    mb_gauge_set(q->pending, (int64_t)q->n);
    pthread_mutex_unlock(&q->lock);
    if (id != NULL)
        *id = tid;
    if (earliest && q->wake != NULL)
        q->wake(q->wake_ctx);
    return MB_OK;
}

mb_status mb_timerq_cancel(mb_timerq *q, mb_timer_id id)
{
    if (q == NULL)
        return MB_EINVAL;
    uint64_t s = id & SLOT_MASK;
    uint64_t gen = id >> SLOT_BITS;
    mb_timer_fn fn;
    void *arg;
    pthread_mutex_lock(&q->lock);
    if (gen == 0 || s >= q->nslots || q->slots[s].fn == NULL || q->slots[s].gen != gen) {
        pthread_mutex_unlock(&q->lock);
        return MB_ENOTFOUND;
    }
    remove_at(q, q->slots[s].heap_idx, &fn, &arg);
    pthread_mutex_unlock(&q->lock);
    fn(arg, MB_TIMER_CANCELLED);
    return MB_OK;
}

size_t mb_timerq_run(mb_timerq *q, size_t max)
{
    if (q == NULL)
        return 0;
    size_t ran = 0;
    pthread_mutex_lock(&q->lock);
    const uint64_t now = mb_clock_mono_ns(&q->clock);
    const uint64_t seq_limit = q->next_seq;
    while (max == 0 || ran < max) {
        if (q->n == 0 || q->heap[0].due > now || q->heap[0].seq >= seq_limit)
            break;
        mb_timer_fn fn;
        void *arg;
        remove_at(q, 0, &fn, &arg);
        mb_counter_add(q->fired, 1);
        pthread_mutex_unlock(&q->lock);
        fn(arg, MB_TIMER_FIRED);
        ran++;
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    return ran;
}

int mb_timerq_timeout_ms(mb_timerq *q)
{
    if (q == NULL)
        return -1;
    pthread_mutex_lock(&q->lock);
    if (q->n == 0) {
        pthread_mutex_unlock(&q->lock);
        return -1;
    }
    uint64_t due = q->heap[0].due;
    uint64_t now = mb_clock_mono_ns(&q->clock);
    pthread_mutex_unlock(&q->lock);
    if (due <= now)
        return 0;
    uint64_t left = due - now;
    uint64_t ms = left / 1000000 + (left % 1000000 != 0);
    return ms > (uint64_t)INT_MAX ? INT_MAX : (int)ms;
}

uint64_t mb_timerq_next_due(mb_timerq *q)
{
    if (q == NULL)
        return UINT64_MAX;
    pthread_mutex_lock(&q->lock);
    uint64_t due = q->n > 0 ? q->heap[0].due : UINT64_MAX;
    pthread_mutex_unlock(&q->lock);
    return due;
}

size_t mb_timerq_size(mb_timerq *q)
{
    if (q == NULL)
        return 0;
    pthread_mutex_lock(&q->lock);
    size_t n = q->n;
    pthread_mutex_unlock(&q->lock);
    return n;
}
